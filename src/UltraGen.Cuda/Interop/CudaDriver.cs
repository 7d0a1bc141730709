using System.Runtime.InteropServices;
using ILGPU.Runtime.Cuda;

namespace UltraGen.Cuda.Interop;

/// <summary>
/// The CUDA driver calls the Cuda backend makes, each one checked: a failing status becomes a <see cref="CudaException"/>
/// naming the call, the kernel or module involved, the driver's error name and description (out-of-memory becomes
/// <see cref="CudaOutOfMemoryException"/> with the requested size and the device's free/total memory).
/// <para>
/// Where ILGPU 1.5.3's public <see cref="CudaAPI"/> exposes a call with its status, it is used (device queries, context
/// switch, module load with the JIT error log, function lookup, <c>cuLaunchKernel</c>, alloc/free, memory info, stream
/// synchronise/destroy, events). What ILGPU keeps internal or lacks is bound here with <c>[LibraryImport]</c>
/// (<see cref="Native"/>): <c>cuInit</c> with its status (ILGPU's <c>Init()</c> returns a bool), <c>cuDeviceGetAttribute</c>
/// with its status and attributes past ILGPU's enum (shared memory opt-in), the primary context, <c>cuFuncSetAttribute</c>,
/// the synchronous <c>cuMemcpy*_v2</c>/<c>cuMemsetD8_v2</c>, <c>cuStreamCreate</c> and <c>cuGetErrorName</c>/<c>String</c>.
/// </para>
/// Device pointers are <see cref="IntPtr"/> (CUdeviceptr is 64-bit; the backend requires a 64-bit process).
/// </summary>
public static unsafe partial class CudaDriver
{
    public const int Success = 0;
    public const int ErrorOutOfMemory = 2;
    public const int ErrorNoDevice = 100;

    // CUdevice_attribute values (cuda.h) used here.
    public const int AttributeMaxThreadsPerBlock = 1;
    public const int AttributeMaxSharedMemoryPerBlock = 8;
    public const int AttributeMultiprocessorCount = 16;
    public const int AttributeComputeCapabilityMajor = 75;
    public const int AttributeComputeCapabilityMinor = 76;
    public const int AttributeMaxSharedMemoryPerBlockOptin = 97;

    // CUfunction_attribute
    private const int FunctionAttributeMaxDynamicSharedSizeBytes = 8;

    private static CudaAPI Api => CudaAPI.CurrentAPI;

    /// <summary>Raw imports of what ILGPU does not expose publicly. Statuses are CUresult values.</summary>
    internal static partial class Native
    {
        static Native() => NativeLibraries.EnsureRegistered();

        [LibraryImport(NativeLibraries.Driver)] internal static partial int cuInit(uint flags);
        [LibraryImport(NativeLibraries.Driver)] internal static partial int cuDeviceGetAttribute(out int value, int attribute, int device);
        [LibraryImport(NativeLibraries.Driver)] internal static partial int cuDevicePrimaryCtxRetain(out IntPtr context, int device);
        [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuDevicePrimaryCtxRelease_v2")] internal static partial int cuDevicePrimaryCtxRelease(int device);
        [LibraryImport(NativeLibraries.Driver)] internal static partial int cuFuncSetAttribute(IntPtr function, int attribute, int value);
        [LibraryImport(NativeLibraries.Driver)] internal static partial int cuMemcpyHtoD_v2(IntPtr destination, void* source, nuint bytes);
        [LibraryImport(NativeLibraries.Driver)] internal static partial int cuMemcpyDtoH_v2(void* destination, IntPtr source, nuint bytes);
        [LibraryImport(NativeLibraries.Driver)] internal static partial int cuMemcpyDtoD_v2(IntPtr destination, IntPtr source, nuint bytes);
        [LibraryImport(NativeLibraries.Driver)] internal static partial int cuMemsetD8_v2(IntPtr destination, byte value, nuint count);
        [LibraryImport(NativeLibraries.Driver)] internal static partial int cuStreamCreate(out IntPtr stream, uint flags);
        [LibraryImport(NativeLibraries.Driver)] internal static partial int cuGetErrorName(int error, out IntPtr name);
        [LibraryImport(NativeLibraries.Driver)] internal static partial int cuGetErrorString(int error, out IntPtr description);
    }

