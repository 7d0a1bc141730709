using ILGPU;
using ILGPU.Runtime;

namespace UltraGen.Ilgpu;

/// <summary>
/// Kernel argument of <see cref="IlgpuWindowAttention"/> (public only because ILGPU's CPU backend emits kernel wrappers into a
/// separate dynamic assembly). Scalars shared by every window-attention kernel launch: the grid, the window split, the head geometry, the tile sizes
/// and the RoPE table geometry. Passed by value as one kernel argument.
/// </summary>
public struct WindowAttentionParams
{
    /// <summary>Grid T, H, W and windows per side n.</summary>
    public int T, H, W, N;

    /// <summary>Heads, head dim and channels (= heads·headDim).</summary>
    public int Heads, HeadDim, Channels;

    /// <summary>T·H·W: tokens of one batch sample.</summary>
    public long TokensPerSample;

    /// <summary>Query rows (Br) and key rows (Bc) per tile, and tiles per window of the kernel's own (grid) dimension.</summary>
    public int Br, Bc, Tiles;

    /// <summary>1 when RoPE is applied.</summary>
    public int Rope;

    /// <summary>Rotation pairs of the time axis and of the height axis (the width axis has the rest).</summary>
    public int PairsT, PairsH;

    /// <summary>1/√headDim.</summary>
    public float Scale;

    /// <summary>Forward: 1 when the per-row log-sum-exp is written. Backward: 1 when dk (dK/dV kernel) or dq (dQ kernel) is written.</summary>
    public int FlagA;

    /// <summary>Backward dK/dV kernel: 1 when dv is written.</summary>
    public int FlagB;
}

/// <summary>Bounds of one window on the grid.</summary>
internal struct WindowBox
{
    public int RowStart, RowCount, ColStart, ColCount, Tokens;
}

/// <summary>One window token: its element offset (head 0) in the channels-last tensors, its slot (b·T·H·W + token) and local coordinates.</summary>
internal struct TokenSite
{
    public long Offset;
    public long Slot;
    public int T, Row, Col;
}

/// <summary>
/// The ILGPU kernels of <see cref="IlgpuWindowAttention"/>. Explicitly grouped: one group per (batch·window, head, tile); every
/// thread of a group walks the tile's elements with a stride of the group size, so any group size works (the CPU
/// accelerator's 16 as well as 128 on a GPU). All tiles live in one dynamic shared-memory block laid out by the host.
/// Scores are kept in the scaled domain: q̃ is multiplied by 1/√d on load; the row statistics m (running max) and l (sum)
/// are in those units.
/// </summary>
internal static class IlgpuWindowAttentionKernels
{
    /// <summary>
    /// e^x in f32 from plain arithmetic, so the kernels need no math intrinsics (ILGPU's PTX backend has no exp without
    /// <c>EnableAlgorithms</c> or libdevice): x = n·ln2 + r with |r| ≤ ln2/2 (Cody–Waite split of ln2), e^r by its degree-7
    /// Taylor polynomial (truncation below 1e-8 relative), 2^n built from the exponent bits. x below −87 gives 0 (also −∞).
    /// </summary>
    internal static float Exp(float x)
    {
        if (!(x > -87f)) return 0f;
        if (x > 88f) x = 88f;
        float scaled = x * 1.44269504f; // log2(e)
        int n = (int)(scaled + (scaled >= 0f ? 0.5f : -0.5f));
        float r = x - n * 0.693145752f; // ln2, high part (exact in f32 for |n| ≤ 128)
        r -= n * 1.42860677e-6f;         // ln2, low part
        float poly = 1f / 5040f;
        poly = poly * r + 1f / 720f;
        poly = poly * r + 1f / 120f;
        poly = poly * r + 1f / 24f;
        poly = poly * r + 1f / 6f;
        poly = poly * r + 0.5f;
        poly = poly * r + 1f;
        poly = poly * r + 1f;
        return poly * Interop.IntAsFloat((uint)(n + 127) << 23);
    }

    /// <summary>Window g = windowRow·n + windowCol; row r covers [⌊r·H/n⌋, ⌊(r+1)·H/n⌋), likewise for columns.</summary>
    private static WindowBox Box(WindowAttentionParams p, int window)
    {
        int windowRow = window / p.N;
        int windowCol = window - windowRow * p.N;
        int rowStart = (int)((long)windowRow * p.H / p.N);
        int rowEnd = (int)((long)(windowRow + 1) * p.H / p.N);
        int colStart = (int)((long)windowCol * p.W / p.N);
        int colEnd = (int)((long)(windowCol + 1) * p.W / p.N);
        WindowBox box;
        box.RowStart = rowStart;
        box.RowCount = rowEnd - rowStart;
        box.ColStart = colStart;
        box.ColCount = colEnd - colStart;
        box.Tokens = p.T * box.RowCount * box.ColCount;
        return box;
    }

