using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using UltraGen.Core;
using UltraGen.Core.Layout;
using Tensor = UltraGen.Core.Tensor;
using static UltraGen.Cpu.CpuFlashAttention;

namespace UltraGen.Cpu;

/// <summary>
/// Flash-style windowed attention on the CPU: the f32 twin of <c>WindowAttentionOp</c> (softmax(q̃·k̃ᵀ/√d)·v inside the
/// windows of a <see cref="WindowLayout"/>, window-local 3-D RoPE on q and k, no mask). Tensors are host f32, channels-last
/// (B, T, H, W, heads·headDim).
/// </summary>
/// <remarks>
/// <para><b>Work items.</b> One item is a (batch, window, head). Its K rows are gathered by <see cref="WindowLayout.TokenIndex"/>,
/// rotated once (per-axis cos/sin tables built once per call) and stored as key tiles of <see cref="TileKeys"/> keys,
/// transposed (head dim × keys) so that q·kᵀ is a broadcast-FMA product; V is gathered into rows. Head dims are padded with
/// zeros to a multiple of <see cref="ColumnPad"/>, tiles of keys to a multiple of <see cref="ColumnPad"/>, so the inner
/// kernel never needs a tail; padded scores are masked to −∞ before the softmax.</para>
/// <para><b>Forward.</b> Parallel over (item, query tile of <see cref="TileRows"/> rows): the q tile is gathered, rotated and
/// pre-scaled by 1/√d, then each key tile gives S = Q·Kᵀ, an online-softmax update (running max and sum per row, rescaling
/// the f32 accumulator) and O += P·V. No tokens × tokens matrix exists anywhere: the largest temporary is one
/// <see cref="TileRows"/> × <see cref="TileKeys"/> score tile per worker.</para>
/// <para><b>Backward.</b> Recomputes each row's log-sum-exp and D = rowsum(dO ⊙ O) (O recomputed), then walks key tiles:
/// P = exp(S − lse), dV += Pᵀ·dO, dP = dO·Vᵀ, dS = P ⊙ (dP − D), dK̃ += dSᵀ·Q̃·scale, dQ̃ += dS·K̃ (·scale at the end).
/// Key tiles of one item are split into chunks when there are fewer items than twice the cores; each chunk owns its dK/dV
/// rows and accumulates a private dQ that is summed at the end. dq and dk are rotated back with the inverse RoPE.</para>
/// </remarks>
public static unsafe class CpuWindowAttention
{
    /// <summary>o = attention(q, k, v) for every batch, window and head (every element of <paramref name="o"/> is written).</summary>
    public static void Forward(Tensor q, Tensor k, Tensor v, Tensor o, int heads, WindowLayout layout, bool rope, double ropeTheta)
    {
        var plan = Plan.Create(q, heads, layout, rope, ropeTheta, ("k", k), ("v", v), ("o", o));
        float* qp = Data(q), kp = Data(k), vp = Data(v), op = Data(o);
        int dp = plan.PaddedDim;
        using var keysT = new NativeBuffer(plan.PaddedRows * dp);
        using var values = new NativeBuffer(plan.PaddedRows * dp);
        float* kt = keysT.Pointer, vn = values.Pointer;

        Parallel.For(0, plan.Items, item =>
        {
            long rows = plan.PaddedRowsOf(item) * (long)dp, at = plan.RowOffset(item) * (long)dp;
            NativeMemory.Clear(kt + at, (nuint)(rows * sizeof(float)));
            NativeMemory.Clear(vn + at, (nuint)(rows * sizeof(float)));
            plan.GatherKeysTransposed(kp, item, kt + at);
            plan.GatherRows(vp, item, vn + at, rotate: false, scale: 1f);
        });

        Parallel.For(0, plan.QueryTiles.Length, () => new Scratch(dp, backward: false), (unit, _, s) =>
        {
            var (item, i0) = plan.QueryTiles[unit];
            int n = plan.TokensOf(item), rows = Math.Min(TileRows, n - i0), paddedRows = RoundUp(rows, RowBlock);
            NativeMemory.Clear(s.Q, (nuint)(TileRows * dp * sizeof(float)));
            plan.GatherRows(qp, item, s.Q, rotate: true, scale: plan.Scale, first: i0, count: rows);
            long at = plan.RowOffset(item) * (long)dp;
            AttendTile(s, s.Q, paddedRows, kt + at, vn + at, n, dp, s.O, s.Lse);
            plan.ScatterRows(s.O, item, op, i0, rows, inverse: false, scale: 1f);
            return s;
        }, s => s.Dispose());
    }

