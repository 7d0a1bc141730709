using NUnit.Framework;
using UltraGen.Model;

namespace UltraGen.Tests.Model;

public class ParameterCatalogTests
{
    private const long UltraGenPerBlock = 11_541_888;

    [Test]
    public void Wan_1_3b_counts_are_exact_and_counting_does_not_allocate()
    {
        var config = ModelConfig.Wan21T2V13B;
        ParameterCatalog.Count(config); // warm up: static tables, JIT
        long before = GC.GetAllocatedBytesForCurrentThread();
        ParameterCounts counts = default;
        for (int i = 0; i < 10; i++) counts = ParameterCatalog.Count(config);
        var perBlock = ParameterCatalog.UltraGenPerBlock(config);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.That(allocated, Is.LessThan(256), "counting must walk the shape rules, not build the 1,881 names");
        Assert.That(counts.Base, Is.EqualTo(new GroupCount(825, 1_418_996_800)));
        Assert.That(counts.UltraGen, Is.EqualTo(new GroupCount(24 * 44, 277_005_312)));
        Assert.That(counts.UltraGen.Parameters, Is.EqualTo(24 * UltraGenPerBlock));
        Assert.That(counts.TrainableInLora, Is.EqualTo(counts.UltraGen));
        Assert.That(counts.Total.Parameters, Is.EqualTo(1_696_002_112));
        Assert.That(perBlock.UltraGen, Is.EqualTo(new GroupCount(44, UltraGenPerBlock)));
        // spec §2.1: gates 10.23M, LoRA 1.19M, convs 0.12M per block
        Assert.That(perBlock.Lora.Parameters, Is.EqualTo(6 * (64 * 1536 + 64 + 1536 * 64 + 1536)));
        Assert.That(perBlock.Gate.Parameters, Is.EqualTo(2 * (1536 * 256 + 1536 + 2 * (1536 * 1536 + 1536))));
        Assert.That(perBlock.Conv.Parameters, Is.EqualTo(1536 * (16 + 27 + 4 + 27 + 4)));
    }

    [Test]
    public void All_decomposed_plan_adds_thirty_blocks()
    {
        var counts = ParameterCatalog.Count(ModelConfig.Wan21T2V13B.WithAllDecomposed());
        Assert.That(counts.UltraGen, Is.EqualTo(new GroupCount(30 * 44, 30 * UltraGenPerBlock)));
        Assert.That(counts.Base, Is.EqualTo(new GroupCount(825, 1_418_996_800)));
        Assert.That(ParameterCatalog.Count(ModelConfig.Wan21T2V13B.WithAllFull()).UltraGen, Is.EqualTo(default(GroupCount)));
    }

    [Test]
    public void List_agrees_with_count_and_has_the_spec_names_and_shapes()
    {
        var config = ModelConfig.Wan21T2V13B;
        var list = ParameterCatalog.List(config);
        var counts = ParameterCatalog.Count(config);
        Assert.That(list, Has.Count.EqualTo(counts.Total.Tensors));
        Assert.That(list.Select(s => s.Name).Distinct().Count(), Is.EqualTo(list.Count));
        Assert.That(list.Where(s => s.IsBase).Sum(s => s.ElementCount), Is.EqualTo(counts.Base.Parameters));
        Assert.That(list.Where(s => s.IsUltraGen).Sum(s => s.ElementCount), Is.EqualTo(counts.UltraGen.Parameters));
        Assert.That(list.All(s => s.TrainableInLora == s.IsUltraGen));

        var byName = list.ToDictionary(s => s.Name);
        void Expect(string name, params int[] shape) =>
            Assert.That(byName[name].Shape, Is.EqualTo(shape), name);
        Expect("patch_embedding.weight", 1536, 16, 1, 2, 2);
        Expect("patch_embedding.bias", 1536);
        Expect("text_embedding.0.weight", 1536, 4096);
        Expect("text_embedding.2.weight", 1536, 1536);
        Expect("time_embedding.0.weight", 1536, 256);
        Expect("time_projection.1.weight", 9216, 1536);
        Expect("time_projection.1.bias", 9216);
        Expect("blocks.0.modulation", 1, 6, 1536);
        Expect("blocks.29.self_attn.norm_k.weight", 1536);
        Expect("blocks.7.cross_attn.o.weight", 1536, 1536);
        Expect("blocks.7.norm3.bias", 1536);
        Expect("blocks.7.ffn.0.weight", 8960, 1536);
        Expect("blocks.7.ffn.2.weight", 1536, 8960);
        Expect("head.head.weight", 64, 1536);
        Expect("head.head.bias", 64);
        Expect("head.modulation", 1, 2, 1536);
        Expect("blocks.3.self_attn.q_lora_1.lora_A.weight", 64, 1536);
        Expect("blocks.3.self_attn.q_lora_1.lora_A.bias", 64);
        Expect("blocks.26.self_attn.v_lora_2.lora_B.weight", 1536, 64);
        Expect("blocks.26.self_attn.v_lora_2.lora_B.bias", 1536);
        Expect("blocks.4.self_attn.alpha_time_embedding.0.weight", 1536, 256);
        Expect("blocks.4.self_attn.alpha_time_embedding2.2.weight", 1536, 1536);
        Expect("blocks.4.self_attn.alpha_time_projection2.1.weight", 1536, 1536);
        Expect("blocks.4.self_attn.downsample_conv.weight", 1536, 1, 4, 4);
        Expect("blocks.4.self_attn.upsample_conv.weight", 1536, 1, 3, 3, 3);
        Expect("blocks.4.self_attn.downsample_conv_hierachcal.weight", 1536, 1, 2, 2);
        Expect("blocks.4.self_attn.upsample_conv_hierachcal.weight", 1536, 1, 3, 3, 3);

        // 27 base tensors per block (spec §2.3), 44 UltraGen ones in blocks 3–26 only.
        for (int block = 0; block < 30; block++)
        {
            Assert.That(list.Count(s => s.Block == block && s.IsBase), Is.EqualTo(27));
            Assert.That(list.Count(s => s.Block == block && s.IsUltraGen), Is.EqualTo(block is >= 3 and <= 26 ? 44 : 0), $"block {block}");
        }
        Assert.That(list[0].Name, Is.EqualTo("patch_embedding.weight"));
        Assert.That(list[^1].Name, Is.EqualTo("head.head.bias"));
    }

