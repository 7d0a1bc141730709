// The part of the CUDA driver API the C# Cuda backend calls (src/UltraGen.Cuda/Interop/CudaDriver.cs and ILGPU's
// CudaAPI), implemented over host memory and the emulated kernels. Built as libcuda.so.1; put its folder first on
// LD_LIBRARY_PATH and the backend loads it as it would the real driver. It presents one device ("UltraGen CUDA emulator")
// of compute capability 8.0 with an A100's launch limits, so the sm80 PTX is selected; a module is the list of `.entry`
// names in the PTX text, each of which must have an emulated kernel (a stale emulator build fails the module load).
// Every call validates what the real driver validates that the backend could get wrong: grid and block limits, dynamic
// shared memory against the function's opt-in, copies and memsets inside one allocation, frees of live allocations.
// Streams are synchronous: a launch has finished when cuLaunchKernel returns.
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <string>
#include <vector>

#include "runtime.h"

namespace {

enum : int {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_INVALID_VALUE = 1,
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    CUDA_ERROR_NOT_INITIALIZED = 3,
    CUDA_ERROR_INVALID_DEVICE = 101,
    CUDA_ERROR_INVALID_PTX = 218,
    CUDA_ERROR_INVALID_CONTEXT = 201,
    CUDA_ERROR_INVALID_HANDLE = 400,
    CUDA_ERROR_NOT_FOUND = 500,
    CUDA_ERROR_LAUNCH_FAILED = 719,
};

constexpr long long kTotalMemory = 16LL << 30;
constexpr int kMaxThreadsPerBlock = 1024;
constexpr int kSharedPerBlock = 48 * 1024;
constexpr int kSharedPerBlockOptin = 163 * 1024;  // A100
constexpr int kMultiprocessors = 108;

bool g_initialized = false;
thread_local std::string t_lastFailure;  // what cuGetErrorString(CUDA_ERROR_LAUNCH_FAILED) reports on this thread

// Device allocations: each its own mapping, placed so that its (16-byte rounded) end touches a PROT_NONE guard page, so a
// kernel that reads or writes past the end of a buffer faults at once instead of corrupting a neighbour (reported by the
// SIGSEGV handler below, like compute-sanitizer's memcheck for overruns; underruns are not caught).
struct Allocation {
    size_t bytes;
    char* mapping;
    size_t mappingBytes;  // including the guard page
};
std::shared_mutex g_memoryGate;
std::map<uintptr_t, Allocation> g_allocations;  // device pointer → allocation
long long g_allocated = 0;
struct sigaction g_previousSegv, g_previousBus;

// The allocation whose guard page holds `address`, if any (called from the signal handler: reads only).
const std::pair<const uintptr_t, Allocation>* overrun_of(uintptr_t address) {
    auto it = g_allocations.upper_bound(address);
    if (it == g_allocations.begin()) return nullptr;
    --it;
    const uintptr_t end = reinterpret_cast<uintptr_t>(it->second.mapping) + it->second.mappingBytes;
    return address >= it->first + it->second.bytes && address < end ? &*it : nullptr;
}

void on_fault(int signal, siginfo_t* info, void* context) {
    const uintptr_t address = reinterpret_cast<uintptr_t>(info->si_addr);
    if (const auto* hit = overrun_of(address)) {
        char message[768];
        const int length = std::snprintf(message, sizeof message,
            "ultragen cuda emulator: illegal address 0x%llx: %llu bytes past the end of the %zu-byte device allocation at "
            "0x%llx, in %s\n", (unsigned long long)address, (unsigned long long)(address - hit->first - hit->second.bytes),
            hit->second.bytes, (unsigned long long)hit->first, ug_emu::current_thread_description());
        if (length > 0) (void)!write(2, message, (size_t)length);
        _exit(70);
    }
    // Not ours (the .NET runtime turns its own faults into exceptions): hand it to the handler installed before.
    const struct sigaction& previous = signal == SIGBUS ? g_previousBus : g_previousSegv;
    if (previous.sa_flags & SA_SIGINFO) {
        if (previous.sa_sigaction) previous.sa_sigaction(signal, info, context);
    } else if (previous.sa_handler == SIG_DFL || previous.sa_handler == SIG_IGN) {
        sigaction(signal, &previous, nullptr);
        raise(signal);
    } else {
        previous.sa_handler(signal);
    }
}

void install_fault_handler() {
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction action {};
        action.sa_sigaction = on_fault;
        action.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&action.sa_mask);
        sigaction(SIGSEGV, &action, &g_previousSegv);
        sigaction(SIGBUS, &action, &g_previousBus);
    });
}