    /// <summary>
    /// Gradients of q, k, v given dO; writes only the non-null gradient tensors (each of them entirely).
    /// </summary>
    public static void Backward(Tensor q, Tensor k, Tensor v, Tensor dO, Tensor? dq, Tensor? dk, Tensor? dv,
        int heads, WindowLayout layout, bool rope, double ropeTheta)
    {
        var plan = Plan.Create(q, heads, layout, rope, ropeTheta, ("k", k), ("v", v), ("dO", dO), ("dq", dq), ("dk", dk), ("dv", dv));
        if (dq is null && dk is null && dv is null) return;
        bool wantQ = dq is not null, wantK = dk is not null, wantV = dv is not null, wantS = wantQ || wantK;
        float* qp = Data(q), kp = Data(k), vp = Data(v), dop = Data(dO);
        int dp = plan.PaddedDim;
        long size = plan.PaddedRows * dp;

        // Key chunks per item: enough units to keep every core busy even with one window and few heads.
        int target = 2 * Environment.ProcessorCount;
        var chunks = new int[plan.Items];
        var partOffset = new long[plan.Items];
        var units = new List<(int Item, int Chunk)>();
        long partRows = 0;
        for (int item = 0; item < plan.Items; item++)
        {
            int keyTiles = CeilDiv(plan.TokensOf(item), TileKeys);
            chunks[item] = Math.Clamp(CeilDiv(target, plan.Items), 1, keyTiles);
            partOffset[item] = partRows * dp;
            if (wantQ) partRows += (chunks[item] - 1) * (long)plan.PaddedRowsOf(item);
            for (int c = 0; c < chunks[item]; c++) units.Add((item, c));
        }

        using var qs = new NativeBuffer(size);
        using var keys = new NativeBuffer(size);
        using var keysT = new NativeBuffer(size);
        using var values = new NativeBuffer(size);
        using var valuesT = new NativeBuffer(wantS ? size : 0);
        using var gradO = new NativeBuffer(size);
        using var lse = new NativeBuffer(plan.PaddedRows);
        using var rowDot = new NativeBuffer(plan.PaddedRows);
        using var gradQ = new NativeBuffer(wantQ ? size : 0);
        using var gradQParts = new NativeBuffer(partRows * dp);
        using var gradK = new NativeBuffer(wantK ? size : 0);
        using var gradV = new NativeBuffer(wantV ? size : 0);
        float* qsp = qs.Pointer, kn = keys.Pointer, kt = keysT.Pointer, vn = values.Pointer, vt = valuesT.Pointer, gop = gradO.Pointer;
        float* lsep = lse.Pointer, dotp = rowDot.Pointer, gq = gradQ.Pointer, gqParts = gradQParts.Pointer, gk = gradK.Pointer, gv = gradV.Pointer;

        // 1. Gather q̃·scale, k̃ (rows and transposed tiles), v (rows and transposed tiles) and dO per item.
        Parallel.For(0, plan.Items, item =>
        {
            long rows = plan.PaddedRowsOf(item) * (long)dp, at = plan.RowOffset(item) * (long)dp;
            nuint bytes = (nuint)(rows * sizeof(float));
            foreach (var buffer in new[] { (nint)qsp, (nint)kn, (nint)kt, (nint)vn, (nint)gop })
                NativeMemory.Clear((float*)buffer + at, bytes);
            plan.GatherRows(qp, item, qsp + at, rotate: true, scale: plan.Scale);
            plan.GatherRows(kp, item, kn + at, rotate: true, scale: 1f);
            plan.GatherKeysTransposed(kp, item, kt + at);
            plan.GatherRows(vp, item, vn + at, rotate: false, scale: 1f);
            plan.GatherRows(dop, item, gop + at, rotate: false, scale: 1f);
            if (wantS)
            {
                NativeMemory.Clear(vt + at, bytes);
                Transpose(vn + at, plan.TokensOf(item), dp, vt + at);
            }
            if (wantQ)
            {
                NativeMemory.Clear(gq + at, bytes);
                if (chunks[item] > 1) NativeMemory.Clear(gqParts + partOffset[item], (nuint)((chunks[item] - 1) * rows * sizeof(float)));
            }
            if (wantK) NativeMemory.Clear(gk + at, bytes);
            if (wantV) NativeMemory.Clear(gv + at, bytes);
        });

        // 2. Recompute the forward per query tile: the row log-sum-exp and D = rowsum(dO ⊙ O).
        Parallel.For(0, plan.QueryTiles.Length, () => new Scratch(dp, backward: false), (unit, _, s) =>
        {
            var (item, i0) = plan.QueryTiles[unit];
            int n = plan.TokensOf(item), paddedRows = RoundUp(Math.Min(TileRows, n - i0), RowBlock);
            long row0 = plan.RowOffset(item) + i0, at = plan.RowOffset(item) * (long)dp;
            AttendTile(s, qsp + row0 * dp, paddedRows, kt + at, vn + at, n, dp, s.O, lsep + row0);
            for (int r = 0; r < paddedRows; r++)
                dotp[row0 + r] = TensorPrimitives.Dot(new ReadOnlySpan<float>(gop + (row0 + r) * dp, dp), new ReadOnlySpan<float>(s.O + r * dp, dp));
            return s;
        }, s => s.Dispose());

        // 3. Walk key tiles: dV, dK for the chunk's own keys, dQ into the chunk's private accumulator.
        var unitList = units.ToArray();
        Parallel.For(0, unitList.Length, () => new Scratch(dp, backward: true), (u, _, s) =>
        {
            var (item, chunk) = unitList[u];
            int n = plan.TokensOf(item), keyTiles = CeilDiv(n, TileKeys), pr = plan.PaddedRowsOf(item);
            int firstTile = (int)((long)chunk * keyTiles / chunks[item]), endTile = (int)((long)(chunk + 1) * keyTiles / chunks[item]);
            long at = plan.RowOffset(item) * (long)dp, row0 = plan.RowOffset(item);
            float* dqTarget = !wantQ ? null : chunk == 0 ? gq + at : gqParts + partOffset[item] + (chunk - 1) * (long)pr * dp;
            for (int tile = firstTile; tile < endTile; tile++)
            {
                int j0 = tile * TileKeys, w = Math.Min(TileKeys, n - j0), wp = RoundUp(w, ColumnPad);
                if (wantV) NativeMemory.Clear(s.GradV, (nuint)(TileKeys * dp * sizeof(float)));
                if (wantK) NativeMemory.Clear(s.GradK, (nuint)(TileKeys * dp * sizeof(float)));
                for (int i0 = 0; i0 < n; i0 += TileRows)
                {
                    int mr = RoundUp(Math.Min(TileRows, n - i0), RowBlock);
                    float* qTile = qsp + at + (long)i0 * dp, doTile = gop + at + (long)i0 * dp;
                    BackwardTile(s, qTile, doTile, mr, lsep + row0 + i0, dotp + row0 + i0, kt + at + (long)j0 * dp,
                        kn + at + (long)j0 * dp, vt + at + (long)j0 * dp, w, dp,
                        wantQ ? dqTarget + (long)i0 * dp : null, wantK ? s.GradK : null, wantV ? s.GradV : null);
                }
                if (wantV) Buffer.MemoryCopy(s.GradV, gv + at + (long)j0 * dp, (long)w * dp * sizeof(float), (long)w * dp * sizeof(float));
                if (wantK) Buffer.MemoryCopy(s.GradK, gk + at + (long)j0 * dp, (long)w * dp * sizeof(float), (long)w * dp * sizeof(float));
            }
            return s;
        }, s => s.Dispose());

        // 4. Sum dQ chunks, rotate dq and dk back, scatter.
        float* dqp = wantQ ? Data(dq!) : null, dkp = wantK ? Data(dk!) : null, dvp = wantV ? Data(dv!) : null;
        Parallel.For(0, plan.QueryTiles.Length, unit =>
        {
            var (item, i0) = plan.QueryTiles[unit];
            int rows = Math.Min(TileRows, plan.TokensOf(item) - i0), pr = plan.PaddedRowsOf(item);
            long tileAt = (plan.RowOffset(item) + i0) * dp;
            if (wantQ)
            {
                float* dqTile = gq + tileAt;
                for (int c = 1; c < chunks[item]; c++)
                {
                    float* part = gqParts + partOffset[item] + ((c - 1) * (long)pr + i0) * dp;
                    var sum = new Span<float>(dqTile, rows * dp);
                    TensorPrimitives.Add(sum, new ReadOnlySpan<float>(part, rows * dp), sum);
                }
                plan.ScatterRows(dqTile, item, dqp, i0, rows, inverse: true, scale: plan.Scale);
            }
            if (wantK) plan.ScatterRows(gk + tileAt, item, dkp, i0, rows, inverse: true, scale: 1f);
            if (wantV) plan.ScatterRows(gv + tileAt, item, dvp, i0, rows, inverse: false, scale: 1f);
        });
    }

