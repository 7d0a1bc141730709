using UltraGen.Core;

namespace UltraGen.Cuda.Interop;

/// <summary>
/// A CUDA driver call returned an error. The message names the call, the kernel or module involved (when there is one),
/// the driver's error name and its description, e.g.
/// <c>cuLaunchKernel failed for kernel 'add_f32' (module elementwise): CUDA_ERROR_INVALID_VALUE (1): invalid argument</c>.
/// </summary>
public class CudaException : UltraGenException
{
    public string Call { get; }
    public int ErrorCode { get; }
    public string ErrorName { get; }
    public string? Subject { get; }

    public CudaException(string call, int errorCode, string errorName, string errorString, string? subject = null, string? detail = null)
        : base(Format(call, errorCode, errorName, errorString, subject, detail))
    {
        Call = call;
        ErrorCode = errorCode;
        ErrorName = errorName;
        Subject = subject;
    }

    /// <summary>The message text; <paramref name="subject"/> is "kernel 'x' (module m)", "module m (path)" or null.</summary>
    public static string Format(string call, int errorCode, string errorName, string errorString, string? subject, string? detail)
    {
        string where = subject is null ? "" : $" for {subject}";
        string more = string.IsNullOrWhiteSpace(detail) ? "" : $"; {detail.Trim()}";
        return $"{call} failed{where}: {errorName} ({errorCode}): {errorString}{more}";
    }
}

/// <summary>CUDA_ERROR_OUT_OF_MEMORY: says how much was asked for and how much the device had free.</summary>
public sealed class CudaOutOfMemoryException : CudaException
{
    public long RequestedBytes { get; }
    public long FreeBytes { get; }
    public long TotalBytes { get; }

    public CudaOutOfMemoryException(string call, int errorCode, string errorName, string errorString, long requestedBytes, long freeBytes, long totalBytes)
        : base(call, errorCode, errorName, errorString, null, Detail(requestedBytes, freeBytes, totalBytes))
    {
        RequestedBytes = requestedBytes;
        FreeBytes = freeBytes;
        TotalBytes = totalBytes;
    }

    public static string Detail(long requested, long free, long total) =>
        $"requested {Bytes(requested)}, device has {(free < 0 ? "an unknown amount" : Bytes(free))} free of {(total < 0 ? "unknown" : Bytes(total))}";

    /// <summary>"1536 bytes (1.5 KiB)" — exact count first, so messages can be grepped and compared.</summary>
    public static string Bytes(long bytes)
    {
        string[] units = ["KiB", "MiB", "GiB", "TiB"];
        double value = bytes;
        int unit = -1;
        while (Math.Abs(value) >= 1024 && unit < units.Length - 1)
        {
            value /= 1024;
            unit++;
        }
        return unit < 0 ? $"{bytes} bytes" : $"{bytes} bytes ({value:0.##} {units[unit]})";
    }
}

/// <summary>A cuBLAS call returned an error status; names the call, the status and the GEMM shape involved.</summary>
public sealed class CublasException : UltraGenException
{
    public string Call { get; }
    public int Status { get; }

    public CublasException(string call, int status, string? detail = null)
        : base($"{call} failed: {StatusName(status)} ({status}){(detail is null ? "" : "; " + detail)}")
    {
        Call = call;
        Status = status;
    }

    /// <summary>cublasStatus_t names (cublas_api.h).</summary>
    public static string StatusName(int status) => status switch
    {
        0 => "CUBLAS_STATUS_SUCCESS",
        1 => "CUBLAS_STATUS_NOT_INITIALIZED",
        3 => "CUBLAS_STATUS_ALLOC_FAILED",
        7 => "CUBLAS_STATUS_INVALID_VALUE",
        8 => "CUBLAS_STATUS_ARCH_MISMATCH",
        11 => "CUBLAS_STATUS_MAPPING_ERROR",
        13 => "CUBLAS_STATUS_EXECUTION_FAILED",
        14 => "CUBLAS_STATUS_INTERNAL_ERROR",
        15 => "CUBLAS_STATUS_NOT_SUPPORTED",
        16 => "CUBLAS_STATUS_LICENSE_ERROR",
        _ => "CUBLAS_STATUS_UNKNOWN",
    };
}