struct Module {
    std::vector<std::string> entries;
};
struct Function {
    const ug_emu::KernelEntry* kernel;
    int maxDynamicShared = kSharedPerBlock;
};
std::mutex g_objectsGate;
std::set<Module*> g_modules;
std::map<std::string, std::unique_ptr<Function>> g_functions;  // one handle per kernel name, as the driver does per module

struct Event {
    std::chrono::steady_clock::time_point when;
    bool recorded = false;
};

// Whether [p, p + bytes) lies in one allocation; g_memoryGate held by the caller.
bool inside_allocation(uintptr_t p, size_t bytes) {
    auto it = g_allocations.upper_bound(p);
    if (it == g_allocations.begin()) return false;
    --it;
    return p >= it->first && p + bytes <= it->first + it->second.bytes;
}

int check_range(uintptr_t p, size_t bytes, const char* call) {
    std::shared_lock lock(g_memoryGate);
    if (inside_allocation(p, bytes)) return CUDA_SUCCESS;
    fprintf(stderr, "ultragen cuda emulator: %s: [0x%llx, +%zu bytes) is not inside one device allocation\n", call,
            (unsigned long long)p, bytes);
    return CUDA_ERROR_INVALID_VALUE;
}

const char* error_name(int status) {
    switch (status) {
        case CUDA_SUCCESS: return "CUDA_SUCCESS";
        case CUDA_ERROR_INVALID_VALUE: return "CUDA_ERROR_INVALID_VALUE";
        case CUDA_ERROR_OUT_OF_MEMORY: return "CUDA_ERROR_OUT_OF_MEMORY";
        case CUDA_ERROR_NOT_INITIALIZED: return "CUDA_ERROR_NOT_INITIALIZED";
        case CUDA_ERROR_INVALID_DEVICE: return "CUDA_ERROR_INVALID_DEVICE";
        case CUDA_ERROR_INVALID_CONTEXT: return "CUDA_ERROR_INVALID_CONTEXT";
        case CUDA_ERROR_INVALID_PTX: return "CUDA_ERROR_INVALID_PTX";
        case CUDA_ERROR_INVALID_HANDLE: return "CUDA_ERROR_INVALID_HANDLE";
        case CUDA_ERROR_NOT_FOUND: return "CUDA_ERROR_NOT_FOUND";
        case CUDA_ERROR_LAUNCH_FAILED: return "CUDA_ERROR_LAUNCH_FAILED";
        default: return nullptr;
    }
}

// The `.entry` names of a PTX text.
std::vector<std::string> ptx_entries(const char* ptx) {
    std::vector<std::string> names;
    const char* p = ptx;
    while ((p = std::strstr(p, ".entry")) != nullptr) {
        p += 6;
        while (*p == ' ' || *p == '\t') ++p;
        const char* start = p;
        while (*p && *p != '(' && *p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') ++p;
        if (p > start) names.emplace_back(start, p);
    }
    return names;
}

void write_log(unsigned count, const int* options, void** values, const std::string& text) {
    for (unsigned i = 0; i < count; ++i) {
        if (options[i] != 5) continue;  // CU_JIT_ERROR_LOG_BUFFER; its size is CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES (6)
        size_t size = 0;
        for (unsigned j = 0; j < count; ++j)
            if (options[j] == 6) size = (size_t)reinterpret_cast<uintptr_t>(values[j]);
        char* buffer = static_cast<char*>(values[i]);
        if (!buffer || size == 0) continue;
        std::snprintf(buffer, size, "%s", text.c_str());
    }
}

}  // namespace

namespace ug_emu {
bool device_range_valid(const void* p, size_t bytes) {
    std::shared_lock lock(g_memoryGate);
    return inside_allocation(reinterpret_cast<uintptr_t>(p), bytes);
}
}  // namespace ug_emu

