using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;
using NUnit.Framework;
using UltraGen.Core;
using UltraGen.Core.Safetensors;

namespace UltraGen.Tests.Core;

public class SafetensorsTests
{
    private string _dir = "";

    [SetUp]
    public void SetUp()
    {
        _dir = Path.Combine(Path.GetTempPath(), "ultragen-st-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
    }

    [TearDown]
    public void TearDown()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    // ------------------------------------------------------------------ helpers

    private string PathOf(string name) => Path.Combine(_dir, name);

    /// <summary>Bytes of a file: the header length (the JSON's unless overridden), the JSON, then the data.</summary>
    private static byte[] Raw(string json, int dataLength, ulong? headerLength = null)
    {
        byte[] header = Encoding.UTF8.GetBytes(json);
        var bytes = new byte[8 + header.Length + dataLength];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, headerLength ?? (ulong)header.Length);
        header.CopyTo(bytes, 8);
        for (int i = 0; i < dataLength; i++) bytes[8 + header.Length + i] = (byte)(i * 7 + 1);
        return bytes;
    }

    private string WriteRaw(string fileName, byte[] bytes)
    {
        string path = PathOf(fileName);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static SafetensorsFormatException AssertFormatError(string path, string? tensor, string fragment)
    {
        var e = Assert.Throws<SafetensorsFormatException>(() =>
        {
            using var file = SafetensorsFile.Open(path);
            foreach (var name in file.Names) file.GetBytes(name);
        })!;
        Assert.That(e.Message, Does.Contain(path), "message names the file");
        Assert.That(e.FilePath, Is.EqualTo(path));
        Assert.That(e.Message, Does.Contain(fragment));
        if (tensor is not null)
        {
            Assert.That(e.TensorName, Is.EqualTo(tensor));
            Assert.That(e.Message, Does.Contain($"'{tensor}'"), "message names the tensor");
        }
        return e;
    }

    private static Tensor RandomTensor(Random random, DType dtype, params int[] shape)
    {
        var values = new double[Shape.ElementCount(shape)];
        for (int i = 0; i < values.Length; i++)
        {
            double v;
            do v = (random.NextDouble() * 2 - 1) * Math.Pow(2, random.Next(-12, 12)); while (v == 0);
            values[i] = v;
        }
        return Tensor.FromDoubles(dtype, shape, values);
    }

    private static byte[] ValidFileBytes(string directory, int seed)
    {
        var random = new Random(seed);
        string path = Path.Combine(directory, "base.safetensors");
        var tensors = new List<KeyValuePair<string, Tensor>>
        {
            new("blocks.0.attn.qkv.weight", RandomTensor(random, DType.BF16, 6, 4)),
            new("blocks.0.attn.qkv.bias", RandomTensor(random, DType.F32, 6)),
            new("norm.scale", RandomTensor(random, DType.F16, 2, 2, 2)),
            new("timestep.freq", RandomTensor(random, DType.F64, 3)),
            new("scalar", RandomTensor(random, DType.F32)),
            new("empty", RandomTensor(random, DType.F32, 0, 5)),
        };
        try
        {
            SafetensorsWriter.Write(path, tensors, new Dictionary<string, string> { ["format"] = "pt", ["step"] = "1200" });
        }
        finally
        {
            foreach (var (_, t) in tensors) t.Dispose();
        }
        byte[] bytes = File.ReadAllBytes(path);
        File.Delete(path);
        return bytes;
    }

    // ------------------------------------------------------------------ round trip

    [Test]
    public void RoundTrip_AllDTypes_BitExact_WithMetadata()
    {
        int seed = Random.Shared.Next();
        TestContext.Out.WriteLine($"seed {seed}");
        var random = new Random(seed);
        var shapes = new[] { new[] { 3, 5 }, new[] { 7 }, new[] { 2, 3, 4 }, Array.Empty<int>(), new[] { 4, 0 } };
        var tensors = new List<KeyValuePair<string, Tensor>>();
        foreach (var dtype in new[] { DType.F32, DType.BF16, DType.F16, DType.F64 })
            for (int i = 0; i < shapes.Length; i++)
                tensors.Add(new($"{DTypes.Lower(dtype)}.t{i} ünïcode+\"q\"", RandomTensor(random, dtype, shapes[i])));
        var metadata = new Dictionary<string, string> { ["format"] = "pt", ["note"] = "line\nbreak \"quoted\" ∑", ["empty"] = "" };
        string path = PathOf("model.safetensors");
        try
        {
            SafetensorsWriter.Write(path, tensors, metadata);
            using var file = SafetensorsFile.Open(path);
            Assert.That(file.DataOffset % 8, Is.Zero, "data buffer is 8-byte aligned");
            Assert.That(file.Names, Is.EqualTo(tensors.Select(t => t.Key)), "header order = write order");
            Assert.That(file.Metadata, Is.EquivalentTo(metadata));
            long expectedOffset = 0;
            foreach (var (name, original) in tensors)
            {
                var info = file.GetInfo(name);
                Assert.That(info.DType, Is.EqualTo(original.DType));
                Assert.That(info.DTypeName, Is.EqualTo(DTypes.SafetensorsName(original.DType)));
                Assert.That(info.Shape, Is.EqualTo(original.ShapeArray));
                Assert.That(info.DataBegin, Is.EqualTo(expectedOffset), "contiguous, in the given order");
                expectedOffset = info.DataEnd;
                Assert.That(file.GetBytes(name).ToArray(), Is.EqualTo(original.HostBytes.ToArray()));
                using var read = file.ReadTensor(name);
                Assert.That(read.DType, Is.EqualTo(original.DType));
                Assert.That(read.ShapeArray, Is.EqualTo(original.ShapeArray));
                Assert.That(read.HostBytes.ToArray(), Is.EqualTo(original.HostBytes.ToArray()), name);
                if (original.ElementCount > 0)
                    Assert.That(read.ToDoubles(), Has.Some.Not.EqualTo(0.0), "random values, not zeros");
            }
            Assert.That(new FileInfo(path).Length, Is.EqualTo(file.DataOffset + expectedOffset));
        }
        finally
        {
            foreach (var (_, t) in tensors) t.Dispose();
        }
        Assert.That(Directory.GetFiles(_dir), Is.EqualTo(new[] { path }), "no temp files left");
    }

    [Test]
    public void ReadTensor_Converting_MatchesFloatConversions()
    {
        var random = new Random(1234);
        using var source = RandomTensor(random, DType.F64, 3, 1000); // > one conversion chunk
        string path = PathOf("f64.safetensors");
        SafetensorsWriter.Write(path, [new("x", source)]);
        using var file = SafetensorsFile.Open(path);
        foreach (var target in new[] { DType.F32, DType.BF16, DType.F16, DType.F64 })
        {
            using var converted = file.ReadTensor("x", target);
            Assert.That(converted.DType, Is.EqualTo(target));
            Assert.That(converted.ShapeArray, Is.EqualTo(new[] { 3, 1000 }));
            var expected = new byte[converted.ByteCount];
            FloatConversions.Encode(target, source.ToDoubles(), expected);
            Assert.That(converted.HostBytes.ToArray(), Is.EqualTo(expected), target.ToString());
        }
    }

    [Test]
    public void MissingTensor_IsTypedError_NamingFileAndTensor()
    {
        using var t = Tensor.FromDoubles(DType.F32, [2], [1, 2]);
        string path = PathOf("m.safetensors");
        SafetensorsWriter.Write(path, [new("a", t)]);
        using var file = SafetensorsFile.Open(path);
        Assert.That(file.TryGetInfo("b", out _), Is.False);
        foreach (var action in new Action[] { () => file.GetInfo("b"), () => file.GetBytes("b"), () => file.ReadTensor("b").Dispose(),
                     () => file.ReadTensor("b", DType.BF16).Dispose() })
        {
            var e = Assert.Throws<MissingTensorException>(() => action())!;
            Assert.That(e.Message, Does.Contain(path).And.Contain("'b'"));
            Assert.That(e.TensorName, Is.EqualTo("b"));
            Assert.That(e, Is.InstanceOf<UltraGenException>());
        }
    }

    [Test]
    public void NonComputableDType_IsListed_BytesReadable_ReadTensorRefuses()
    {
        string json = """{"__metadata__":{"a":"b"},"ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},"w":{"dtype":"F32","shape":[1],"data_offsets":[16,20]},"q":{"dtype":"F4","shape":[3,2],"data_offsets":[20,23]}}""";
        string path = WriteRaw("i64.safetensors", Raw(json, 23));
        using var file = SafetensorsFile.Open(path);
        Assert.That(file.Names, Is.EqualTo(new[] { "ids", "w", "q" }));
        Assert.That(file.GetInfo("ids").DType, Is.Null);
        Assert.That(file.GetInfo("ids").DTypeName, Is.EqualTo("I64"));
        Assert.That(file.GetInfo("q").ByteCount, Is.EqualTo(3), "F4 packs two per byte");
        Assert.That(file.GetBytes("ids").Length, Is.EqualTo(16));
        var e = Assert.Throws<UnsupportedConfigurationException>(() => file.ReadTensor("ids").Dispose())!;
        Assert.That(e.Message, Does.Contain(path).And.Contain("'ids'").And.Contain("I64"));
        using var w = file.ReadTensor("w");
        Assert.That(w.DType, Is.EqualTo(DType.F32));
    }

    [Test]
    public void FileNotFound_IsTypedError()
    {
        string path = PathOf("nope.safetensors");
        var e = Assert.Throws<SafetensorsFormatException>(() => SafetensorsFile.Open(path))!;
        Assert.That(e.Message, Does.Contain(path).And.Contain("file not found"));
    }

    // ------------------------------------------------------------------ malformed files

    private const string A8 = """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""";

    [Test]
    public void Malformed_TruncatedData()
    {
        byte[] bytes = ValidFileBytes(_dir, 7);
        string path = WriteRaw("truncated.safetensors", bytes[..^3]);
        // The last non-empty tensor ("scalar", 4 bytes) now runs past the shortened buffer.
        AssertFormatError(path, "scalar", "run past the end");
    }

    [Test]
    public void Malformed_OverlappingOffsets()
    {
        string json = """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}""";
        var e = AssertFormatError(WriteRaw("overlap.safetensors", Raw(json, 12)), "b", "overlap");
        Assert.That(e.Message, Does.Contain("'a'"));
    }

    [Test]
    public void Malformed_ZeroSizedTensorsMayShareOffsets()
    {
        string json = """{"a":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"c":{"dtype":"BF16","shape":[3,0],"data_offsets":[4,4]}}""";
        using var file = SafetensorsFile.Open(WriteRaw("zero.safetensors", Raw(json, 8)));
        using var a = file.ReadTensor("a");
        Assert.That(a.ElementCount, Is.Zero);
    }

    [Test]
    public void Malformed_HeaderLength2Pow40_FailsWithoutAllocating()
    {
        string path = WriteRaw("huge.safetensors", Raw(A8, 8, headerLength: 1UL << 40));
        Assert.Throws<SafetensorsFormatException>(() => SafetensorsFile.Open(path)); // warm up JIT and the throw path
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<SafetensorsFormatException>(() => SafetensorsFile.Open(path))!;
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.That(e.Message, Does.Contain(path).And.Contain("1099511627776"));
        Assert.That(allocated, Is.LessThan(64 * 1024));
    }

    [Test]
    public void Malformed_HeaderLongerThanFile() =>
        AssertFormatError(WriteRaw("long.safetensors", Raw(A8, 8, headerLength: 1000)), null, "runs past the end of the");

    [Test]
    public void Malformed_UnknownDType() =>
        AssertFormatError(WriteRaw("f33.safetensors", Raw(A8.Replace("F32", "F33"), 8)), "a", "unknown dtype 'F33'");

    [Test]
    public void Malformed_ShapeTimesSizeMismatch() =>
        AssertFormatError(WriteRaw("mismatch.safetensors", Raw(A8.Replace("[2]", "[3]"), 8)), "a", "needs 12 bytes");

    [TestCase("[0,9]", "run past the end")]
    [TestCase("[4,12]", "run past the end")]
    [TestCase("[8,0]", "end before they begin")]
    [TestCase("[0,18446744073709551615]", "run past the end")]
    [TestCase("[0,18446744073709551616]", "too large for 64 bits")]
    public void Malformed_OffsetsOutOfRange(string offsets, string fragment) =>
        AssertFormatError(WriteRaw("range.safetensors", Raw(A8.Replace("[0,8]", offsets), 8)), "a", fragment);

    [TestCase("hello world")]
    [TestCase("{\"a\":")]
    [TestCase("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},}")]
    [TestCase("{'a':1}")]
    [TestCase("")]
    public void Malformed_NonJsonHeader(string json) =>
        AssertFormatError(WriteRaw("nonjson.safetensors", Raw(json, 8)), null, "");

    [TestCase(0)]
    [TestCase(1)]
    [TestCase(7)]
    public void Malformed_FileShorterThan8Bytes(int length) =>
        AssertFormatError(WriteRaw("short.safetensors", new byte[length]), null, "shorter than the 8-byte header length");

    [Test]
    public void Malformed_DuplicateKey()
    {
        string json = """{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""";
        AssertFormatError(WriteRaw("dup.safetensors", Raw(json, 8)), "a", "duplicate tensor name");
    }

    [TestCase("""{"a":[1,2]}""", "a", "entry must be an object")]
    [TestCase("""{"a":{"dtype":"F32","shape":[2]}}""", "a", "missing field 'data_offsets'")]
    [TestCase("""{"a":{"shape":[2],"data_offsets":[0,8]}}""", "a", "missing field 'dtype'")]
    [TestCase("""{"a":{"dtype":"F32","data_offsets":[0,8]}}""", "a", "missing field 'shape'")]
    [TestCase("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"extra":1}}""", "a", "unknown field 'extra'")]
    [TestCase("""{"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", "a", "duplicate field 'dtype'")]
    [TestCase("""{"a":{"dtype":32,"shape":[2],"data_offsets":[0,8]}}""", "a", "'dtype' must be a string")]
    [TestCase("""{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}""", "a", "non-negative integers")]
    [TestCase("""{"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}}""", "a", "non-negative integers")]
    [TestCase("""{"a":{"dtype":"F32","shape":[2e0],"data_offsets":[0,8]}}""", "a", "non-negative integers")]
    [TestCase("""{"a":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}}""", "a", "must hold integers")]
    [TestCase("""{"a":{"dtype":"F32","shape":[[2]],"data_offsets":[0,8]}}""", "a", "must hold integers")]
    [TestCase("""{"a":{"dtype":"F32","shape":[2147483648],"data_offsets":[0,8]}}""", "a", "does not fit a 32-bit int")]
    [TestCase("""{"a":{"dtype":"F32","shape":[2147483647,2147483647,2147483647],"data_offsets":[0,8]}}""", "a", "more elements than fit")]
    [TestCase("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}}""", "a", "must hold integers")]
    [TestCase("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}}""", "a", "exactly two integers")]
    [TestCase("""{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}""", "a", "not a whole number of bytes")]
    [TestCase("""{"__metadata__":{"k":1},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", null, "must be a string")]
    [TestCase("""{"__metadata__":[],"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", null, "__metadata__ must be an object")]
    [TestCase("""{"__metadata__":{"k":"v","k":"w"}}""", null, "duplicate __metadata__ key")]
    [TestCase("""{"__metadata__":{},"__metadata__":{}}""", null, "duplicate __metadata__")]
    [TestCase("""[]""", null, "not a JSON object")]
    [TestCase("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}} x""", null, "not valid JSON")]
    [TestCase("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}{}""", null, "not valid JSON")]
    [TestCase("""{"\ud800":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", null, "invalid JSON string")]
    [TestCase("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":{"y":{"z":{}}}}}""", "a", "")]
    public void Malformed_HeaderStructure(string json, string? tensor, string fragment) =>
        AssertFormatError(WriteRaw("structure.safetensors", Raw(json, 8)), tensor, fragment);

    [Test]
    public void Malformed_InvalidUtf8()
    {
        byte[] bytes = Raw(A8, 8);
        bytes[10] = 0xC3; // a lead byte followed by an ASCII byte
        AssertFormatError(WriteRaw("utf8.safetensors", bytes), null, "UTF-8");
    }

    [Test]
    public void Accepts_PaddingGapsTrailingBytesAndNullMetadata()
    {
        string json = """{"__metadata__":null,"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}       """;
        using var file = SafetensorsFile.Open(WriteRaw("lenient.safetensors", Raw(json, 20)));
        Assert.That(file.Metadata, Is.Empty);
        Assert.That(file.GetBytes("a").Length, Is.EqualTo(4));
    }

    // ------------------------------------------------------------------ atomic write

    [Test]
    public void Write_StorageFailingMidway_LeavesOldFileIntact_AndNoTempFiles()
    {
        string path = PathOf("model.safetensors");
        using (var old = Tensor.FromDoubles(DType.F32, [3], [1, 2, 3]))
            SafetensorsWriter.Write(path, [new("old", old)]);
        byte[] before = File.ReadAllBytes(path);

        using var good = RandomTensor(new Random(5), DType.F32, 256, 256); // written before the failure
        var broken = Tensor.FromDoubles(DType.BF16, [2], [1, 2]);
        broken.Dispose(); // its storage now throws when the writer reaches it
        Assert.Throws<ObjectDisposedException>(() =>
            SafetensorsWriter.Write(path, [new("good", good), new("broken", broken)]));

        Assert.That(File.ReadAllBytes(path), Is.EqualTo(before));
        Assert.That(Directory.GetFiles(_dir), Is.EqualTo(new[] { path }));
    }

    [Test]
    public void Write_InvalidInput_LeavesOldFileIntact_AndNoTempFiles()
    {
        string path = PathOf("model.safetensors");
        using var t = Tensor.FromDoubles(DType.F32, [3], [1, 2, 3]);
        SafetensorsWriter.Write(path, [new("old", t)]);
        byte[] before = File.ReadAllBytes(path);

        Assert.Throws<ArgumentException>(() => SafetensorsWriter.Write(path, [new("", t)]));
        Assert.Throws<ArgumentException>(() => SafetensorsWriter.Write(path, [new("x", t), new("x", t)]));
        Assert.Throws<ArgumentException>(() => SafetensorsWriter.Write(path, [new("__metadata__", t)]));
        Assert.Throws<InvalidOperationException>(() => SafetensorsWriter.Write(path, ThrowingSequence(t)));

        Assert.That(File.ReadAllBytes(path), Is.EqualTo(before));
        Assert.That(Directory.GetFiles(_dir), Is.EqualTo(new[] { path }));
    }

    private static IEnumerable<KeyValuePair<string, Tensor>> ThrowingSequence(Tensor t)
    {
        yield return new("first", t);
        throw new InvalidOperationException("enumeration failed");
    }

    [Test]
    public void Write_OverwritesExistingFile()
    {
        string path = PathOf("model.safetensors");
        using var a = Tensor.FromDoubles(DType.F32, [1], [1]);
        using var b = Tensor.FromDoubles(DType.F16, [2], [2, 3]);
        SafetensorsWriter.Write(path, [new("a", a)]);
        SafetensorsWriter.Write(path, [new("b", b)]);
        using var file = SafetensorsFile.Open(path);
        Assert.That(file.Names, Is.EqualTo(new[] { "b" }));
        Assert.That(Directory.GetFiles(_dir), Is.EqualTo(new[] { path }));
    }

    // ------------------------------------------------------------------ mutation fuzz

    [Test]
    public void Fuzz_MutatedFiles_OnlyFormatErrors_BoundedAllocation()
    {
        const int Seed = 20251125;
        const int Iterations = 12_000;
        const long Slack = 64 * 1024;
        TestContext.Out.WriteLine($"fuzz seed {Seed}, {Iterations} variants");
        byte[] valid = ValidFileBytes(_dir, Seed);
        int headerEnd = 8 + (int)BinaryPrimitives.ReadUInt64LittleEndian(valid);
        var random = new Random(Seed);
        string path = PathOf("fuzz.safetensors");

        int opened = 0, rejected = 0;
        long worstExcess = long.MinValue;
        OpenAndReadAll(WriteRaw("fuzz.safetensors", valid)); // warm up JIT and type loading outside the measurements
        var clock = Stopwatch.StartNew();
        for (int iteration = 0; iteration < Iterations; iteration++)
        {
            byte[] mutated = Mutate(valid, headerEnd, random);
            File.WriteAllBytes(path, mutated);
            long before = GC.GetAllocatedBytesForCurrentThread();
            bool ok;
            try
            {
                ok = OpenAndReadAll(path);
            }
            catch (SafetensorsFormatException e)
            {
                ok = false;
                Assert.That(e.Message, Does.StartWith(path), $"iteration {iteration}");
            }
            catch (Exception e)
            {
                Assert.Fail($"iteration {iteration} (seed {Seed}): unexpected {e.GetType().Name}: {e}");
                throw;
            }
            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            worstExcess = Math.Max(worstExcess, allocated - mutated.Length);
            if (allocated > mutated.Length + Slack)
                Assert.Fail($"iteration {iteration} (seed {Seed}): allocated {allocated} bytes for a {mutated.Length}-byte file");
            if (ok) opened++; else rejected++;
        }
        clock.Stop();
        TestContext.Out.WriteLine(
            $"{Iterations} variants in {clock.Elapsed.TotalSeconds:F2} s: {opened} opened and read, {rejected} rejected; " +
            $"worst allocation minus file size {worstExcess} bytes");
        Assert.That(opened, Is.GreaterThan(0), "some mutations (e.g. in tensor data) stay valid");
        Assert.That(rejected, Is.GreaterThan(Iterations / 2));
    }

    /// <summary>Opens the file and reads every tensor every way; true if it all worked.</summary>
    private static bool OpenAndReadAll(string path)
    {
        using var file = SafetensorsFile.Open(path);
        foreach (var name in file.Names)
        {
            var info = file.GetInfo(name);
            _ = file.GetBytes(name).Length;
            if (info.DType is null)
            {
                Assert.Throws<UnsupportedConfigurationException>(() => file.ReadTensor(name).Dispose());
                continue;
            }
            using (var t = file.ReadTensor(name)) Assert.That(t.ByteCount, Is.EqualTo(info.ByteCount));
            using (file.ReadTensor(name, DType.F32)) { }
        }
        return true;
    }

    private static byte[] Mutate(byte[] valid, int headerEnd, Random random)
    {
        byte[] bytes = (byte[])valid.Clone();
        int rounds = random.Next(10) < 8 ? 1 : random.Next(2, 4);
        for (int r = 0; r < rounds; r++) bytes = MutateOnce(bytes, Math.Min(headerEnd, bytes.Length), random);
        return bytes;
    }

    private static readonly byte[] JsonChars = "{}[]:,\"-0123456789.e \\"u8.ToArray();

    private static byte[] MutateOnce(byte[] bytes, int headerEnd, Random random)
    {
        int length = bytes.Length;
        switch (random.Next(9))
        {
            case 0: // flip 1-4 bits anywhere
                for (int i = random.Next(1, 5); i > 0 && length > 0; i--) bytes[random.Next(length)] ^= (byte)(1 << random.Next(8));
                return bytes;
            case 1: // random bytes in the header
                if (headerEnd > 8)
                    for (int i = random.Next(1, 9); i > 0; i--) bytes[random.Next(8, headerEnd)] = (byte)random.Next(256);
                return bytes;
            case 2: // truncate anywhere
                return bytes[..random.Next(length + 1)];
            case 3: // rewrite the header length
            {
                if (length < 8) return bytes;
                ulong n = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
                ulong value = random.Next(8) switch
                {
                    0 => 0,
                    1 => n + 1,
                    2 => n - 1,
                    3 => 1UL << 40,
                    4 => (ulong)random.NextInt64(),
                    5 => (ulong)(length - 8),
                    6 => (ulong)(length - 7),
                    _ => n + (ulong)random.Next(-16, 17),
                };
                BinaryPrimitives.WriteUInt64LittleEndian(bytes, value);
                return bytes;
            }
            case 4: // edit, insert or delete a digit inside the JSON
            {
                var digits = new List<int>();
                for (int i = 8; i < headerEnd; i++) if (bytes[i] is >= (byte)'0' and <= (byte)'9') digits.Add(i);
                if (digits.Count == 0) return bytes;
                int at = digits[random.Next(digits.Count)];
                switch (random.Next(3))
                {
                    case 0: bytes[at] = (byte)('0' + random.Next(10)); return bytes;
                    case 1: return [.. bytes[..at], (byte)('0' + random.Next(10)), .. bytes[at..]];
                    default: return [.. bytes[..at], .. bytes[(at + 1)..]];
                }
            }
            case 5: // a JSON-significant character somewhere in the header
                if (headerEnd > 8) bytes[random.Next(8, headerEnd)] = JsonChars[random.Next(JsonChars.Length)];
                return bytes;
            case 6: // insert 1-16 random bytes
            {
                int at = random.Next(length + 1);
                var insert = new byte[random.Next(1, 17)];
                random.NextBytes(insert);
                return [.. bytes[..at], .. insert, .. bytes[at..]];
            }
            case 7: // delete 1-16 bytes
            {
                if (length == 0) return bytes;
                int at = random.Next(length);
                int count = Math.Min(random.Next(1, 17), length - at);
                return [.. bytes[..at], .. bytes[(at + count)..]];
            }
            default: // random bytes in the data buffer (usually still valid)
                if (length > headerEnd)
                    for (int i = random.Next(1, 9); i > 0; i--) bytes[random.Next(headerEnd, length)] = (byte)random.Next(256);
                return bytes;
        }
    }
}