    /// <summary>The i-th token of the window: (t, localRow, localCol) with localCol fastest.</summary>
    private static TokenSite Site(WindowAttentionParams p, WindowBox box, int batch, int i)
    {
        int frameTokens = box.RowCount * box.ColCount;
        int t = i / frameTokens;
        int inFrame = i - t * frameTokens;
        int localRow = inFrame / box.ColCount;
        int localCol = inFrame - localRow * box.ColCount;
        long token = ((long)t * p.H + box.RowStart + localRow) * p.W + box.ColStart + localCol;
        TokenSite site;
        site.Slot = batch * p.TokensPerSample + token;
        site.Offset = site.Slot * p.Channels;
        site.T = t;
        site.Row = localRow;
        site.Col = localCol;
        return site;
    }

    /// <summary>
    /// Channel c of the head vector rotated by the token's RoPE angle (sign +1) or by its negative (sign −1, the inverse).
    /// <paramref name="self"/> is element c, <paramref name="partner"/> the other element of its pair (c ^ 1).
    /// The table holds (cos, sin) per (position, pair), computed on the host in float64.
    /// </summary>
    private static float Rotate(WindowAttentionParams p, ArrayView<float> table, TokenSite site, int c, float self, float partner,
        float sign)
    {
        int pair = c >> 1;
        int position = pair < p.PairsT ? site.T : (pair < p.PairsT + p.PairsH ? site.Row : site.Col);
        long index = ((long)position * (p.HeadDim >> 1) + pair) * 2;
        float cos = table[index];
        float sin = sign * table[index + 1];
        return (c & 1) == 0 ? self * cos - partner * sin : partner * sin + self * cos;
    }

    /// <summary>Element c of a head vector at <paramref name="offset"/>, RoPE-rotated when enabled.</summary>
    private static float LoadRotated(WindowAttentionParams p, ArrayView<float> x, ArrayView<float> table, TokenSite site,
        long offset, int c)
    {
        float self = x[offset + c];
        if (p.Rope == 0) return self;
        return Rotate(p, table, site, c, self, x[offset + (c ^ 1)], 1f);
    }