extern "C" {

// ---- initialisation, device, context ----
int cuInit(unsigned flags) {
    if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
    g_initialized = true;
    return CUDA_SUCCESS;
}
int cuDriverGetVersion(int* version) {
    if (!version) return CUDA_ERROR_INVALID_VALUE;
    *version = 12000;
    return CUDA_SUCCESS;
}
int cuDeviceGetCount(int* count) {
    if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
    *count = 1;
    return CUDA_SUCCESS;
}
int cuDeviceGet(int* device, int ordinal) {
    if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
    *device = 0;
    return CUDA_SUCCESS;
}
int cuDeviceGetName(char* name, int length, int device) {
    if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
    std::snprintf(name, (size_t)length, "UltraGen CUDA emulator (host C++ build of kernels/, not a GPU)");
    return CUDA_SUCCESS;
}
int cuDeviceTotalMem_v2(size_t* bytes, int device) {
    if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
    *bytes = (size_t)kTotalMemory;
    return CUDA_SUCCESS;
}
int cuDeviceGetAttribute(int* value, int attribute, int device) {
    if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
    switch (attribute) {
        case 1: *value = kMaxThreadsPerBlock; return CUDA_SUCCESS;          // MAX_THREADS_PER_BLOCK
        case 2: case 3: *value = 1024; return CUDA_SUCCESS;                 // MAX_BLOCK_DIM_X, Y
        case 4: *value = 64; return CUDA_SUCCESS;                           // MAX_BLOCK_DIM_Z
        case 5: *value = 2147483647; return CUDA_SUCCESS;                   // MAX_GRID_DIM_X
        case 6: case 7: *value = 65535; return CUDA_SUCCESS;                // MAX_GRID_DIM_Y, Z
        case 8: *value = kSharedPerBlock; return CUDA_SUCCESS;              // MAX_SHARED_MEMORY_PER_BLOCK
        case 10: *value = 32; return CUDA_SUCCESS;                          // WARP_SIZE
        case 16: *value = kMultiprocessors; return CUDA_SUCCESS;            // MULTIPROCESSOR_COUNT
        case 38: *value = 40 << 20; return CUDA_SUCCESS;                    // L2_CACHE_SIZE (A100: 40 MB)
        case 75: *value = 8; return CUDA_SUCCESS;                           // COMPUTE_CAPABILITY_MAJOR
        case 76: *value = 0; return CUDA_SUCCESS;                           // COMPUTE_CAPABILITY_MINOR
        case 97: *value = kSharedPerBlockOptin; return CUDA_SUCCESS;        // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
        default: return CUDA_ERROR_INVALID_VALUE;
    }
}
int cuDevicePrimaryCtxRetain(void** context, int device) {
    if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
    static int primary;
    *context = &primary;
    return CUDA_SUCCESS;
}
int cuDevicePrimaryCtxRelease_v2(int device) { return device == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_DEVICE; }
int cuCtxSetCurrent(void* context) { return context ? CUDA_SUCCESS : CUDA_ERROR_INVALID_CONTEXT; }
int cuCtxSynchronize() { return CUDA_SUCCESS; }

int cuGetErrorName(int status, const char** name) {
    const char* known = error_name(status);
    if (!known) return CUDA_ERROR_INVALID_VALUE;
    *name = known;
    return CUDA_SUCCESS;
}
int cuGetErrorString(int status, const char** text) {
    switch (status) {
        case CUDA_SUCCESS: *text = "no error"; return CUDA_SUCCESS;
        case CUDA_ERROR_INVALID_VALUE: *text = "invalid argument"; return CUDA_SUCCESS;
        case CUDA_ERROR_OUT_OF_MEMORY: *text = "out of memory"; return CUDA_SUCCESS;
        case CUDA_ERROR_INVALID_PTX: *text = "a PTX entry has no emulated kernel (rebuild the emulator)"; return CUDA_SUCCESS;
        case CUDA_ERROR_NOT_FOUND: *text = "named symbol not found"; return CUDA_SUCCESS;
        case CUDA_ERROR_LAUNCH_FAILED:
            *text = t_lastFailure.empty() ? "unspecified launch failure" : t_lastFailure.c_str();
            return CUDA_SUCCESS;
        default:
            if (!error_name(status)) return CUDA_ERROR_INVALID_VALUE;
            *text = error_name(status);
            return CUDA_SUCCESS;
    }
}

// ---- memory ----
int cuMemAlloc_v2(uintptr_t* pointer, size_t bytes) {
    if (!pointer || bytes == 0) return CUDA_ERROR_INVALID_VALUE;
    std::unique_lock lock(g_memoryGate);
    if (g_allocated + (long long)bytes > kTotalMemory) return CUDA_ERROR_OUT_OF_MEMORY;
    install_fault_handler();
    // 16-byte alignment (what the kernels need; cudaMalloc gives 256) so the guard page follows the last element closely.
    const size_t page = (size_t)getpagesize(), rounded = (bytes + 15) / 16 * 16;
    const size_t span = (rounded + page - 1) / page * page;
    void* mapping = mmap(nullptr, span + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mapping == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
    char* base = static_cast<char*>(mapping);
    mprotect(base + span, page, PROT_NONE);
    char* p = base + span - rounded;
    std::memset(p, 0xA5, bytes);  // device memory is not zeroed
    *pointer = reinterpret_cast<uintptr_t>(p);
    g_allocations[*pointer] = Allocation{bytes, base, span + page};
    g_allocated += (long long)bytes;
    return CUDA_SUCCESS;
}
int cuMemFree_v2(uintptr_t pointer) {
    std::unique_lock lock(g_memoryGate);
    auto it = g_allocations.find(pointer);
    if (it == g_allocations.end()) return CUDA_ERROR_INVALID_VALUE;
    g_allocated -= (long long)it->second.bytes;
    munmap(it->second.mapping, it->second.mappingBytes);
    g_allocations.erase(it);
    return CUDA_SUCCESS;
}
int cuMemGetInfo_v2(size_t* freeBytes, size_t* totalBytes) {
    std::shared_lock lock(g_memoryGate);
    *freeBytes = (size_t)(kTotalMemory - g_allocated);
    *totalBytes = (size_t)kTotalMemory;
    return CUDA_SUCCESS;
}
int cuMemcpyHtoD_v2(uintptr_t destination, const void* source, size_t bytes) {
    if (int status = check_range(destination, bytes, "cuMemcpyHtoD_v2")) return status;
    std::memcpy(reinterpret_cast<void*>(destination), source, bytes);
    return CUDA_SUCCESS;
}
int cuMemcpyDtoH_v2(void* destination, uintptr_t source, size_t bytes) {
    if (int status = check_range(source, bytes, "cuMemcpyDtoH_v2")) return status;
    std::memcpy(destination, reinterpret_cast<const void*>(source), bytes);
    return CUDA_SUCCESS;
}
int cuMemcpyDtoD_v2(uintptr_t destination, uintptr_t source, size_t bytes) {
    if (int status = check_range(destination, bytes, "cuMemcpyDtoD_v2 (destination)")) return status;
    if (int status = check_range(source, bytes, "cuMemcpyDtoD_v2 (source)")) return status;
    std::memmove(reinterpret_cast<void*>(destination), reinterpret_cast<const void*>(source), bytes);
    return CUDA_SUCCESS;
}
int cuMemsetD8_v2(uintptr_t destination, unsigned char value, size_t count) {
    if (int status = check_range(destination, count, "cuMemsetD8_v2")) return status;
    std::memset(reinterpret_cast<void*>(destination), value, count);
    return CUDA_SUCCESS;
}

// ---- modules and functions ----
int cuModuleLoadDataEx(void** module, const void* image, unsigned optionCount, int* options, void** optionValues) {
    if (!module || !image) return CUDA_ERROR_INVALID_VALUE;
    auto entries = ptx_entries(static_cast<const char*>(image));
    std::string missing;
    for (const auto& name : entries)
        if (!ug_emu::find_kernel(name.c_str())) missing += (missing.empty() ? "" : ", ") + name;
    if (entries.empty() || !missing.empty()) {
        write_log(optionCount, options, optionValues,
                  entries.empty() ? "ultragen cuda emulator: the image has no .entry (not PTX?)"
                                  : "ultragen cuda emulator: no emulated kernel for PTX entries " + missing +
                                        " (rebuild the emulator from the same kernels/ as the PTX)");
        return CUDA_ERROR_INVALID_PTX;
    }
    write_log(optionCount, options, optionValues, "");
    auto* loaded = new Module{std::move(entries)};
    std::lock_guard lock(g_objectsGate);
    g_modules.insert(loaded);
    *module = loaded;
    return CUDA_SUCCESS;
}
int cuModuleUnload(void* module) {
    std::lock_guard lock(g_objectsGate);
    auto* m = static_cast<Module*>(module);
    if (!g_modules.erase(m)) return CUDA_ERROR_INVALID_HANDLE;
    delete m;
    return CUDA_SUCCESS;
}
int cuModuleGetFunction(void** function, void* module, const char* name) {
    std::lock_guard lock(g_objectsGate);
    auto* m = static_cast<Module*>(module);
    if (!g_modules.count(m)) return CUDA_ERROR_INVALID_HANDLE;
    bool listed = false;
    for (const auto& entry : m->entries) listed |= entry == name;
    if (!listed) return CUDA_ERROR_NOT_FOUND;
    auto& slot = g_functions[name];
    if (!slot) slot = std::make_unique<Function>(Function{ug_emu::find_kernel(name)});
    *function = slot.get();
    return CUDA_SUCCESS;
}
int cuFuncSetAttribute(void* function, int attribute, int value) {
    auto* f = static_cast<Function*>(function);
    if (!f) return CUDA_ERROR_INVALID_HANDLE;
    if (attribute != 8) return CUDA_ERROR_INVALID_VALUE;  // only CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
    if (value < 0 || value > kSharedPerBlockOptin) return CUDA_ERROR_INVALID_VALUE;
    f->maxDynamicShared = value > kSharedPerBlock ? value : kSharedPerBlock;
    return CUDA_SUCCESS;
}

int cuLaunchKernel(void* function, unsigned gridX, unsigned gridY, unsigned gridZ, unsigned blockX, unsigned blockY,
                   unsigned blockZ, unsigned sharedBytes, void* stream, void** parameters, void** extra) {
    (void)stream;
    auto* f = static_cast<Function*>(function);
    if (!f) return CUDA_ERROR_INVALID_HANDLE;
    if (extra) return CUDA_ERROR_INVALID_VALUE;  // the backend passes kernelParams only
    if (gridX < 1 || gridY < 1 || gridZ < 1 || gridY > 65535 || gridZ > 65535 || blockX < 1 || blockY < 1 || blockZ < 1 ||
        (unsigned long long)blockX * blockY * blockZ > (unsigned long long)kMaxThreadsPerBlock || blockZ > 64)
        return CUDA_ERROR_INVALID_VALUE;
    if ((int)sharedBytes > f->maxDynamicShared) {
        t_lastFailure = "dynamic shared memory above the function's limit";
        return CUDA_ERROR_INVALID_VALUE;
    }
    ug_emu::LaunchShape shape{{gridX, gridY, gridZ}, {blockX, blockY, blockZ}, sharedBytes};
    std::string failure = ug_emu::run_launch(*f->kernel, shape, parameters);
    if (failure.empty()) return CUDA_SUCCESS;
    t_lastFailure = "unspecified launch failure (emulator: " + failure + ")";
    fprintf(stderr, "ultragen cuda emulator: %s\n", failure.c_str());
    return CUDA_ERROR_LAUNCH_FAILED;
}

// ---- streams and events (synchronous) ----
int cuStreamCreate(void** stream, unsigned flags) {
    (void)flags;
    *stream = new int(0);
    return CUDA_SUCCESS;
}
int cuStreamSynchronize(void*) { return CUDA_SUCCESS; }
int cuStreamDestroy_v2(void* stream) {
    delete static_cast<int*>(stream);
    return CUDA_SUCCESS;
}
int cuEventCreate(void** event, unsigned flags) {
    (void)flags;
    *event = new Event();
    return CUDA_SUCCESS;
}
int cuEventRecord(void* event, void* stream) {
    (void)stream;
    auto* e = static_cast<Event*>(event);
    if (!e) return CUDA_ERROR_INVALID_HANDLE;
    e->when = std::chrono::steady_clock::now();
    e->recorded = true;
    return CUDA_SUCCESS;
}
int cuEventSynchronize(void* event) { return event ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE; }
int cuEventElapsedTime(float* milliseconds, void* start, void* end) {
    auto *a = static_cast<Event*>(start), *b = static_cast<Event*>(end);
    if (!a || !b) return CUDA_ERROR_INVALID_HANDLE;
    if (!a->recorded || !b->recorded) return CUDA_ERROR_INVALID_HANDLE;
    *milliseconds = std::chrono::duration<float, std::milli>(b->when - a->when).count();
    return CUDA_SUCCESS;
}
int cuEventDestroy_v2(void* event) {
    delete static_cast<Event*>(event);
    return CUDA_SUCCESS;
}

}  // extern "C"
