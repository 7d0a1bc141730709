namespace UltraGen.Generation.Video;

/// <summary>
/// An animated GIF writer (GIF89a), written by hand so the README's animations need no external tool: one global
/// palette fitted to the whole video, the NETSCAPE2.0 extension for endless looping, one full-frame image per frame
/// with a graphic control extension for the delay, LZW-compressed with variable code width and clear codes.
/// </summary>
/// <remarks>
/// Palette: when the video has at most 256 distinct colours (the procedural videos do), the palette is exactly those
/// colours and the GIF is lossless. Otherwise median cut (<see cref="FitPalette"/>) picks 256 colours and each pixel
/// takes its nearest (Euclidean RGB), without dithering (dither noise would read as flicker between frames).
/// </remarks>
public static class GifWriter
{
    private const int MaxCodes = 4096; // LZW codes are at most 12 bits wide

    /// <summary>
    /// Writes <paramref name="video"/> to <paramref name="path"/> atomically, at <paramref name="fps"/> frames per second.
    /// The GIF delay is stored in 1/100 s, so it is rounded, and at least 2/100 s (browsers replace smaller delays by 1/10 s).
    /// </summary>
    public static void Write(RgbVideo video, string path, double fps = 8)
    {
        ArgumentNullException.ThrowIfNull(video);
        if (!(fps > 0) || double.IsInfinity(fps)) throw new ArgumentOutOfRangeException(nameof(fps), fps, "fps must be positive and finite");
        if (video.Width > ushort.MaxValue || video.Height > ushort.MaxValue)
            throw new ArgumentException($"a GIF is at most 65535 pixels a side, the video is {video.Width}×{video.Height}", nameof(video));
        byte[] bytes = Encode(video, fps);
        AtomicFile.Write(path, stream => stream.Write(bytes));
    }

    /// <summary>The GIF file's bytes.</summary>
    public static byte[] Encode(RgbVideo video, double fps = 8)
    {
        ArgumentNullException.ThrowIfNull(video);
        var palette = FitPalette(video.Pixels, 256);
        int tableBits = 1; // the colour table holds 2^tableBits entries, at least 2
        while ((1 << tableBits) < palette.Count) tableBits++;
        int delay = Math.Max(2, (int)Math.Round(100 / fps));

        var output = new MemoryStream();
        output.Write("GIF89a"u8);
        WriteUInt16(output, video.Width);
        WriteUInt16(output, video.Height);
        output.WriteByte((byte)(0x80 | 0x70 | (tableBits - 1))); // global table, 8-bit colour resolution, table size
        output.WriteByte(0); // background colour index
        output.WriteByte(0); // square pixels
        for (int i = 0; i < 1 << tableBits; i++)
        {
            int color = i < palette.Count ? palette[i] : 0;
            output.WriteByte((byte)(color >> 16));
            output.WriteByte((byte)(color >> 8));
            output.WriteByte((byte)color);
        }
        // NETSCAPE2.0 application extension: loop count 0 = forever.
        output.Write([0x21, 0xFF, 0x0B]);
        output.Write("NETSCAPE2.0"u8);
        output.Write([0x03, 0x01, 0x00, 0x00, 0x00]);

        var mapper = new PaletteMapper(palette);
        var indices = new byte[video.Width * video.Height];
        for (int f = 0; f < video.FrameCount; f++)
        {
            var frame = video.Frame(f);
            for (int i = 0; i < indices.Length; i++)
                indices[i] = mapper.IndexOf(frame[3 * i] << 16 | frame[3 * i + 1] << 8 | frame[3 * i + 2]);
            // Graphic control extension: disposal "leave in place" (1), no transparency, delay in 1/100 s.
            output.Write([0x21, 0xF9, 0x04, 0x04]);
            WriteUInt16(output, delay);
            output.Write([0x00, 0x00]);
            // Image descriptor: the full canvas, no local table, not interlaced.
            output.WriteByte(0x2C);
            WriteUInt16(output, 0);
            WriteUInt16(output, 0);
            WriteUInt16(output, video.Width);
            WriteUInt16(output, video.Height);
            output.WriteByte(0);
            int minimumCodeSize = Math.Max(2, tableBits);
            output.WriteByte((byte)minimumCodeSize);
            WriteSubBlocks(output, LzwCompress(indices, minimumCodeSize));
        }
        output.WriteByte(0x3B);
        return output.ToArray();
    }