    private static float* Data(Tensor t) => (float*)((HostStorage)t.Storage).Pointer;

    /// <summary>The sizes of one call, the item → buffer offsets, the query tiles and the RoPE tables.</summary>
    private sealed class Plan
    {
        private readonly WindowLayout _layout;
        private readonly int[] _windowTokens;
        private readonly long[] _rowOffset;
        private readonly Rope? _rope;

        public int Heads { get; }
        public int HeadDim { get; }
        public int PaddedDim { get; }
        public int Channels { get; }
        public long TokensPerSample { get; }
        public int Items { get; }
        public long PaddedRows { get; }
        public float Scale { get; }
        public (int Item, int Row)[] QueryTiles { get; }

        private Plan(Tensor q, int heads, WindowLayout layout, bool rope, double theta)
        {
            _layout = layout;
            Heads = heads;
            Channels = q.Dim(4);
            HeadDim = Channels / heads;
            PaddedDim = RoundUp(HeadDim, ColumnPad);
            TokensPerSample = (long)layout.Grid.T * layout.Grid.H * layout.Grid.W;
            Scale = (float)(1.0 / Math.Sqrt(HeadDim));
            _windowTokens = new int[layout.WindowCount];
            for (int w = 0; w < layout.WindowCount; w++) _windowTokens[w] = layout.TokensInWindow(w);
            Items = checked(q.Dim(0) * layout.WindowCount * heads);
            _rowOffset = new long[Items];
            var tiles = new List<(int, int)>();
            long rows = 0;
            for (int item = 0; item < Items; item++)
            {
                _rowOffset[item] = rows;
                rows += PaddedRowsOf(item);
                for (int i0 = 0; i0 < TokensOf(item); i0 += TileRows) tiles.Add((item, i0));
            }
            PaddedRows = rows;
            QueryTiles = tiles.ToArray();
            _rope = rope ? new Rope(HeadDim, layout.Grid.T, layout.MaxWindowRows, layout.MaxWindowCols, theta) : null;
        }

