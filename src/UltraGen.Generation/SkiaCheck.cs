namespace UltraGen.Generation;

internal static class SkiaCheck
{
    public static byte[] OnePixelPng()
    {
        using var bitmap = new SkiaSharp.SKBitmap(1, 1);
        bitmap.SetPixel(0, 0, new SkiaSharp.SKColor(255, 0, 0));
        using var data = bitmap.Encode(SkiaSharp.SKEncodedImageFormat.Png, 100);
        return data.ToArray();
    }
}
