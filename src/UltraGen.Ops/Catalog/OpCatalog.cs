using System.Reflection;

namespace UltraGen.Ops;

/// <summary>Every op of the catalogue, found by reflection so that adding an op is adding its class.</summary>
public static class OpCatalog
{
    private static readonly Lazy<IReadOnlyList<Op>> s_all = new(() =>
        typeof(Op).Assembly.GetTypes()
            .Where(t => t.IsClass && !t.IsAbstract && typeof(Op).IsAssignableFrom(t) && t.GetConstructor(Type.EmptyTypes) is not null)
            .Select(t => (Op)Activator.CreateInstance(t)!)
            .OrderBy(op => op.Name, StringComparer.Ordinal)
            .ToList());

    public static IReadOnlyList<Op> All => s_all.Value;

    public static Op Get(string name) =>
        All.FirstOrDefault(op => op.Name == name)
        ?? throw new Core.OpParameterException(
            $"unknown op '{name}'; known ops: {string.Join(", ", All.Select(op => op.Name))}");
}