        public static Plan Create(Tensor q, int heads, WindowLayout layout, bool rope, double theta, params (string Name, Tensor? Tensor)[] others)
        {
            CheckF32Host(q, "q");
            if (q.Rank != 5)
                throw new ShapeMismatchException($"cpu window_attention: q must be (B, T, H, W, heads·headDim), got {Shape.Format(q.ShapeArray)}");
            foreach (var (name, tensor) in others)
            {
                if (tensor is null) continue;
                CheckF32Host(tensor, name);
                if (!tensor.Shape.SequenceEqual(q.Shape))
                    throw new ShapeMismatchException(
                        $"cpu window_attention: {name} {Shape.Format(tensor.ShapeArray)} must match q {Shape.Format(q.ShapeArray)}");
            }
            var grid = layout.Grid;
            if (grid.T != q.Dim(1) || grid.H != q.Dim(2) || grid.W != q.Dim(3))
                throw new ShapeMismatchException($"cpu window_attention: layout grid {grid} does not match q {Shape.Format(q.ShapeArray)}");
            if (heads < 1 || q.Dim(4) % heads != 0)
                throw new ShapeMismatchException($"cpu window_attention: channel dim {q.Dim(4)} is not divisible by heads={heads}");
            int headDim = q.Dim(4) / heads;
            if (rope && (headDim < 6 || headDim % 2 != 0))
                throw new UnsupportedConfigurationException(
                    $"cpu window_attention: 3-D RoPE needs an even head dim of at least 6, got head dim {headDim}");
            return new Plan(q, heads, layout, rope, theta);
        }

