using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using UltraGen.Core;
using UltraGen.Core.Safetensors;
using UltraGen.Ops;
using UltraGen.Ops.Backends;

namespace UltraGen.Cli.Commands;

/// <summary>
/// <c>ultragen ops</c>: list the op catalogue and run any op on tensors from a safetensors file, so each op can be
/// cross-checked against PyTorch.
/// </summary>
public static class OpsCommand
{
    /// <summary>Input tensors named <c>grad.&lt;output&gt;</c> request a backward pass; outputs get <c>grad.&lt;input&gt;</c>.</summary>
    public const string GradientPrefix = "grad.";

    /// <summary>Metadata key holding default parameters ("k=v,k=v") that <c>ops example</c> stores and <c>ops run</c> reads.</summary>
    public const string ParamsMetadataKey = "ultragen.params";

    public static Command Create()
    {
        var ops = new Command("ops", "List the op catalogue or run one op on tensors from a safetensors file");
        ops.Subcommands.Add(CreateList());
        ops.Subcommands.Add(CreateRun());
        ops.Subcommands.Add(CreateExample());
        return ops;
    }

    private static Command CreateList()
    {
        var list = new Command("list", "Print every op with its input/output tensors, dtypes, shape rules and parameters");
        list.SetAction(_ =>
        {
            Console.Out.Write(Describe(OpCatalog.All));
            return 0;
        });
        return list;
    }

    /// <summary>The text <c>ops list</c> prints.</summary>
    public static string Describe(IEnumerable<Op> catalogue)
    {
        var text = new System.Text.StringBuilder();
        foreach (var op in catalogue)
        {
            string dtypes = string.Join("|", op.DTypes.Select(DTypes.Lower));
            text.AppendLine($"{op.Name} — {op.Summary}");
            foreach (var input in op.Inputs)
            {
                var flags = new List<string>();
                if (input.Optional) flags.Add("optional");
                if (!input.Differentiable) flags.Add("no gradient");
                text.AppendLine($"  in   {input.Name,-36} {dtypes,-16} {input.ShapeRule}{(flags.Count > 0 ? $"  [{string.Join(", ", flags)}]" : "")}");
            }
            foreach (var output in op.Outputs)
                text.AppendLine($"  out  {output.Name,-36} {dtypes,-16} {output.ShapeRule}");
            foreach (var parameter in op.Parameters)
                text.AppendLine($"  param {parameter.Name}={parameter.Default ?? "(required)"}  {parameter.Type}: {parameter.Description}");
            text.AppendLine();
        }
        return text.ToString();
    }

    private static Option<string[]> ParamOption() => new("--param", "-p")
    {
        Description = "An op parameter as name=value; repeat for several (see 'ops list')",
        Arity = ArgumentArity.ZeroOrMore,
    };

    private static Command CreateRun()
    {
        var opArgument = new Argument<string>("op") { Description = "The op's name (see 'ops list')" };
        var input = new Option<string?>("--input", "-i") { Description = "safetensors file with the op's inputs (and grad.<output> for a backward pass)" };
        var output = new Option<string>("--output", "-o") { Description = "safetensors file to write (atomically) with the outputs and grad.<input>", Required = true };
        var backend = new Option<string>("--backend", "-b") { Description = "auto, or a backend name (reference, …)", DefaultValueFactory = _ => "auto" };
        var dtype = new Option<string?>("--dtype") { Description = "storage dtype to compute in: f32, bf16, f16, f64 (default: the dtype of the first input)" };
        var example = new Option<bool>("--example") { Description = "use seeded random inputs (the op's first test case) instead of --input" };
        var seed = new Option<int>("--seed") { Description = "seed for --example", DefaultValueFactory = _ => 0 };
        var parameters = ParamOption();
        var run = new Command("run", "Run an op forward (and backward when the input file holds grad.<output>) on tensors from a file");
        run.Arguments.Add(opArgument);
        foreach (var option in new Option[] { input, output, backend, dtype, example, seed, parameters }) run.Options.Add(option);
        run.SetAction(result => Guarded(() => Run(
            result.GetValue(opArgument)!, result.GetValue(input), result.GetValue(output)!, result.GetValue(backend)!,
            result.GetValue(dtype), result.GetValue(example), result.GetValue(seed), result.GetValue(parameters) ?? [])));
        return run;
    }