    [Test]
    public void Init_rules_follow_the_released_loader()
    {
        var byName = ParameterCatalog.List(ModelConfig.Tiny).ToDictionary(s => s.Name);
        Assert.That(byName["blocks.0.ffn.0.weight"].Init, Is.EqualTo(ParameterInit.Pretrained));
        Assert.That(byName["blocks.1.self_attn.downsample_conv.weight"].Init, Is.EqualTo(ParameterInit.ConvAverage));
        Assert.That(byName["blocks.1.self_attn.upsample_conv_hierachcal.bias"].Init, Is.EqualTo(ParameterInit.Zero));
        Assert.That(byName["blocks.1.self_attn.k_lora_2.lora_A.weight"].Init, Is.EqualTo(ParameterInit.KaimingUniform));
        Assert.That(byName["blocks.1.self_attn.k_lora_2.lora_B.weight"].Init, Is.EqualTo(ParameterInit.KaimingUniform),
            "the reference's lora_B zero branch is unreachable for weights");
        Assert.That(byName["blocks.1.self_attn.k_lora_2.lora_B.bias"].Init, Is.EqualTo(ParameterInit.Zero));
        Assert.That(byName["blocks.2.self_attn.alpha_time_embedding2.0.weight"].Init, Is.EqualTo(ParameterInit.KaimingUniform));
        Assert.That(byName["blocks.2.self_attn.alpha_time_projection.1.weight"].Init, Is.EqualTo(ParameterInit.Zero));
        Assert.That(byName["blocks.2.self_attn.alpha_time_projection2.1.bias"].Init, Is.EqualTo(ParameterInit.Zero));
        Assert.That(byName["blocks.2.self_attn.q_lora_1.lora_A.weight"].Group, Is.EqualTo(ParameterGroup.Lora));
        Assert.That(byName["blocks.2.self_attn.alpha_time_embedding.2.bias"].Group, Is.EqualTo(ParameterGroup.Gate));
        Assert.That(byName["blocks.2.self_attn.upsample_conv.weight"].Group, Is.EqualTo(ParameterGroup.Conv));
    }

    [Test]
    public void Optional_norms_follow_the_switches()
    {
        var plain = ParameterCatalog.Count(ModelConfig.Tiny);
        var noQk = ParameterCatalog.Count(ModelConfig.Tiny with { QkNorm = false });
        var noCross = ParameterCatalog.Count(ModelConfig.Tiny with { CrossAttnNorm = false });
        Assert.That(plain.Base.Tensors - noQk.Base.Tensors, Is.EqualTo(4 * 4), "norm_q/norm_k in self and cross attention of 4 blocks");
        Assert.That(plain.Base.Parameters - noCross.Base.Parameters, Is.EqualTo(4 * 2 * 48));
        Assert.That(ParameterCatalog.List(ModelConfig.Tiny with { QkNorm = false }).Any(s => s.Name.Contains("norm_q")), Is.False);
    }

    [TestCase("blocks.12.ffn.0.weight", true, 12, "ffn.0.weight")]
    [TestCase("blocks.0.modulation", true, 0, "modulation")]
    [TestCase("blocks.01.modulation", false, -1, "")]
    [TestCase("blocks..x", false, -1, "")]
    [TestCase("blocks.-1.x", false, -1, "")]
    [TestCase("head.head.weight", false, -1, "")]
    public void Block_names_parse(string name, bool ok, int block, string rest)
    {
        Assert.That(ParameterCatalog.TryParseBlockName(name, out int b, out var r), Is.EqualTo(ok));
        Assert.That((b, r), Is.EqualTo((block, rest)));
    }

    [Test]
    public void UltraGen_names_are_recognised()
    {
        foreach (var spec in ParameterCatalog.List(ModelConfig.Tiny))
            Assert.That(ParameterCatalog.IsUltraGenName(spec.Name), Is.EqualTo(spec.IsUltraGen), spec.Name);
    }
}
