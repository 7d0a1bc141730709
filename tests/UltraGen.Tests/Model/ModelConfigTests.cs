using NUnit.Framework;
using UltraGen.Core.Layout;
using UltraGen.Model;

namespace UltraGen.Tests.Model;

public class ModelConfigTests
{
    [Test]
    public void Wan_preset_is_spec_2_1()
    {
        var c = ModelConfig.Preset("wan2.1-t2v-1.3b");
        Assert.That((c.Dim, c.FfnDim, c.FreqDim, c.TextDim, c.TextLen, c.Heads, c.HeadDim, c.Layers), Is.EqualTo((1536, 8960, 256, 4096, 512, 12, 128, 30)));
        Assert.That((c.InChannels, c.OutChannels, c.Patch, c.Eps, c.QkNorm, c.CrossAttnNorm), Is.EqualTo((16, 16, new PatchSize(1, 2, 2), 1e-6, true, true)));
        Assert.That((c.WindowBase, c.GlobalDown, c.HierarchicalDown, c.LoraRank, c.GlobalKUsesWq, c.WindowMode),
            Is.EqualTo((4, 4, 2, 64, true, WindowMode.ResizeToDivisible)));
        Assert.That(c.FullAttentionBlocks.ToSet().SetEquals(UltraGenLayoutPlan.ReferenceFullBlocks));
        Assert.That(c.DecomposedBlocks, Is.EqualTo(Enumerable.Range(3, 24)));
        Assert.That(c.DecomposedBlockCount, Is.EqualTo(24));
    }

    [Test]
    public void Small_presets_are_valid_and_named()
    {
        Assert.That(ModelConfig.Preset("TINY"), Is.SameAs(ModelConfig.Tiny));
        var tiny = ModelConfig.Tiny.Validate();
        Assert.That((tiny.Dim, tiny.Heads, tiny.HeadDim, tiny.FfnDim, tiny.Layers, tiny.TextDim, tiny.TextLen, tiny.FreqDim, tiny.LoraRank),
            Is.EqualTo((48, 4, 12, 96, 4, 32, 8, 32, 4)));
        Assert.That(tiny.FullAttentionBlocks, Is.EqualTo(BlockSet.Of(0, 3)));
        Assert.That(tiny.DecomposedBlocks, Is.EqualTo(new[] { 1, 2 }), "one odd and one even decomposed block");
        var mini = ModelConfig.Mini.Validate();
        Assert.That((mini.Dim, mini.Heads, mini.HeadDim), Is.EqualTo((128, 4, 32)));
        var error = Assert.Throws<ModelConfigException>(() => ModelConfig.Preset("wan-14b"))!;
        Assert.That(error.Message, Does.Contain("wan-14b").And.Contain("tiny").And.Contain("wan2.1-t2v-1.3b"));
    }

    [Test]
    public void Layer_plans()
    {
        var wan = ModelConfig.Wan21T2V13B;
        Assert.That(wan.WithAllDecomposed().DecomposedBlockCount, Is.EqualTo(30));
        Assert.That(wan.WithAllFull().DecomposedBlockCount, Is.Zero);
        Assert.That(wan.WithAllDecomposed().WithReferencePlan(), Is.EqualTo(wan));
        Assert.That(ModelConfig.Tiny.IsDecomposed(0), Is.False);
        Assert.That(ModelConfig.Tiny.IsDecomposed(1), Is.True);
        Assert.Throws<ArgumentOutOfRangeException>(() => ModelConfig.Tiny.IsDecomposed(4));
        Assert.That(BlockSet.Reference(4), Is.EqualTo(BlockSet.All(4)), "with 4 layers the first and last three cover everything");
        Assert.That(BlockSet.Reference(8), Is.EqualTo(BlockSet.Of(0, 1, 2, 5, 6, 7)));
    }

    [Test]
    public void Value_equality_is_structural()
    {
        var copy = ModelConfig.Tiny with { FullAttentionBlocks = BlockSet.Parse("3,0") };
        Assert.That(copy, Is.EqualTo(ModelConfig.Tiny));
        Assert.That(copy.GetHashCode(), Is.EqualTo(ModelConfig.Tiny.GetHashCode()));
        Assert.That(ModelConfig.Tiny with { FullAttentionBlocks = BlockSet.Empty }, Is.Not.EqualTo(ModelConfig.Tiny));
    }

    [Test]
    public void Validation_lists_every_problem_in_one_exception()
    {
        var bad = ModelConfig.Tiny with { Dim = 50, FullAttentionBlocks = BlockSet.Of(0, 7), WindowBase = 3, LoraRank = 0 };
        var error = Assert.Throws<ModelConfigException>(() => bad.Validate())!;
        Assert.That(error.Message, Does.Contain("dim 50 is not divisible by heads 4")
            .And.Contain("block 7 is past the last block 3")
            .And.Contain("window base K must be even")
            .And.Contain("LoRA rank"));
    }

    [TestCase(36, 4, "head dim 9")]
    [TestCase(16, 4, "head dim 4")]
    [TestCase(48, 0, "heads must be >= 1")]
    public void Head_dim_must_be_even_and_at_least_6(int dim, int heads, string expected)
    {
        var error = Assert.Throws<ModelConfigException>(() => (ModelConfig.Tiny with { Dim = dim, Heads = heads }).Validate())!;
        Assert.That(error.Message, Does.Contain(expected));
    }

    [Test]
    public void Other_rules()
    {
        Assert.Throws<ModelConfigException>(() => (ModelConfig.Tiny with { FreqDim = 31 }).Validate());
        Assert.Throws<ModelConfigException>(() => (ModelConfig.Tiny with { GlobalDown = 8 }).Validate());
        Assert.Throws<ModelConfigException>(() => (ModelConfig.Tiny with { HierarchicalDown = 4 }).Validate());
        Assert.Throws<ModelConfigException>(() => (ModelConfig.Tiny with { Eps = 0 }).Validate());
        Assert.Throws<ModelConfigException>(() => (ModelConfig.Tiny with { Patch = new PatchSize(1, 0, 2) }).Validate());
        Assert.Throws<ModelConfigException>(() => (ModelConfig.Tiny with { WindowMode = (WindowMode)7 }).Validate());
        Assert.DoesNotThrow(() => (ModelConfig.Tiny with { Dim = 24, Heads = 4 }).Validate(), "head dim 6 is the smallest");
    }

    [Test]
    public void Block_sets_parse_and_print()
    {
        Assert.That(BlockSet.Parse("0-2, 27-29"), Is.EqualTo(BlockSet.Reference(30)));
        Assert.That(BlockSet.Parse("none"), Is.EqualTo(BlockSet.Empty));
        Assert.That(BlockSet.Parse(""), Is.EqualTo(BlockSet.Empty));
        Assert.That(BlockSet.Reference(30).ToString(), Is.EqualTo("0,1,2,27,28,29"), "the full_blocks op parameter's form");
        Assert.That(BlockSet.Reference(30).ToRangeString(), Is.EqualTo("0-2, 27-29"));
        Assert.That(BlockSet.Empty.ToString(), Is.EqualTo("none"));
        Assert.That(BlockSet.FormatRanges([3, 5, 6, 7, 9]), Is.EqualTo("3, 5-7, 9"));
        Assert.Throws<FormatException>(() => BlockSet.Parse("1,x"));
        Assert.Throws<FormatException>(() => BlockSet.Parse("5-2"));
        Assert.Throws<FormatException>(() => BlockSet.Parse("-1"));
    }
}
