"""Round trips and malformed files for tools/ultragen_tools/safetensors_io.py."""

import json
import os
import struct
import sys
import tempfile
import unittest

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from ultragen_tools import safetensors_io  # noqa: E402


class SafetensorsIoTests(unittest.TestCase):
    def setUp(self):
        self.directory = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.directory.name, "t.safetensors")

    def tearDown(self):
        self.directory.cleanup()

    def test_round_trip_every_dtype_bit_exact(self):
        generator = torch.Generator().manual_seed(7)
        tensors = {
            "f32": torch.randn(3, 5, generator=generator),
            "bf16": torch.randn(4, 2, 3, generator=generator).to(torch.bfloat16),
            "f16": torch.randn(7, generator=generator).to(torch.float16),
            "f64": torch.randn(2, 2, generator=generator, dtype=torch.float64),
            "i64": torch.randint(-9, 9, (5,), generator=generator),
            "u8": torch.randint(0, 255, (3, 3), generator=generator).to(torch.uint8),
            "empty": torch.empty(0, 4),
            "scalar": torch.tensor(1.5),
        }
        safetensors_io.save(tensors, self.path, {"k": "v"})
        loaded, metadata = safetensors_io.load(self.path)
        self.assertEqual(metadata, {"k": "v"})
        self.assertEqual(list(loaded), list(tensors))
        for name, tensor in tensors.items():
            self.assertEqual(loaded[name].dtype, tensor.dtype, name)
            self.assertEqual(loaded[name].shape, tensor.shape, name)
            self.assertTrue(torch.equal(loaded[name], tensor), name)

    def test_layout_is_the_documented_one(self):
        safetensors_io.save({"a": torch.arange(3, dtype=torch.float32)}, self.path)
        with open(self.path, "rb") as stream:
            raw = stream.read()
        (length,) = struct.unpack("<Q", raw[:8])
        self.assertEqual(length % 8, 0)
        header = json.loads(raw[8:8 + length])
        self.assertEqual(header["a"], {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]})
        self.assertEqual(raw[8 + length:], struct.pack("<3f", 0, 1, 2))

    def test_no_temporary_file_left_behind(self):
        safetensors_io.save({"a": torch.ones(2)}, self.path)
        self.assertEqual(os.listdir(self.directory.name), ["t.safetensors"])

    def _write_raw(self, header: dict, data: bytes = b"", length=None):
        text = json.dumps(header).encode()
        with open(self.path, "wb") as stream:
            stream.write(struct.pack("<Q", len(text) if length is None else length) + text + data)

    def test_malformed_files_raise_with_reason(self):
        cases = [
            ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4, None, "needs 8"),
            ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 4, None, "outside"),
            ({"a": {"dtype": "Q4", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, None, "unsupported dtype"),
            ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, None, "shape"),
            ({"a": {"shape": [1]}}, b"", None, "entry must have"),
            ({}, b"", 1 << 40, "header length"),
        ]
        for header, data, length, expected in cases:
            with self.subTest(expected=expected):
                self._write_raw(header, data, length)
                with self.assertRaises(safetensors_io.SafetensorsError) as caught:
                    safetensors_io.load(self.path)
                self.assertIn(expected, str(caught.exception))
                self.assertIn(self.path, str(caught.exception))


if __name__ == "__main__":
    unittest.main()