    private static Command CreateExample()
    {
        var opArgument = new Argument<string>("op") { Description = "The op's name (see 'ops list')" };
        var output = new Option<string>("--output", "-o") { Description = "safetensors file to write", Required = true };
        var dtype = new Option<string>("--dtype") { Description = "dtype of the written tensors", DefaultValueFactory = _ => "f32" };
        var seed = new Option<int>("--seed") { Description = "random seed", DefaultValueFactory = _ => 0 };
        var withGradient = new Option<bool>("--with-grad") { Description = "also write random grad.<output> tensors so 'ops run' does a backward pass" };
        var example = new Command("example", "Write random inputs for an op (its first test case), with its parameters in the metadata");
        example.Arguments.Add(opArgument);
        foreach (var option in new Option[] { output, dtype, seed, withGradient }) example.Options.Add(option);
        example.SetAction(result => Guarded(() =>
        {
            var op = OpCatalog.Get(result.GetValue(opArgument)!);
            var storage = ParseDType(result.GetValue(dtype)!);
            var (inputs, parameters) = ExampleInputs(op, result.GetValue(seed), result.GetValue(withGradient));
            WriteFile(result.GetValue(output)!, inputs, storage, parameters);
            Console.WriteLine($"wrote {inputs.Count} tensors for '{op.Name}' to {result.GetValue(output)} ({(parameters.Values.Count == 0 ? "no params" : "params " + parameters)})");
            return 0;
        }));
        return example;
    }

    private static int Guarded(Func<int> action) => CommandGuard.Run(action);

    private static DType ParseDType(string text) =>
        DTypes.TryParse(text, out var dtype) ? dtype : throw new OpParameterException($"unknown dtype '{text}' (use f32, bf16, f16 or f64)");

    /// <summary>Seeded random inputs of the op's first case (and output gradients when asked).</summary>
    public static (RefArgs Inputs, OpParams Parameters) ExampleInputs(Op op, int seed, bool withGradient)
    {
        var opCase = op.Cases().First();
        var random = new Random(seed);
        var inputs = OpRunner.RandomInputs(opCase, random);
        if (withGradient)
            foreach (var (name, shape) in op.OutputShapes(OpRunner.ShapesOf(inputs), opCase.Params))
            {
                var gradient = new RefTensor((int[])shape.Clone());
                for (int i = 0; i < gradient.Length; i++) gradient.Data[i] = 2 * random.NextDouble() - 1;
                inputs[GradientPrefix + name] = gradient;
            }
        return (inputs, opCase.Params);
    }

    private static int Run(string opName, string? inputPath, string outputPath, string backendName, string? dtypeText,
        bool useExample, int seed, string[] parameterItems)
    {
        var op = OpCatalog.Get(opName);
        if (useExample == (inputPath is not null))
            throw new OpParameterException("give exactly one of --input <file> or --example");

        RefArgs tensors;
        OpParams fileParameters;
        DType? firstDType = null;
        if (inputPath is not null)
        {
            using var file = SafetensorsFile.Open(inputPath);
            tensors = new RefArgs();
            foreach (var name in file.Names)
            {
                var info = file.GetInfo(name);
                if (info.DType is null)
                    throw new UnsupportedConfigurationException($"{inputPath}: tensor '{name}' has dtype {info.DTypeName}; ops take F32, BF16, F16 or F64");
                firstDType ??= info.DType;
                using var tensor = file.ReadTensor(name);
                tensors[name] = RefTensor.FromTensor(tensor);
            }
            fileParameters = file.Metadata.TryGetValue(ParamsMetadataKey, out var stored)
                ? OpParams.Parse(stored.Split(',', StringSplitOptions.RemoveEmptyEntries))
                : new OpParams();
        }
        else
        {
            (tensors, fileParameters) = ExampleInputs(op, seed, withGradient: true);
        }

        // Command-line parameters override those stored in the file.
        var merged = new Dictionary<string, string>(fileParameters.Values);
        foreach (var (key, value) in OpParams.Parse(parameterItems).Values) merged[key] = value;
        var parameters = new OpParams(merged);
        parameters.Validate(op.Name, op.Parameters);

        var storage = dtypeText is not null ? ParseDType(dtypeText) : firstDType ?? DType.F32;
        var inputs = new RefArgs();
        var outputGradients = new RefArgs();
        foreach (var (name, tensor) in tensors)
        {
            if (name.StartsWith(GradientPrefix, StringComparison.Ordinal)) outputGradients[name[GradientPrefix.Length..]] = tensor;
            else if (op.Inputs.Any(i => i.Name == name)) inputs[name] = tensor;
            else throw new ShapeMismatchException(
                $"op '{op.Name}' has no input '{name}' (inputs: {string.Join(", ", op.Inputs.Select(i => i.Name))}; gradients as grad.<output>)");
        }
        foreach (var spec in op.Inputs.Where(i => !i.Optional && !inputs.ContainsKey(i.Name)))
            throw new ShapeMismatchException($"op '{op.Name}' needs input '{spec.Name}' {spec.ShapeRule}; the file does not hold it");
        var outputShapes = op.OutputShapes(OpRunner.ShapesOf(inputs), parameters);
        foreach (var name in outputGradients.Keys)
            if (!outputShapes.ContainsKey(name))
                throw new ShapeMismatchException($"grad.{name}: op '{op.Name}' has no output '{name}' (outputs: {string.Join(", ", outputShapes.Keys)})");
        bool backward = outputGradients.Count > 0;
        if (backward && outputGradients.Count != outputShapes.Count)
            throw new ShapeMismatchException($"a backward pass needs grad.<output> for every output: {string.Join(", ", outputShapes.Keys.Select(k => GradientPrefix + k))}");

        var (backend, why) = SelectBackend(backendName, op, storage);
        using (backend)
        {
            if (!backend.SupportsCase(op, storage, OpRunner.ShapesOf(inputs), parameters, out var reason))
                throw new UnsupportedConfigurationException($"backend '{backend.Name}' cannot run '{op.Name}' in {DTypes.Lower(storage)}: {reason}");
            Console.WriteLine($"backend: {backend.Name} — {why}");
            var timer = Stopwatch.StartNew();
            var results = RunOnBackend(backend, op, inputs, outputShapes, backward ? outputGradients : null, storage, parameters);
            timer.Stop();
            WriteFile(outputPath, results, storage, parameters);
            foreach (var (name, tensor) in results)
                Console.WriteLine($"  {name,-40} {Shape.Format(tensor.Shape),-20} rms {Rms(tensor.Data):G6}");
            Console.WriteLine($"{op.Name} {(backward ? "forward+backward" : "forward")} in {timer.Elapsed.TotalMilliseconds:F1} ms ({DTypes.Lower(storage)}); wrote {outputPath}");
        }
        return 0;
    }