    /// <summary>
    /// Forward. Grid: batch·windows·heads·tiles groups (tile fastest); each group owns Br query rows of one window and head,
    /// walks the window's keys in tiles of Bc with an online softmax, and writes o (and the row statistics (m, 1/l) when FlagA = 1,
    /// so that P = exp(s − m)/l can be recomputed).
    /// Shared memory (floats): Q Br·d | O Br·d | K/V Bc·d (K, then V over it) | S Br·Bc | m, l, α Br each.
    /// </summary>
    public static void Forward(ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> o,
        ArrayView<float> stats, ArrayView<float> table, WindowAttentionParams p)
    {
        int tid = Group.IdxX, threads = Group.DimX;
        int group = Grid.IdxX;
        int tile = group % p.Tiles;
        int rest = group / p.Tiles;
        int head = rest % p.Heads;
        rest /= p.Heads;
        int windows = p.N * p.N;
        int window = rest % windows;
        int batch = rest / windows;
        var box = Box(p, window);
        int rowBase = tile * p.Br;
        if (rowBase >= box.Tokens) return; // uniform for the whole group, before any barrier

        int d = p.HeadDim, br = p.Br, bc = p.Bc;
        int headOffset = head * d;
        int qn = box.Tokens - rowBase < br ? box.Tokens - rowBase : br;
        var shared = SharedMemory.GetDynamic<float>();
        int sQ = 0, sO = br * d, sKV = 2 * br * d, sS = sKV + bc * d, sM = sS + br * bc, sL = sM + br, sA = sL + br;

        for (int e = tid; e < br * d; e += threads)
        {
            int r = e / d, c = e - r * d;
            float value = 0f;
            if (r < qn)
            {
                var site = Site(p, box, batch, rowBase + r);
                value = p.Scale * LoadRotated(p, q, table, site, site.Offset + headOffset, c);
            }
            shared[sQ + e] = value;
            shared[sO + e] = 0f;
        }
        for (int r = tid; r < br; r += threads)
        {
            shared[sM + r] = float.NegativeInfinity;
            shared[sL + r] = 0f;
        }
        Group.Barrier();

        for (int keyBase = 0; keyBase < box.Tokens; keyBase += bc)
        {
            int kn = box.Tokens - keyBase < bc ? box.Tokens - keyBase : bc;
            for (int e = tid; e < bc * d; e += threads)
            {
                int j = e / d, c = e - j * d;
                float value = 0f;
                if (j < kn)
                {
                    var site = Site(p, box, batch, keyBase + j);
                    value = LoadRotated(p, k, table, site, site.Offset + headOffset, c);
                }
                shared[sKV + e] = value;
            }
            Group.Barrier();

            for (int e = tid; e < br * bc; e += threads)
            {
                int r = e / bc, j = e - r * bc;
                float s = float.NegativeInfinity;
                if (j < kn)
                {
                    s = 0f;
                    for (int c = 0; c < d; c++) s += shared[sQ + r * d + c] * shared[sKV + j * d + c];
                }
                shared[sS + e] = s;
            }
            Group.Barrier();

            // Online softmax row statistics (one thread per row) while the whole group loads V over K.
            for (int r = tid; r < br; r += threads)
            {
                float previous = shared[sM + r];
                float max = previous;
                for (int j = 0; j < kn; j++)
                {
                    float s = shared[sS + r * bc + j];
                    if (s > max) max = s;
                }
                float sum = 0f;
                for (int j = 0; j < kn; j++)
                {
                    float e = Exp(shared[sS + r * bc + j] - max);
                    shared[sS + r * bc + j] = e;
                    sum += e;
                }
                for (int j = kn; j < bc; j++) shared[sS + r * bc + j] = 0f;
                float alpha = Exp(previous - max); // 0 on the first tile (previous = −∞)
                shared[sL + r] = shared[sL + r] * alpha + sum;
                shared[sM + r] = max;
                shared[sA + r] = alpha;
            }
            for (int e = tid; e < bc * d; e += threads)
            {
                int j = e / d, c = e - j * d;
                float value = 0f;
                if (j < kn)
                {
                    var site = Site(p, box, batch, keyBase + j);
                    value = v[site.Offset + headOffset + c];
                }
                shared[sKV + e] = value;
            }
            Group.Barrier();

            for (int e = tid; e < br * d; e += threads)
            {
                int r = e / d, c = e - r * d;
                float acc = shared[sO + e] * shared[sA + r];
                for (int j = 0; j < kn; j++) acc += shared[sS + r * bc + j] * shared[sKV + j * d + c];
                shared[sO + e] = acc;
            }
            Group.Barrier();
        }

        for (int e = tid; e < qn * d; e += threads)
        {
            int r = e / d, c = e - r * d;
            var site = Site(p, box, batch, rowBase + r);
            o[site.Offset + headOffset + c] = shared[sO + e] / shared[sL + r];
        }
        if (p.FlagA != 0)
            for (int r = tid; r < qn; r += threads)
            {
                var site = Site(p, box, batch, rowBase + r);
                long stat = (site.Slot * p.Heads + head) * 2;
                stats[stat] = shared[sM + r];
                stats[stat + 1] = 1f / shared[sL + r];
            }
    }

    /// <summary>Backward preprocessing: D[slot·heads + head] = Σ_c dO·O over the head's channels (one thread per entry).</summary>
    public static void RowDot(Index1D index, ArrayView<float> dO, ArrayView<float> o, ArrayView<float> rowDot, int heads, int headDim)
    {
        int entry = index;
        long slot = entry / heads;
        int head = entry - (int)(slot * heads);
        long offset = slot * heads * headDim + (long)head * headDim;
        float sum = 0f;
        for (int c = 0; c < headDim; c++) sum += dO[offset + c] * o[offset + c];
        rowDot[entry] = sum;
    }

