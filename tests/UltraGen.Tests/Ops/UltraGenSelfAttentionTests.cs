using NUnit.Framework;
using UltraGen.Core;
using UltraGen.Core.Layout;
using UltraGen.Ops;
using UltraGen.Tests.Harness;

namespace UltraGen.Tests.Ops;

/// <summary>Properties of the composite UltraGen self-attention that the harness's generic checks do not pin down.</summary>
[TestFixture]
public class UltraGenSelfAttentionTests
{
    private static readonly UltraGenSelfAttentionOp s_op = new();

    private static (RefArgs Inputs, OpParams Params) Example(string caseName, int seed)
    {
        var opCase = s_op.Cases().Single(c => c.Name == caseName);
        return (OpRunner.RandomInputs(opCase, new Random(seed)), opCase.Params);
    }

    private static double[] Run(RefArgs inputs, OpParams parameters) => OpRunner.Forward(s_op, inputs, parameters).Get("y").Data;

    [Test]
    public void A_full_block_is_wan_self_attention()
    {
        var (inputs, parameters) = Example("full_block0", OpHarness.NewSeed());
        var wan = WanSelfAttentionOp.Forward(inputs, new Grid3(2, 3, 4), heads: 2, eps: 1e-6);
        Assert.That(Run(inputs, parameters), Is.EqualTo(wan.Data).Within(1e-12));
    }

    [Test]
    public void Global_k_uses_wq_only_matters_when_wq_differs_from_wk()
    {
        var (inputs, parameters) = Example("even_block4_T2_8x8", OpHarness.NewSeed());
        var compatible = Run(inputs, parameters.With("k_uses_wq", true));
        var fixedK = Run(inputs, parameters.With("k_uses_wq", false));
        Assert.That(OpHarness.RelativeError(compatible, fixedK), Is.GreaterThan(1e-3), "the switch must change the result");

        inputs["k.weight"] = inputs.Get("q.weight").Clone();
        inputs["k.bias"] = inputs.Get("q.bias").Clone();
        Assert.That(Run(inputs, parameters.With("k_uses_wq", true)),
            Is.EqualTo(Run(inputs, parameters.With("k_uses_wq", false))).Within(1e-12));
    }

    [Test]
    public void Block_parity_picks_the_windows()
    {
        var (inputs, parameters) = Example("even_block4_T2_8x8", OpHarness.NewSeed());
        var block4 = Run(inputs, parameters.With("block", 4));
        Assert.That(Run(inputs, parameters.With("block", 10)), Is.EqualTo(block4).Within(1e-12), "same parity, same layer math");
        Assert.That(OpHarness.RelativeError(Run(inputs, parameters.With("block", 5)), block4), Is.GreaterThan(1e-3));
    }

    [Test]
    public void Ragged_and_resize_modes_agree_when_every_grid_divides()
    {
        // Even block on 8×8: local 4×4 windows of 2×2, hierarchical 2×2 windows on 4×4; nothing is resized.
        var (inputs, parameters) = Example("even_block4_T2_8x8", OpHarness.NewSeed());
        Assert.That(Run(inputs, parameters.With("ragged", true)), Is.EqualTo(Run(inputs, parameters.With("ragged", false))).Within(1e-12));
    }

    [Test]
    public void Fully_closed_gates_leave_only_the_local_branch()
    {
        // Projection bias +40 saturates the sigmoids: α = β = 1, so y = W_o·local + b_o, which is
        // wan-style attention restricted to the local windows. Check against window_attention built by hand.
        var (inputs, parameters) = Example("even_block4_T2_8x8", OpHarness.NewSeed());
        foreach (var name in new[] { "alpha_time_projection.1", "alpha_time_projection2.1" })
        {
            Array.Clear(inputs.Get(name + ".weight").Data);
            Array.Fill(inputs.Get(name + ".bias").Data, 40.0);
        }
        var x = inputs.Get("x");
        var grid = new Grid3(2, 8, 8);
        var q = RmsNormOp.Forward(LinearOp.Forward(x, inputs.Get("q.weight"), inputs.Get("q.bias")), inputs.Get("norm_q.weight"), 1e-6);
        var k = RmsNormOp.Forward(LinearOp.Forward(x, inputs.Get("k.weight"), inputs.Get("k.bias")), inputs.Get("norm_k.weight"), 1e-6);
        var v = LinearOp.Forward(x, inputs.Get("v.weight"), inputs.Get("v.bias"));
        int[] video = [1, 2, 8, 8, 12];
        var local = WindowAttentionOp.Forward(q.Reshape(video), k.Reshape(video), v.Reshape(video), 2, WindowLayout.Divisible(grid, 4));
        var expected = LinearOp.Forward(local.Reshape(1, 128, 12), inputs.Get("o.weight"), inputs.Get("o.bias"));
        Assert.That(OpHarness.RelativeError(Run(inputs, parameters), expected.Data), Is.LessThan(1e-12));
    }

    [Test]
    public void A_decomposed_block_lists_missing_tensors()
    {
        var (inputs, parameters) = Example("even_block4_T2_8x8", 1);
        inputs.Remove("q_lora_2.lora_A.weight");
        inputs.Remove("upsample_conv.bias");
        var error = Assert.Throws<ShapeMismatchException>(() => OpRunner.Forward(s_op, inputs, parameters))!;
        Assert.That(error.Message, Does.Contain("q_lora_2.lora_A.weight").And.Contain("upsample_conv.bias"));
    }

    [Test]
    public void A_full_block_rejects_ultragen_tensors()
    {
        var (inputs, parameters) = Example("even_block4_T2_8x8", 1);
        var error = Assert.Throws<ShapeMismatchException>(() => OpRunner.Forward(s_op, inputs, parameters.With("block", 0)))!;
        Assert.That(error.Message, Does.Contain("keeps full attention"));
    }

    [Test]
    public void All_decomposed_plan_decomposes_block_0()
    {
        var (inputs, parameters) = Example("even_block4_T2_8x8", 1);
        Assert.DoesNotThrow(() => OpRunner.Forward(s_op, inputs, parameters.With("block", 0).With("full_blocks", "none")));
    }
}