        private static void CheckF32Host(Tensor t, string name)
        {
            if (t.DType != DType.F32 || !t.IsHost)
                throw new UnsupportedConfigurationException($"cpu window_attention: {name} must be a host f32 tensor, got {t}");
        }

        private int WindowOf(int item) => item / Heads % _layout.WindowCount;

        public int TokensOf(int item) => _windowTokens[WindowOf(item)];

        public int PaddedRowsOf(int item) => RoundUp(TokensOf(item), TileKeys);

        public long RowOffset(int item) => _rowOffset[item];

        /// <summary>Flat offset of the head slice of the i-th token of the item's window in a (B, T, H, W, C) tensor.</summary>
        private long TensorOffset(int item, int i, out int window)
        {
            int head = item % Heads, bw = item / Heads;
            window = bw % _layout.WindowCount;
            int b = bw / _layout.WindowCount;
            return (b * TokensPerSample + _layout.TokenIndex(window, i)) * Channels + (long)head * HeadDim;
        }

        /// <summary>
        /// Copies rows [first, first+count) of the item (all rows when count is −1) from <paramref name="source"/> into
        /// <paramref name="destination"/> (row stride PaddedDim, row 0 = token first), rotated by RoPE when asked, times scale.
        /// </summary>
        public void GatherRows(float* source, int item, float* destination, bool rotate, float scale, int first = 0, int count = -1)
        {
            if (count < 0) count = TokensOf(item) - first;
            int d = HeadDim;
            for (int r = 0; r < count; r++)
            {
                int i = first + r;
                long offset = TensorOffset(item, i, out int window);
                float* dst = destination + (long)r * PaddedDim;
                if (rotate && _rope is not null)
                {
                    var (t, row, col) = _layout.LocalCoordinates(window, i);
                    _rope.Rotate(source + offset, dst, t, row, col, inverse: false, scale);
                }
                else if (scale == 1f) Buffer.MemoryCopy(source + offset, dst, d * sizeof(float), d * sizeof(float));
                else TensorPrimitives.Multiply(new ReadOnlySpan<float>(source + offset, d), scale, new Span<float>(dst, d));
            }
        }

        /// <summary>Gathers the item's k rows, rotated, into transposed key tiles ([PaddedDim][TileKeys] per tile).</summary>
        public void GatherKeysTransposed(float* source, int item, float* tiles)
        {
            int n = TokensOf(item), d = HeadDim;
            Span<float> row = d <= 512 ? stackalloc float[d] : new float[d];
            fixed (float* tmp = row)
                for (int i = 0; i < n; i++)
                {
                    long offset = TensorOffset(item, i, out int window);
                    float* src = source + offset;
                    if (_rope is not null)
                    {
                        var (t, r, c) = _layout.LocalCoordinates(window, i);
                        _rope.Rotate(src, tmp, t, r, c, inverse: false, 1f);
                        src = tmp;
                    }
                    float* dst = tiles + (long)(i / TileKeys) * TileKeys * PaddedDim + i % TileKeys;
                    for (int ch = 0; ch < d; ch++) dst[ch * TileKeys] = src[ch];
                }
        }