    /// <summary>
    /// Backward dK/dV. Grid: batch·windows·heads·key tiles; each group owns Bc keys, loops over the window's query tiles of Br
    /// rows, recomputes P = exp(q̃·k̃ᵀ/√d − m)/l from the forward's row statistics, and accumulates dV = Pᵀ·dO and dK̃ = dSᵀ·(q̃/√d) with dS = P∘(dO·Vᵀ − D).
    /// dk is written un-rotated (inverse RoPE) when FlagA = 1, dv when FlagB = 1.
    /// Shared memory (floats): K, V, dK, dV Bc·d each | Q, dO Br·d each | P, dS Br·Bc each | m, 1/l, D Br each.
    /// </summary>
    public static void KeyValueGrad(ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> dO,
        ArrayView<float> stats, ArrayView<float> rowDot, ArrayView<float> dk, ArrayView<float> dv, ArrayView<float> table,
        WindowAttentionParams p)
    {
        int tid = Group.IdxX, threads = Group.DimX;
        int group = Grid.IdxX;
        int tile = group % p.Tiles;
        int rest = group / p.Tiles;
        int head = rest % p.Heads;
        rest /= p.Heads;
        int windows = p.N * p.N;
        int window = rest % windows;
        int batch = rest / windows;
        var box = Box(p, window);
        int keyBase = tile * p.Bc;
        if (keyBase >= box.Tokens) return;

        int d = p.HeadDim, br = p.Br, bc = p.Bc;
        int headOffset = head * d;
        int kn = box.Tokens - keyBase < bc ? box.Tokens - keyBase : bc;
        var shared = SharedMemory.GetDynamic<float>();
        int sK = 0, sV = bc * d, sDK = 2 * bc * d, sDV = 3 * bc * d, sQ = 4 * bc * d, sDO = sQ + br * d;
        int sP = sDO + br * d, sDS = sP + br * bc, sM = sDS + br * bc, sInvL = sM + br, sD = sInvL + br;

        for (int e = tid; e < bc * d; e += threads)
        {
            int j = e / d, c = e - j * d;
            float key = 0f, value = 0f;
            if (j < kn)
            {
                var site = Site(p, box, batch, keyBase + j);
                long offset = site.Offset + headOffset;
                key = LoadRotated(p, k, table, site, offset, c);
                value = v[offset + c];
            }
            shared[sK + e] = key;
            shared[sV + e] = value;
            shared[sDK + e] = 0f;
            shared[sDV + e] = 0f;
        }

        for (int rowBase = 0; rowBase < box.Tokens; rowBase += br)
        {
            int qn = box.Tokens - rowBase < br ? box.Tokens - rowBase : br;
            for (int e = tid; e < br * d; e += threads)
            {
                int r = e / d, c = e - r * d;
                float query = 0f, grad = 0f;
                if (r < qn)
                {
                    var site = Site(p, box, batch, rowBase + r);
                    long offset = site.Offset + headOffset;
                    query = p.Scale * LoadRotated(p, q, table, site, offset, c);
                    grad = dO[offset + c];
                }
                shared[sQ + e] = query;
                shared[sDO + e] = grad;
            }
            for (int r = tid; r < br; r += threads)
            {
                float rowMax = 0f, rowInvSum = 0f, rowD = 0f;
                if (r < qn)
                {
                    var site = Site(p, box, batch, rowBase + r);
                    long entry = site.Slot * p.Heads + head;
                    rowMax = stats[entry * 2];
                    rowInvSum = stats[entry * 2 + 1];
                    rowD = rowDot[entry];
                }
                shared[sM + r] = rowMax;
                shared[sInvL + r] = rowInvSum;
                shared[sD + r] = rowD;
            }
            Group.Barrier();

            for (int e = tid; e < br * bc; e += threads)
            {
                int r = e / bc, j = e - r * bc;
                float prob = 0f, ds = 0f;
                if (r < qn && j < kn)
                {
                    float s = 0f, dp = 0f;
                    for (int c = 0; c < d; c++)
                    {
                        s += shared[sQ + r * d + c] * shared[sK + j * d + c];
                        dp += shared[sDO + r * d + c] * shared[sV + j * d + c];
                    }
                    prob = Exp(s - shared[sM + r]) * shared[sInvL + r];
                    ds = prob * (dp - shared[sD + r]);
                }
                shared[sP + e] = prob;
                shared[sDS + e] = ds;
            }
            Group.Barrier();

            for (int e = tid; e < bc * d; e += threads)
            {
                int j = e / d, c = e - j * d;
                float accV = shared[sDV + e], accK = shared[sDK + e];
                for (int r = 0; r < qn; r++)
                {
                    accV += shared[sP + r * bc + j] * shared[sDO + r * d + c];
                    accK += shared[sDS + r * bc + j] * shared[sQ + r * d + c];
                }
                shared[sDV + e] = accV;
                shared[sDK + e] = accK;
            }
            Group.Barrier();
        }

        for (int e = tid; e < kn * d; e += threads)
        {
            int j = e / d, c = e - j * d;
            var site = Site(p, box, batch, keyBase + j);
            long offset = site.Offset + headOffset + c;
            if (p.FlagA != 0)
            {
                float grad = shared[sDK + e];
                if (p.Rope != 0) grad = Rotate(p, table, site, c, grad, shared[sDK + (e ^ 1)], -1f);
                dk[offset] = grad;
            }
            if (p.FlagB != 0) dv[offset] = shared[sDV + e];
        }
    }