    // ---- errors ----

    /// <summary>The driver's name for <paramref name="status"/> (CUDA_ERROR_…), or a fallback when the driver does not know it.</summary>
    public static string ErrorName(int status)
    {
        try
        {
            if (Native.cuGetErrorName(status, out var name) == Success && Marshal.PtrToStringAnsi(name) is { } text) return text;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { }
        return Enum.IsDefined(typeof(CudaError), status) ? ((CudaError)status).ToString() : $"CUDA_ERROR_{status}";
    }

    public static string ErrorString(int status)
    {
        try
        {
            if (Native.cuGetErrorString(status, out var text) == Success && Marshal.PtrToStringAnsi(text) is { } message) return message;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { }
        return "unrecognised CUDA error code";
    }

    /// <summary>Throws unless <paramref name="status"/> is CUDA_SUCCESS.</summary>
    public static void Check(int status, string call, string? subject = null, string? detail = null)
    {
        if (status != Success) throw new CudaException(call, status, ErrorName(status), ErrorString(status), subject, detail);
    }

    private static void Check(CudaError status, string call, string? subject = null, string? detail = null) =>
        Check((int)status, call, subject, detail);

    // ---- initialisation and device ----

    /// <summary>cuInit(0)'s raw status (the provider turns a failure into an "unavailable" reason rather than an exception).</summary>
    public static int InitStatus() => Native.cuInit(0);

    public static int DeviceCount()
    {
        Check(Api.GetDeviceCount(out int count), "cuDeviceGetCount");
        return count;
    }

    public static int Device(int ordinal)
    {
        Check(Api.GetDevice(out int device, ordinal), "cuDeviceGet", $"device ordinal {ordinal}");
        return device;
    }

    public static string DeviceName(int device)
    {
        Check(Api.GetDeviceName(out string? name, device), "cuDeviceGetName", $"device {device}");
        return name ?? $"CUDA device {device}";
    }

    public static int Attribute(int device, int attribute)
    {
        Check(Native.cuDeviceGetAttribute(out int value, attribute, device), "cuDeviceGetAttribute", $"device {device}", $"attribute {attribute}");
        return value;
    }

    public static IntPtr RetainPrimaryContext(int device)
    {
        Check(Native.cuDevicePrimaryCtxRetain(out var context, device), "cuDevicePrimaryCtxRetain", $"device {device}");
        return context;
    }

    public static void ReleasePrimaryContext(int device) =>
        Check(Native.cuDevicePrimaryCtxRelease(device), "cuDevicePrimaryCtxRelease_v2", $"device {device}");

    /// <summary>Makes <paramref name="context"/> current on the calling thread (contexts are per thread in the driver API).</summary>
    public static void SetCurrent(IntPtr context) => Check(Api.SetCurrentContext(context), "cuCtxSetCurrent");

    public static void SynchronizeContext(string? subject = null) => Check(Api.SynchronizeContext(), "cuCtxSynchronize", subject);

    public static (long Free, long Total) MemoryInfo()
    {
        Check(Api.GetMemoryInfo(out long free, out long total), "cuMemGetInfo_v2");
        return (free, total);
    }

    // ---- modules and kernels ----

    /// <summary>JIT-compiles PTX text; a failure carries the JIT's error log.</summary>
    public static IntPtr LoadModule(string ptx, string subject)
    {
        var status = Api.LoadModule(out var module, ptx, out string? log);
        Check(status, "cuModuleLoadDataEx", subject, string.IsNullOrWhiteSpace(log?.TrimEnd('\0')) ? null : "JIT log: " + log!.TrimEnd('\0').Trim());
        return module;
    }

    /// <summary>Unloads a module; returns the status (used on shutdown paths that must not throw).</summary>
    public static int UnloadModule(IntPtr module) => (int)Api.DestroyModule(module);

    public static IntPtr Function(IntPtr module, string name, string subject)
    {
        Check(Api.GetModuleFunction(out var function, module, name), "cuModuleGetFunction", subject);
        return function;
    }

    /// <summary>Lets <paramref name="function"/> use up to <paramref name="bytes"/> of dynamic shared memory (needed above 48 KiB).</summary>
    public static void SetMaxDynamicSharedMemory(IntPtr function, int bytes, string subject) =>
        Check(Native.cuFuncSetAttribute(function, FunctionAttributeMaxDynamicSharedSizeBytes, bytes), "cuFuncSetAttribute", subject,
            $"CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = {bytes}");

    /// <summary>cuLaunchKernel with <paramref name="arguments"/> = void*[] of pointers to each argument value.</summary>
    public static void Launch(IntPtr function, Dim3 grid, Dim3 block, int sharedBytes, IntPtr stream, void** arguments, string subject) =>
        Check(Api.LaunchKernel(function, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, sharedBytes, stream, (IntPtr)arguments, IntPtr.Zero),
            "cuLaunchKernel", subject, $"grid {grid}, block {block}, {sharedBytes} bytes dynamic shared memory");

    // ---- memory ----

    public static IntPtr Allocate(long bytes)
    {
        var status = (int)Api.AllocateMemory(out var pointer, new IntPtr(Math.Max(bytes, 1)));
        if (status == ErrorOutOfMemory)
        {
            long free = -1, total = -1;
            if (Api.GetMemoryInfo(out long f, out long t) == CudaError.CUDA_SUCCESS) (free, total) = (f, t);
            throw new CudaOutOfMemoryException("cuMemAlloc_v2", status, ErrorName(status), ErrorString(status), bytes, free, total);
        }
        Check(status, "cuMemAlloc_v2", null, $"{bytes} bytes");
        return pointer;
    }

    /// <summary>Frees device memory; returns the status instead of throwing (finalizers and Dispose call it).</summary>
    public static int Free(IntPtr pointer) => (int)Api.FreeMemory(pointer);

    public static void CopyHostToDevice(IntPtr destination, void* source, long bytes) =>
        Check(Native.cuMemcpyHtoD_v2(destination, source, (nuint)bytes), "cuMemcpyHtoD_v2", null, $"{bytes} bytes");

    public static void CopyDeviceToHost(void* destination, IntPtr source, long bytes) =>
        Check(Native.cuMemcpyDtoH_v2(destination, source, (nuint)bytes), "cuMemcpyDtoH_v2", null, $"{bytes} bytes");

    public static void CopyDeviceToDevice(IntPtr destination, IntPtr source, long bytes) =>
        Check(Native.cuMemcpyDtoD_v2(destination, source, (nuint)bytes), "cuMemcpyDtoD_v2", null, $"{bytes} bytes");

    public static void MemsetD8(IntPtr destination, byte value, long bytes) =>
        Check(Native.cuMemsetD8_v2(destination, value, (nuint)bytes), "cuMemsetD8_v2", null, $"{bytes} bytes");

    // ---- streams and events ----

    /// <summary>A blocking stream (flags 0): it synchronises with the legacy default stream the synchronous copies use.</summary>
    public static IntPtr CreateStream()
    {
        Check(Native.cuStreamCreate(out var stream, 0), "cuStreamCreate");
        return stream;
    }

    public static void SynchronizeStream(IntPtr stream, string? subject = null) => Check(Api.SynchronizeStream(stream), "cuStreamSynchronize", subject);

    public static int DestroyStream(IntPtr stream) => (int)Api.DestroyStream(stream);

    public static IntPtr CreateEvent()
    {
        Check(Api.CreateEvent(out var handle, CudaEventFlags.CU_EVENT_DEFAULT), "cuEventCreate");
        return handle;
    }

    public static void RecordEvent(IntPtr handle, IntPtr stream) => Check(Api.RecordEvent(handle, stream), "cuEventRecord");

    public static void SynchronizeEvent(IntPtr handle) => Check(Api.SynchronizeEvent(handle), "cuEventSynchronize");

    public static float ElapsedMilliseconds(IntPtr start, IntPtr end)
    {
        Check(Api.ElapsedTime(out float milliseconds, start, end), "cuEventElapsedTime");
        return milliseconds;
    }

    public static int DestroyEvent(IntPtr handle) => (int)Api.DestroyEvent(handle);
}

/// <summary>A CUDA grid or block extent.</summary>
public readonly record struct Dim3(int X, int Y = 1, int Z = 1)
{
    public long Count => (long)X * Y * Z;

    public override string ToString() => $"({X}, {Y}, {Z})";
}