        /// <summary>
        /// Writes rows (stride PaddedDim) for tokens [first, first+count) of the item into <paramref name="target"/>, each
        /// times scale and rotated back (inverse RoPE) when asked.
        /// </summary>
        public void ScatterRows(float* rows, int item, float* target, int first, int count, bool inverse, float scale)
        {
            int d = HeadDim;
            for (int r = 0; r < count; r++)
            {
                int i = first + r;
                long offset = TensorOffset(item, i, out int window);
                float* src = rows + (long)r * PaddedDim;
                if (inverse && _rope is not null)
                {
                    var (t, row, col) = _layout.LocalCoordinates(window, i);
                    _rope.Rotate(src, target + offset, t, row, col, inverse: true, scale);
                }
                else if (scale == 1f) Buffer.MemoryCopy(src, target + offset, d * sizeof(float), d * sizeof(float));
                else TensorPrimitives.Multiply(new ReadOnlySpan<float>(src, d), scale, new Span<float>(target + offset, d));
            }
        }
    }

    /// <summary>
    /// Wan's 3-D RoPE (spec §1.5, as <c>Rope3d</c>): cos/sin per axis position and pair, built once per call in float64.
    /// Axis slices: time d − 4·⌊d/6⌋, height 2·⌊d/6⌋, width 2·⌊d/6⌋; pair j of an axis of dA dims turns by pos·θ^(−2j/dA).
    /// </summary>
    private sealed class Rope
    {
        private readonly int[] _start, _pairs;
        private readonly double[][] _cos, _sin;

        public Rope(int headDim, int frames, int rows, int cols, double theta)
        {
            int spatial = 2 * (headDim / 6), time = headDim - 2 * spatial;
            _start = [0, time, time + spatial];
            _pairs = [time / 2, spatial / 2, spatial / 2];
            int[] positions = [frames, rows, cols];
            int[] dims = [time, spatial, spatial];
            _cos = new double[3][];
            _sin = new double[3][];
            for (int axis = 0; axis < 3; axis++)
            {
                int pairs = _pairs[axis];
                _cos[axis] = new double[positions[axis] * pairs];
                _sin[axis] = new double[positions[axis] * pairs];
                for (int j = 0; j < pairs; j++)
                {
                    double inverseFrequency = 1.0 / Math.Pow(theta, (double)(2 * j) / dims[axis]);
                    for (int pos = 0; pos < positions[axis]; pos++)
                    {
                        double angle = pos * inverseFrequency;
                        _cos[axis][pos * pairs + j] = Math.Cos(angle);
                        _sin[axis][pos * pairs + j] = Math.Sin(angle);
                    }
                }
            }
        }

        /// <summary>dst = scale·R(t, row, col)·src (or scale·R⁻¹·src); src and dst may be the same row.</summary>
        public void Rotate(float* src, float* dst, int t, int row, int col, bool inverse, float scale)
        {
            double sign = inverse ? -1.0 : 1.0;
            RotateAxis(src, dst, 0, t, sign, scale);
            RotateAxis(src, dst, 1, row, sign, scale);
            RotateAxis(src, dst, 2, col, sign, scale);
        }

        private void RotateAxis(float* src, float* dst, int axis, int position, double sign, double scale)
        {
            int pairs = _pairs[axis];
            float* x = src + _start[axis], y = dst + _start[axis];
            double[] cosTable = _cos[axis], sinTable = _sin[axis];
            int at = position * pairs;
            for (int j = 0; j < pairs; j++)
            {
                double cos = cosTable[at + j] * scale, sin = sign * sinTable[at + j] * scale;
                double x0 = x[2 * j], x1 = x[2 * j + 1];
                y[2 * j] = (float)(x0 * cos - x1 * sin);
                y[2 * j + 1] = (float)(x0 * sin + x1 * cos);
            }
        }
    }
}