    /// <summary>
    /// Backward dQ. Grid: batch·windows·heads·query tiles; each group owns Br query rows, loops over the window's key tiles
    /// of Bc, and accumulates dQ̃ = dS·K̃; dq = (1/√d)·inverse-RoPE(dQ̃).
    /// Shared memory (floats): Q, dO, dQ Br·d each | K, V Bc·d each | dS Br·Bc | m, 1/l, D Br each.
    /// </summary>
    public static void QueryGrad(ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> dO,
        ArrayView<float> stats, ArrayView<float> rowDot, ArrayView<float> dq, ArrayView<float> table, WindowAttentionParams p)
    {
        int tid = Group.IdxX, threads = Group.DimX;
        int group = Grid.IdxX;
        int tile = group % p.Tiles;
        int rest = group / p.Tiles;
        int head = rest % p.Heads;
        rest /= p.Heads;
        int windows = p.N * p.N;
        int window = rest % windows;
        int batch = rest / windows;
        var box = Box(p, window);
        int rowBase = tile * p.Br;
        if (rowBase >= box.Tokens) return;

        int d = p.HeadDim, br = p.Br, bc = p.Bc;
        int headOffset = head * d;
        int qn = box.Tokens - rowBase < br ? box.Tokens - rowBase : br;
        var shared = SharedMemory.GetDynamic<float>();
        int sQ = 0, sDO = br * d, sDQ = 2 * br * d, sK = 3 * br * d, sV = sK + bc * d, sDS = sV + bc * d;
        int sM = sDS + br * bc, sInvL = sM + br, sD = sInvL + br;

        for (int e = tid; e < br * d; e += threads)
        {
            int r = e / d, c = e - r * d;
            float query = 0f, grad = 0f;
            if (r < qn)
            {
                var site = Site(p, box, batch, rowBase + r);
                long offset = site.Offset + headOffset;
                query = p.Scale * LoadRotated(p, q, table, site, offset, c);
                grad = dO[offset + c];
            }
            shared[sQ + e] = query;
            shared[sDO + e] = grad;
            shared[sDQ + e] = 0f;
        }
        for (int r = tid; r < br; r += threads)
        {
            float rowMax = 0f, rowInvSum = 0f, rowD = 0f;
            if (r < qn)
            {
                var site = Site(p, box, batch, rowBase + r);
                long entry = site.Slot * p.Heads + head;
                rowMax = stats[entry * 2];
                rowInvSum = stats[entry * 2 + 1];
                rowD = rowDot[entry];
            }
            shared[sM + r] = rowMax;
            shared[sInvL + r] = rowInvSum;
            shared[sD + r] = rowD;
        }

        for (int keyBase = 0; keyBase < box.Tokens; keyBase += bc)
        {
            int kn = box.Tokens - keyBase < bc ? box.Tokens - keyBase : bc;
            for (int e = tid; e < bc * d; e += threads)
            {
                int j = e / d, c = e - j * d;
                float key = 0f, value = 0f;
                if (j < kn)
                {
                    var site = Site(p, box, batch, keyBase + j);
                    long offset = site.Offset + headOffset;
                    key = LoadRotated(p, k, table, site, offset, c);
                    value = v[offset + c];
                }
                shared[sK + e] = key;
                shared[sV + e] = value;
            }
            Group.Barrier();

            for (int e = tid; e < br * bc; e += threads)
            {
                int r = e / bc, j = e - r * bc;
                float ds = 0f;
                if (r < qn && j < kn)
                {
                    float s = 0f, dp = 0f;
                    for (int c = 0; c < d; c++)
                    {
                        s += shared[sQ + r * d + c] * shared[sK + j * d + c];
                        dp += shared[sDO + r * d + c] * shared[sV + j * d + c];
                    }
                    ds = Exp(s - shared[sM + r]) * shared[sInvL + r] * (dp - shared[sD + r]);
                }
                shared[sDS + e] = ds;
            }
            Group.Barrier();

            for (int e = tid; e < br * d; e += threads)
            {
                int r = e / d, c = e - r * d;
                float acc = shared[sDQ + e];
                for (int j = 0; j < kn; j++) acc += shared[sDS + r * bc + j] * shared[sK + j * d + c];
                shared[sDQ + e] = acc;
            }
            Group.Barrier();
        }

        for (int e = tid; e < qn * d; e += threads)
        {
            int r = e / d, c = e - r * d;
            var site = Site(p, box, batch, rowBase + r);
            float grad = shared[sDQ + e];
            if (p.Rope != 0) grad = Rotate(p, table, site, c, grad, shared[sDQ + (e ^ 1)], -1f);
            dq[site.Offset + headOffset + c] = p.Scale * grad;
        }
    }
}
