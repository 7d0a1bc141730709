"""tools/convert_weights.py on small synthetic checkpoints with the real Wan/UltraGen names.

The checkpoints come from tests/make_synthetic_checkpoint.py, which lays torch modules out as Wan2.1 and the released
UltraGen code do (independently of the converter's own name list). Converted tensors are compared bit for bit with
the source (F32 output) or with torch's bf16 rounding, itself checked against a bit-level round-to-nearest-even
written here. Bad inputs must exit with status 2, name the offending tensor and leave no file behind.
"""

import argparse
import contextlib
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import torch

TOOLS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, TOOLS)
import convert_weights  # noqa: E402
from tests import make_synthetic_checkpoint as synthetic  # noqa: E402
from ultragen_tools import dit_params, safetensors_io  # noqa: E402

SCRIPT = os.path.join(TOOLS, "convert_weights.py")
SMALL_ARGS = ["--heads", "2", "--text-len", "8"]


def run(*argv):
    """Runs the converter in-process; returns (exit status, stdout, stderr)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            status = convert_weights.main([str(a) for a in argv])
        except SystemExit as exit_:  # argparse
            status = exit_.code
    return status, stdout.getvalue(), stderr.getvalue()


def bf16_bits_round_to_nearest_even(values: torch.Tensor) -> np.ndarray:
    """Independent reference: the top 16 bits of each f32, plus one when the dropped 16 bits exceed half, or equal
    half and the kept part is odd (finite inputs that do not overflow)."""
    bits = values.to(torch.float32).numpy().view(np.uint32).astype(np.uint64)
    upper, lower = bits >> 16, bits & 0xFFFF
    round_up = (lower > 0x8000) | ((lower == 0x8000) & ((upper & 1) == 1))
    return (upper + round_up).astype(np.uint16)


def bits(tensor: torch.Tensor) -> np.ndarray:
    view = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}[tensor.dtype]
    return tensor.contiguous().view(view).numpy()


class ConvertWeightsTests(unittest.TestCase):
    def setUp(self):
        self.directory = tempfile.TemporaryDirectory()
        self.seed = int.from_bytes(os.urandom(4), "little")
        print(f"\n{self.id()}: seed {self.seed}", file=sys.stderr)

    def tearDown(self):
        self.directory.cleanup()

    def path(self, name: str) -> str:
        return os.path.join(self.directory.name, name)

    def assert_converted_equals(self, output: str, reference: str, dtype: torch.dtype):
        converted, _ = safetensors_io.load(output)
        expected, _ = safetensors_io.load(reference)
        self.assertEqual(sorted(converted), sorted(expected), "the output holds exactly the source's parameters")
        wrong = []
        for name, source in expected.items():
            got = converted[name]
            want = source if dtype == torch.float32 else source.to(dtype)
            if got.dtype != dtype or got.shape != want.shape:
                wrong.append(f"{name}: {got.dtype} {list(got.shape)}, expected {dtype} {list(want.shape)}")
            elif not np.array_equal(bits(got), bits(want)):
                index = int(np.flatnonzero(bits(got).ravel() != bits(want).ravel())[0])
                wrong.append(f"{name}[{index}]: {got.reshape(-1)[index].item()!r}, "
                             f"expected {want.reshape(-1)[index].item()!r}")
        self.assertEqual(wrong, [], f"{len(wrong)} of {len(expected)} tensors differ")
        return converted

    def assert_fails(self, argv, *expected_fragments, output=None):
        status, stdout, stderr = run(*argv)
        self.assertEqual(status, 2, f"stdout:\n{stdout}\nstderr:\n{stderr}")
        for fragment in expected_fragments:
            self.assertIn(fragment, stderr)
        if output is not None:
            self.assertFalse(os.path.exists(output), "nothing is written for a bad input")
        self.assertEqual([f for f in os.listdir(self.directory.name) if f.endswith(".tmp")], [], "no temporary file")
        return stderr

    # ------------------------------------------------------------------------------------------------ the catalogue

    def test_parameter_counts_of_wan_1_3b_match_the_spec(self):
        # Spec §2.1/§2.3: 825 Wan tensors, 1,418,996,800 parameters; UltraGen adds 11,541,888 per decomposed block.
        config = dit_params.DitConfig(dim=1536, ffn_dim=8960, freq_dim=256, text_dim=4096, text_len=512, heads=12,
                                      layers=30, full_blocks=frozenset({0, 1, 2, 27, 28, 29}))
        self.assertEqual(config.problems(), [])
        specs = dit_params.parameter_list(config)
        base = [s for s in specs if not s.is_ultragen]
        self.assertEqual(len(base), 825)
        self.assertEqual(sum(s.numel for s in base), 1_418_996_800)
        self.assertEqual(sum(s.numel for s in specs if s.is_ultragen), 24 * 11_541_888)
        self.assertEqual(len(specs), len(set(s.name for s in specs)))

    def test_dotnet_number_format_of_eps(self):
        # What .NET 10's double.ToString("R", InvariantCulture) prints for these (checked with dotnet).
        cases = {1e-6: "1E-06", 1e-5: "1E-05", 2.5e-7: "2.5E-07", 1.2345e-5: "1.2345E-05", 1e-4: "0.0001",
                 0.00012345: "0.00012345", 1.5: "1.5", 123.0: "123", 1e16: "10000000000000000", 1e17: "1E+17",
                 12345678901234567890.0: "1.2345678901234567E+19", 5e-324: "5E-324", 0.1 + 0.2: "0.30000000000000004"}
        for value, text in cases.items():
            self.assertEqual(dit_params.dotnet_round_trip(value), text, value)

    # ------------------------------------------------------------------------------------------------ conversions

    def test_ultragen_pickle_with_wrapper_and_prefix_converts_bit_exact_to_f32(self):
        checkpoint, reference, output = self.path("ug.ckpt"), self.path("ref.safetensors"), self.path("out.safetensors")
        synthetic.write_checkpoint("ultragen", checkpoint, reference, seed=self.seed, rope_freqs=True)
        status, stdout, stderr = run(checkpoint, "-o", output, "--dtype", "f32", *SMALL_ARGS)
        self.assertEqual(status, 0, stderr)
        self.assertIn("prefix 'module.' stripped", stdout)
        self.assertIn("checkpoint['state_dict']", stdout)
        self.assertIn("dropped 'module.freqs'", stdout)
        self.assertIn("UltraGen attention in blocks 1-2", stdout)
        self.assert_converted_equals(output, reference, torch.float32)

        with safetensors_io.SafetensorsFile(output) as file:
            names = file.keys()
            metadata = file.metadata
        self.assertEqual(metadata, {
            "format": "pt", "ultragen.heads": "2", "ultragen.text_len": "8", "ultragen.eps": "1E-06",
            "ultragen.window_base": "4", "ultragen.lora_rank": "4", "ultragen.global_k_uses_wq": "true",
            "ultragen.window_mode": "ResizeToDivisible", "ultragen.full_blocks": "0,3"})
        # C#'s catalogue order, not the released code's registration order (norm_q/norm_k after the UltraGen modules,
        # norm3 after cross_attn).
        self.assertEqual(names[:3], ["patch_embedding.weight", "patch_embedding.bias", "text_embedding.0.weight"])
        self.assertEqual(names[-3:], ["head.modulation", "head.head.weight", "head.head.bias"])
        self.assertEqual(names[names.index("blocks.0.ffn.2.bias") + 1], "blocks.1.modulation")
        def position(suffix):
            return names.index("blocks.1." + suffix)
        self.assertLess(position("self_attn.norm_k.weight"), position("self_attn.q_lora_1.lora_A.weight"))
        self.assertLess(position("self_attn.upsample_conv_hierachcal.bias"), position("norm3.weight"))
        self.assertLess(position("norm3.bias"), position("cross_attn.q.weight"))

    def test_default_bf16_output_is_torch_rounding_which_is_round_to_nearest_even(self):
        checkpoint, reference, output = self.path("ug.pt"), self.path("ref.safetensors"), self.path("out.safetensors")
        synthetic.write_checkpoint("ultragen", checkpoint, reference, seed=self.seed, wrap="none", prefix="dit.",
                                   legacy_pickle=True)
        status, stdout, stderr = run(checkpoint, "-o", output, *SMALL_ARGS)
        self.assertEqual(status, 0, stderr)
        self.assertIn("-> BF16", stdout)
        converted = self.assert_converted_equals(output, reference, torch.bfloat16)
        expected, _ = safetensors_io.load(reference)
        for name, source in expected.items():
            np.testing.assert_array_equal(bits(converted[name]).view(np.uint16), bf16_bits_round_to_nearest_even(source),
                                          err_msg=name)

    def test_bf16_ties_round_to_even(self):
        state = synthetic.build_state_dict("wan", seed=self.seed)
        crafted = {0x3F808000: 0x3F80, 0x3F818000: 0x3F82, 0x3F808001: 0x3F81, 0x3F807FFF: 0x3F80,
                   0xBF818000: 0xBF82, 0x3F80FFFF: 0x3F81, 0x00008000: 0x0000, 0x00018000: 0x0002,
                   0x447A0000: 0x447A, 0xC2F6E979: 0xC2F7}
        name = "blocks.0.self_attn.q.bias"
        raw = state[name].numpy().view(np.uint32).copy()
        raw[:len(crafted)] = list(crafted)
        state[name] = torch.from_numpy(raw.view(np.float32))
        checkpoint, output = self.path("wan.safetensors"), self.path("out.safetensors")
        safetensors_io.save(state, checkpoint)
        status, _, stderr = run(checkpoint, "-o", output, "--lora-rank", "4", *SMALL_ARGS)
        self.assertEqual(status, 0, stderr)
        converted, _ = safetensors_io.load(output)
        got = bits(converted[name]).view(np.uint16)[:len(crafted)]
        self.assertEqual([hex(b) for b in got], [hex(b) for b in crafted.values()])

    def test_wan_bf16_source_sharded_and_diffusers_named_all_convert_to_the_same_file(self):
        reference = self.path("ref.safetensors")
        single = self.path("wan.safetensors")
        synthetic.write_checkpoint("wan", single, reference, seed=self.seed, dtype="bf16")
        os.mkdir(self.path("sharded"))
        index = os.path.join(self.path("sharded"), "diffusion_pytorch_model.safetensors.index.json")
        synthetic.write_checkpoint("wan", index, seed=self.seed, dtype="bf16", shards=3)
        diffusers = self.path("diffusers.safetensors")
        synthetic.write_checkpoint("wan", diffusers, seed=self.seed, dtype="bf16", naming="diffusers", rope_freqs=True)

        outputs = []
        for source in (single, index, diffusers):
            output = self.path(os.path.basename(source) + ".out.safetensors")
            status, stdout, stderr = run(source, "-o", output, "--dtype", "f32", "--lora-rank", "4", *SMALL_ARGS)
            self.assertEqual(status, 0, f"{source}: {stderr}")
            self.assertIn("no decomposed block (plain Wan)", stdout)
            self.assertIn("the source is 16-bit", stdout)
            self.assert_converted_equals(output, reference, torch.float32)  # bf16 -> f32 widening is exact
            with open(output, "rb") as stream:
                outputs.append(stream.read())
            if source is index:
                self.assertIn("sharded set: 3 shards", stdout)
            if source is diffusers:
                self.assertIn("diffusers naming detected", stdout)
                self.assertIn("dropped 'freqs'", stdout)
        self.assertEqual(outputs[1], outputs[0], "sharded input gives the same bytes")
        self.assertEqual(outputs[2], outputs[0], "diffusers naming gives the same bytes")
        self.assertIn('"ultragen.full_blocks":"0,1,2,3"', outputs[0][:4096].decode("utf-8", "replace"))

    def test_a_converted_file_converts_again_to_itself_without_flags(self):
        checkpoint, first, second = self.path("ug.ckpt"), self.path("a.safetensors"), self.path("b.safetensors")
        synthetic.write_checkpoint("ultragen", checkpoint, seed=self.seed)
        self.assertEqual(run(checkpoint, "-o", first, *SMALL_ARGS)[0], 0)
        status, stdout, stderr = run(first, "-o", second)  # heads and text length come from the metadata
        self.assertEqual(status, 0, stderr)
        self.assertIn("heads 2: from metadata ultragen.heads", stdout)
        with open(first, "rb") as a, open(second, "rb") as b:
            self.assertEqual(a.read(), b.read())

    def test_a_pickle_the_weights_only_loader_refuses_loads_with_a_warning_and_f16_output(self):
        state = synthetic.build_state_dict("ultragen", seed=self.seed, dtype=torch.bfloat16)
        reference = self.path("ref.safetensors")
        safetensors_io.save({n: t.to(torch.float32) for n, t in state.items()}, reference)
        checkpoint, output = self.path("ug.ckpt"), self.path("out.safetensors")
        torch.save({"state_dict": state, "args": argparse.Namespace(lr=1e-4)}, checkpoint)
        status, stdout, stderr = run(checkpoint, "-o", output, "--dtype", "f16", *SMALL_ARGS)
        self.assertEqual(status, 0, stderr)
        self.assertIn("weights-only loader refused", stderr)
        self.assertIn("argparse.Namespace", stderr)
        self.assertIn("weights_only=False", stdout)
        self.assert_converted_equals(output, reference, torch.float16)

    def test_dry_run_and_help(self):
        checkpoint = self.path("ug.ckpt")
        synthetic.write_checkpoint("ultragen", checkpoint, seed=self.seed)
        status, stdout, _ = run(checkpoint, "--dry-run", *SMALL_ARGS)
        self.assertEqual(status, 0)
        self.assertIn("dry run: nothing written", stdout)
        self.assertIn("tensors: 211 (123 Wan + 88 UltraGen)", stdout)
        self.assertEqual(sorted(os.listdir(self.directory.name)), ["ug.ckpt"])
        # The real command line, as a user runs it.
        result = subprocess.run([sys.executable, SCRIPT, "--help"], capture_output=True, text=True, timeout=120)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("examples:", result.stdout)
        self.assertIn("--dtype", result.stdout)

    # ------------------------------------------------------------------------------------------------ bad inputs

    def test_missing_tensor(self):
        state = synthetic.build_state_dict("wan", seed=self.seed)
        del state["blocks.2.cross_attn.k.bias"]
        checkpoint, output = self.path("wan.safetensors"), self.path("out.safetensors")
        safetensors_io.save(state, checkpoint)
        self.assert_fails([checkpoint, "-o", output, "--lora-rank", "4", *SMALL_ARGS],
                          "missing (1)", "blocks.2.cross_attn.k.bias [32]", "nothing written", output=output)

    def test_missing_ultragen_tensor_is_a_partly_decomposed_block(self):
        checkpoint, output = self.path("ug.ckpt"), self.path("out.safetensors")
        state = synthetic.build_state_dict("ultragen", seed=self.seed)
        del state["blocks.2.self_attn.v_lora_2.lora_B.weight"]
        torch.save({"state_dict": state}, checkpoint)
        self.assert_fails([checkpoint, "-o", output, *SMALL_ARGS],
                          "block 2: 43 of its 44 UltraGen tensors", "blocks.2.self_attn.v_lora_2.lora_B.weight [32, 4]",
                          output=output)

    def test_wrong_shape(self):
        state = synthetic.build_state_dict("ultragen", seed=self.seed)
        state["blocks.1.ffn.2.weight"] = torch.zeros(32, 63)
        checkpoint, output = self.path("ug.ckpt"), self.path("out.safetensors")
        torch.save(state, checkpoint)
        self.assert_fails([checkpoint, "-o", output, *SMALL_ARGS],
                          "wrong shape (1)", "blocks.1.ffn.2.weight: expected [32, 64], file has [32, 63]", output=output)

    def test_extra_tensor(self):
        state = synthetic.build_state_dict("wan", seed=self.seed)
        state["blocks.0.self_attn.extra_proj.weight"] = torch.zeros(4, 4)
        checkpoint, output = self.path("wan.safetensors"), self.path("out.safetensors")
        safetensors_io.save(state, checkpoint)
        self.assert_fails([checkpoint, "-o", output, "--lora-rank", "4", *SMALL_ARGS],
                          "unexpected", "blocks.0.self_attn.extra_proj.weight F32 [4, 4]", output=output)

    def test_every_problem_is_listed_in_one_message(self):
        state = synthetic.build_state_dict("ultragen", seed=self.seed)
        del state["time_embedding.2.bias"]
        state["blocks.3.norm3.weight"] = torch.ones(31)
        state["blocks.0.ffn.0.bias"] = torch.zeros(64, dtype=torch.int64)
        state["global_step"] = torch.tensor(5)
        state["blocks.2.self_attn.q_lora_1.lora_A.weight"] = torch.zeros(5, 32)  # the other block says rank 4
        checkpoint, output = self.path("ug.ckpt"), self.path("out.safetensors")
        torch.save({"module": state}, checkpoint)
        stderr = self.assert_fails([checkpoint, "-o", output, *SMALL_ARGS], output=output)
        for fragment in ("missing (1)", "time_embedding.2.bias [32]",
                         "blocks.3.norm3.weight: expected [32], file has [31]",
                         "blocks.2.self_attn.q_lora_1.lora_A.weight: expected [4, 32], file has [5, 32]",
                         "blocks.0.ffn.0.bias: dtype I64", "global_step I64 []"):
            self.assertIn(fragment, stderr)

    def test_truncated_safetensors(self):
        state = synthetic.build_state_dict("wan", seed=self.seed)
        checkpoint, output = self.path("wan.safetensors"), self.path("out.safetensors")
        safetensors_io.save(state, checkpoint)
        with open(checkpoint, "r+b") as stream:
            stream.truncate(os.path.getsize(checkpoint) - 100)
        last = list(state)[-1]  # the only tensor whose data the cut reaches
        self.assert_fails([checkpoint, "-o", output, "--lora-rank", "4", *SMALL_ARGS], checkpoint, repr(last),
                          "outside", output=output)

    def test_truncated_pickle(self):
        for legacy in (False, True):
            with self.subTest(legacy_format=legacy):
                checkpoint, output = self.path("ug.ckpt"), self.path("out.safetensors")
                synthetic.write_checkpoint("ultragen", checkpoint, seed=self.seed, legacy_pickle=legacy)
                with open(checkpoint, "r+b") as stream:
                    stream.truncate(os.path.getsize(checkpoint) - 1000)
                stderr = self.assert_fails([checkpoint, "-o", output, *SMALL_ARGS], checkpoint, "is the file complete",
                                           output=output)
                self.assertNotIn("full pickle", stderr, "a damaged file is not retried as an unsafe pickle")

    def test_heads_are_required_when_dim_is_not_a_multiple_of_128(self):
        checkpoint, output = self.path("ug.ckpt"), self.path("out.safetensors")
        synthetic.write_checkpoint("ultragen", checkpoint, seed=self.seed)
        self.assert_fails([checkpoint, "-o", output], "head count of dim 32", "--heads", output=output)
        # The unknown head count does not hide the other problems.
        state = synthetic.build_state_dict("ultragen", seed=self.seed)
        state["head.extra"] = torch.zeros(2)
        torch.save(state, checkpoint)
        self.assert_fails([checkpoint, "-o", output], "2 problem(s)", "--heads", "head.extra F32 [2]", output=output)
        self.assert_fails([checkpoint, "-o", output, "--heads", "3"], "dim 32 is not divisible by heads 3", output=output)

    def test_not_a_checkpoint(self):
        other = self.path("vae.safetensors")
        safetensors_io.save({"encoder.conv1.weight": torch.zeros(2, 2)}, other)
        self.assert_fails([other, "--dry-run"], "does not look like a Wan/UltraGen DiT checkpoint",
                          "encoder.conv1.weight")
        text = self.path("notes.txt")
        with open(text, "w") as stream:
            stream.write("hello")
        self.assert_fails([text, "--dry-run"], "not a safetensors file")
        self.assert_fails([self.path("absent.ckpt"), "--dry-run"], "no such file")


if __name__ == "__main__":
    unittest.main()