    /// <summary>
    /// A palette of at most <paramref name="maxColors"/> colours (0xRRGGBB) for interleaved RGB bytes. Every distinct
    /// colour, in ascending order, when they fit; otherwise median cut over the colour histogram: repeatedly split the box
    /// with the largest (pixel count × longest side) at the pixel-weighted median of its longest axis, then take each
    /// box's pixel-weighted mean. Deterministic: the histogram is processed in sorted order.
    /// </summary>
    public static IReadOnlyList<int> FitPalette(ReadOnlySpan<byte> rgb, int maxColors)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxColors, 1);
        var histogram = new Dictionary<int, int>();
        for (int i = 0; i + 2 < rgb.Length; i += 3)
        {
            int key = rgb[i] << 16 | rgb[i + 1] << 8 | rgb[i + 2];
            histogram[key] = histogram.GetValueOrDefault(key) + 1;
        }
        var colors = histogram.OrderBy(e => e.Key).ToArray();
        if (colors.Length <= maxColors) return colors.Select(e => e.Key).ToArray();

        var boxes = new List<ColorBox> { new(colors) };
        while (boxes.Count < maxColors)
        {
            int best = -1;
            for (int b = 0; b < boxes.Count; b++)
                if (boxes[b].Entries.Count > 1 && (best < 0 || boxes[b].Score > boxes[best].Score)) best = b;
            if (best < 0) break;
            var box = boxes[best];
            int shift = 16 - 8 * box.Axis;
            var sorted = box.Entries.OrderBy(e => (e.Key >> shift) & 0xFF).ThenBy(e => e.Key).ToArray();
            long running = 0;
            int cut = 1;
            for (int i = 0; i < sorted.Length - 1; i++)
            {
                running += sorted[i].Value;
                cut = i + 1;
                if (2 * running >= box.Population) break;
            }
            boxes[best] = new ColorBox(new ArraySegment<KeyValuePair<int, int>>(sorted, 0, cut));
            boxes.Add(new ColorBox(new ArraySegment<KeyValuePair<int, int>>(sorted, cut, sorted.Length - cut)));
        }
        var palette = new List<int>(boxes.Count);
        foreach (var box in boxes.Select(b => b.Entries))
        {
            double r = 0, g = 0, b = 0, n = 0;
            foreach (var (key, count) in box)
            {
                r += ((key >> 16) & 0xFF) * (double)count;
                g += ((key >> 8) & 0xFF) * (double)count;
                b += (key & 0xFF) * (double)count;
                n += count;
            }
            palette.Add((int)Math.Round(r / n) << 16 | (int)Math.Round(g / n) << 8 | (int)Math.Round(b / n));
        }
        return palette.Distinct().Order().ToArray();
    }

    /// <summary>A median-cut box: its colours, pixel count, longest axis and split priority, computed once.</summary>
    private sealed class ColorBox
    {
        public ColorBox(ArraySegment<KeyValuePair<int, int>> entries)
        {
            Entries = entries;
            int extent = -1;
            for (int axis = 0; axis < 3; axis++)
            {
                int shift = 16 - 8 * axis, low = 255, high = 0;
                foreach (var entry in entries)
                {
                    int v = (entry.Key >> shift) & 0xFF;
                    low = Math.Min(low, v);
                    high = Math.Max(high, v);
                }
                if (high - low > extent) { extent = high - low; Axis = axis; }
            }
            foreach (var entry in entries) Population += entry.Value;
            Score = (double)extent * Population;
        }

        public ArraySegment<KeyValuePair<int, int>> Entries { get; }
        public int Axis { get; }
        public long Population { get; }
        public double Score { get; }
    }

    /// <summary>Nearest palette entry per colour, cached (a video has far fewer distinct colours than pixels).</summary>
    private sealed class PaletteMapper(IReadOnlyList<int> palette)
    {
        private readonly Dictionary<int, byte> _cache = [];

        public byte IndexOf(int color)
        {
            if (_cache.TryGetValue(color, out byte index)) return index;
            int best = 0, bestDistance = int.MaxValue;
            for (int i = 0; i < palette.Count; i++)
            {
                int dr = ((color >> 16) & 0xFF) - ((palette[i] >> 16) & 0xFF);
                int dg = ((color >> 8) & 0xFF) - ((palette[i] >> 8) & 0xFF);
                int db = (color & 0xFF) - (palette[i] & 0xFF);
                int distance = dr * dr + dg * dg + db * db;
                if (distance < bestDistance) { bestDistance = distance; best = i; }
            }
            _cache[color] = (byte)best;
            return (byte)best;
        }
    }

    /// <summary>
    /// GIF-flavoured LZW: codes packed least-significant bit first; a clear code first and whenever the table reaches 4096
    /// entries; the code width grows by one bit as soon as the next code to be assigned no longer fits (the decoder adds
    /// its entries one code later, so the encoder widens after assigning code 2^width, not before).
    /// </summary>
    internal static byte[] LzwCompress(ReadOnlySpan<byte> indices, int minimumCodeSize)
    {
        int clearCode = 1 << minimumCodeSize, endCode = clearCode + 1;
        var writer = new BitWriter();
        var table = new Dictionary<int, int>();
        int codeSize = minimumCodeSize + 1, nextCode = clearCode + 2;
        writer.Write(clearCode, codeSize);
        if (indices.Length == 0)
        {
            writer.Write(endCode, codeSize);
            return writer.ToArray();
        }
        int prefix = indices[0];
        for (int i = 1; i < indices.Length; i++)
        {
            int symbol = indices[i];
            int key = prefix << 8 | symbol;
            if (table.TryGetValue(key, out int code))
            {
                prefix = code;
                continue;
            }
            writer.Write(prefix, codeSize);
            table[key] = nextCode++;
            if (nextCode > 1 << codeSize && codeSize < 12) codeSize++;
            if (nextCode == MaxCodes)
            {
                writer.Write(clearCode, codeSize);
                table.Clear();
                codeSize = minimumCodeSize + 1;
                nextCode = clearCode + 2;
            }
            prefix = symbol;
        }
        writer.Write(prefix, codeSize);
        writer.Write(endCode, codeSize);
        return writer.ToArray();
    }

    private sealed class BitWriter
    {
        private readonly List<byte> _bytes = [];
        private int _buffer, _bitCount;

        public void Write(int code, int width)
        {
            _buffer |= code << _bitCount;
            _bitCount += width;
            while (_bitCount >= 8)
            {
                _bytes.Add((byte)_buffer);
                _buffer >>= 8;
                _bitCount -= 8;
            }
        }

        public byte[] ToArray()
        {
            if (_bitCount > 0) _bytes.Add((byte)_buffer);
            _buffer = 0;
            _bitCount = 0;
            return _bytes.ToArray();
        }
    }

    private static void WriteSubBlocks(Stream output, byte[] data)
    {
        for (int offset = 0; offset < data.Length; offset += 255)
        {
            int length = Math.Min(255, data.Length - offset);
            output.WriteByte((byte)length);
            output.Write(data, offset, length);
        }
        output.WriteByte(0);
    }

    private static void WriteUInt16(Stream output, int value)
    {
        output.WriteByte((byte)value);
        output.WriteByte((byte)(value >> 8));
    }
}