    private static (IBackend Backend, string Why) SelectBackend(string name, Op op, DType storage)
    {
        if (string.Equals(name, "auto", StringComparison.OrdinalIgnoreCase)) return BackendRegistry.Auto(op, storage);
        var probe = BackendRegistry.Get(name).Probe();
        return probe.Backend is not null
            ? (probe.Backend, "chosen with --backend")
            : throw new UnsupportedConfigurationException($"backend '{name}' is not available here: {probe.UnavailableReason}");
    }

    /// <summary>Uploads, runs forward (and backward), downloads; every result is keyed by its output-file name.</summary>
    private static RefArgs RunOnBackend(IBackend backend, Op op, RefArgs inputs, IReadOnlyDictionary<string, int[]> outputShapes,
        RefArgs? outputGradients, DType storage, OpParams parameters)
    {
        var owned = new List<Tensor>();
        Tensor Upload(RefTensor value)
        {
            using var host = value.ToTensor(storage);
            var device = backend.Allocate(storage, value.Shape);
            owned.Add(device);
            backend.CopyFromHost(host, device);
            return device;
        }
        Tensor AllocateOutput(int[] shape)
        {
            var device = backend.Allocate(storage, shape);
            owned.Add(device);
            return device;
        }
        RefTensor Download(Tensor device)
        {
            using var host = Tensor.Host(storage, device.ShapeArray);
            backend.CopyToHost(device, host);
            return RefTensor.FromTensor(host);
        }
        try
        {
            var deviceInputs = inputs.ToDictionary(kv => kv.Key, kv => Upload(kv.Value));
            var deviceOutputs = outputShapes.ToDictionary(kv => kv.Key, kv => AllocateOutput(kv.Value));
            backend.Forward(op, deviceInputs, deviceOutputs, parameters);
            var results = new RefArgs();
            foreach (var (name, device) in deviceOutputs) results[name] = Download(device);
            if (outputGradients is not null)
            {
                var deviceOutputGradients = outputGradients.ToDictionary(kv => kv.Key, kv => Upload(kv.Value));
                var deviceInputGradients = op.Inputs
                    .Where(spec => spec.Differentiable && inputs.ContainsKey(spec.Name))
                    .ToDictionary(spec => spec.Name, spec => AllocateOutput(inputs[spec.Name].Shape));
                backend.Backward(op, deviceInputs, deviceOutputGradients, deviceInputGradients, parameters);
                foreach (var (name, device) in deviceInputGradients) results[GradientPrefix + name] = Download(device);
            }
            return results;
        }
        finally
        {
            foreach (var tensor in owned) tensor.Dispose();
        }
    }

    private static void WriteFile(string path, RefArgs tensors, DType storage, OpParams parameters)
    {
        var hostTensors = tensors.Select(kv => new KeyValuePair<string, Tensor>(kv.Key, kv.Value.ToTensor(storage))).ToList();
        try
        {
            var metadata = new Dictionary<string, string> { [ParamsMetadataKey] = parameters.ToString() };
            SafetensorsWriter.Write(path, hostTensors, metadata);
        }
        finally
        {
            foreach (var (_, tensor) in hostTensors) tensor.Dispose();
        }
    }

    private static double Rms(double[] values) =>
        values.Length == 0 ? 0 : Math.Sqrt(values.Sum(v => v * v) / values.Length);
}
