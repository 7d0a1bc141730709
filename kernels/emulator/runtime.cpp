// The emulator's execution model: a launch runs its blocks one after another on the calling host thread; the threads of
// a block are fibers (own stacks, switched by a few instructions of assembly) scheduled round-robin, each running until
// it finishes or waits at a barrier. What CUDA does across a warp or a block is done here at the same points:
//   * __syncthreads: every live thread of the block arrives before any continues;
//   * __syncwarp, __shfl_xor_sync, ldmatrix, mma.sync: every lane of the warp arrives (full masks only), the warp-wide
//     result is computed once by the last lane to arrive, then each lane takes its own part;
//   * cp.async: the destination is poisoned at issue and written only when the issuing thread's cp.async.wait_group
//     releases its group, so a read that the kernel has not ordered after the wait (and a barrier, for other threads)
//     sees the poison instead of the data.
// It checks what the PTX ISA requires (16-byte aligned ldmatrix rows and cp.async addresses, shared addresses inside the
// block's dynamic shared memory, cp.async sources inside a device allocation, no deadlock) and reports a violation as a
// launch failure naming the kernel, block and thread. Shared memory is poisoned (0xFF bytes: NaN as f32 and bf16) at the
// start of every block. Fragment layouts follow the PTX ISA ("Matrix fragments for mma.m16n8k16", "ldmatrix").
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdarg>
#include <cstdlib>
#include <random>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "include/cuda_emu.h"
#include "runtime.h"

// ---- context switch (x86-64 System V): saves the callee-saved registers and the FP control words on the old stack,
// stores its stack pointer in *save, and resumes the context whose stack pointer is `load`. ----------------------------
#if !defined(__x86_64__)
#error "the CUDA emulator's fiber switch is written for x86-64"
#endif
extern "C" void ug_emu_switch(void** save, void* load);
asm(R"(
.text
.globl ug_emu_switch
.type ug_emu_switch, @function
ug_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $16, %rsp
    stmxcsr 8(%rsp)
    fnstcw (%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    fldcw (%rsp)
    ldmxcsr 8(%rsp)
    addq $16, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
.size ug_emu_switch, .-ug_emu_switch
)");

namespace ug_emu {

thread_local ThreadView* t_view = nullptr;

// ---- registry ------------------------------------------------------------------------------------------------------
namespace {
std::map<std::string, KernelEntry>& registry() {
    static std::map<std::string, KernelEntry> entries;
    return entries;
}
}  // namespace

void register_kernel(const char* name, Trampoline trampoline) { registry()[name] = KernelEntry{name, trampoline}; }

const KernelEntry* find_kernel(const char* name) {
    auto it = registry().find(name);
    return it == registry().end() ? nullptr : &it->second;
}

size_t kernel_count() { return registry().size(); }

// ---- shared-memory bank statistics of ldmatrix (ULTRAGEN_EMULATOR_STATS=<file>) ------------------------------------------
// Each 8×8 matrix of an ldmatrix is one 128-byte shared-memory access of 8 rows × 16 bytes. With 32 banks of 4 bytes it
// is conflict-free when the 32 words fall in 32 different banks; otherwise it takes as many wavefronts as the most
// loaded bank has distinct words. Counted per kernel and written at exit: a property of the kernel's shared-memory layout
// that the emulator can measure without a GPU.
namespace {
struct BankStats {
    unsigned long long phases = 0, conflictedPhases = 0, extraWavefronts = 0;
    unsigned maxDegree = 0;
};
std::mutex g_statsGate;
std::map<std::string, BankStats> g_stats;

struct StatsWriter {
    ~StatsWriter() {
        const char* path = std::getenv("ULTRAGEN_EMULATOR_STATS");
        if (!path || !*path || g_stats.empty()) return;
        FILE* file = std::fopen(path, "a");
        if (!file) return;
        for (const auto& [kernel, s] : g_stats)
            std::fprintf(file, "%s ldmatrix_phases=%llu conflicted=%llu extra_wavefronts=%llu max_degree=%u\n", kernel.c_str(),
                         s.phases, s.conflictedPhases, s.extraWavefronts, s.maxDegree);
        std::fclose(file);
    }
} g_statsWriter;

}  // namespace

// Wavefronts one 8-row ldmatrix phase needs (1 = conflict-free).
unsigned ldmatrix_bank_degree(const void* const* rows) {
    uintptr_t words[32];
    int count = 0;
    for (int r = 0; r < 8; ++r)
        for (int w = 0; w < 4; ++w) {
            const uintptr_t word = reinterpret_cast<uintptr_t>(rows[r]) / 4 + (uintptr_t)w;
            bool seen = false;
            for (int i = 0; i < count; ++i) seen |= words[i] == word;  // the same word twice is a broadcast
            if (!seen) words[count++] = word;
        }
    unsigned perBank[32] = {};
    unsigned degree = 1;
    for (int i = 0; i < count; ++i) degree = std::max(degree, ++perBank[words[i] % 32]);
    return degree;
}

// ---- fibers and the block scheduler --------------------------------------------------------------------------------
namespace {

constexpr size_t kStackBytes = 256 * 1024;
constexpr int kWarpSize = 32;

enum class FiberState { Runnable, AtBlockBarrier, AtWarpBarrier, Done };

struct PendingCopy {
    void* dst;
    const void* src;
    bool valid;
};

struct Fiber {
    void* sp = nullptr;
    char* stackBase = nullptr;  // lowest address of the mapping (a guard page, then the stack)
    ThreadView view{};
    FiberState state = FiberState::Runnable;
    int warp = 0;
    int lane = 0;
    std::vector<PendingCopy> openGroup;
    std::vector<std::vector<PendingCopy>> committedGroups;
};

// Per-warp exchange area for the warp-wide operations.
struct Warp {
    int live = 0;
    int arrived = 0;
    uint64_t word[kWarpSize];
    const void* address[kWarpSize];
    uint32_t a[kWarpSize][4];
    uint32_t b[kWarpSize][2];
    float c[kWarpSize][4];
    uint32_t out[kWarpSize][4];
    float outF[kWarpSize][4];
};

// The order in which runnable threads are resumed. Between two barriers each thread runs without interruption, so two
// threads that touch the same shared or global word in one barrier interval (a race) give results that depend on this
// order: running a test under forward and reverse (or shuffled) order turns such races into differing results.
// Forward, reverse and shuffle resume every runnable thread once per round, so the warps of a block advance almost in
// step (one warp-wide operation apart) and a race between warps that are several warp-wide operations apart stays
// hidden. Greedy resumes the lowest-numbered runnable thread every time (greedy-reverse: the highest): one warp runs a
// whole barrier interval before the next warp starts it, the largest skew between warps a GPU could show.
enum class Schedule { Forward, Reverse, Shuffle, Greedy, GreedyReverse };

// ULTRAGEN_EMULATOR_SCHEDULE = forward (default) | reverse | shuffle[:seed] | greedy | greedy-reverse; read at every launch.
Schedule schedule_from_environment(std::mt19937& random) {
    const char* value = std::getenv("ULTRAGEN_EMULATOR_SCHEDULE");
    if (!value || !*value || std::strcmp(value, "forward") == 0) return Schedule::Forward;
    if (std::strcmp(value, "reverse") == 0) return Schedule::Reverse;
    if (std::strcmp(value, "greedy") == 0) return Schedule::Greedy;
    if (std::strcmp(value, "greedy-reverse") == 0) return Schedule::GreedyReverse;
    if (std::strncmp(value, "shuffle", 7) == 0) {
        if (value[7] == ':') random.seed((unsigned)std::strtoul(value + 8, nullptr, 10));
        return Schedule::Shuffle;
    }
    std::fprintf(stderr, "ultragen cuda emulator: unknown ULTRAGEN_EMULATOR_SCHEDULE '%s' (forward, reverse, shuffle[:seed], "
                         "greedy, greedy-reverse); using forward\n", value);
    return Schedule::Forward;
}

struct BlockRunner {
    Schedule schedule = Schedule::Forward;
    std::mt19937 random{12345};
    std::vector<Fiber> fibers;
    std::vector<Warp> warps;
    void* schedulerSp = nullptr;
    Fiber* current = nullptr;
    int live = 0;
    int blockArrived = 0;
    std::vector<unsigned char> sharedStorage;
    unsigned char* shared = nullptr;
    size_t sharedBytes = 0;
    const KernelEntry* kernel = nullptr;
    void** parameters = nullptr;
    bool faulted = false;
    std::string fault;
    bool collectStats = false;
    BankStats stats;  // this launch's, merged into g_stats at its end

    ~BlockRunner() {
        for (auto& f : fibers)
            if (f.stackBase) munmap(f.stackBase, kStackBytes + (size_t)getpagesize());
    }
};

thread_local BlockRunner* t_runner = nullptr;

BlockRunner& runner() { return *t_runner; }

void yield_to_scheduler() {
    BlockRunner& r = runner();
    ug_emu_switch(&r.current->sp, r.schedulerSp);
}

[[noreturn]] void fault(const char* format, ...) {
    BlockRunner& r = runner();
    char message[512];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof message, format, args);
    va_end(args);
    r.faulted = true;
    r.fault = std::string(current_thread_description()) + ": " + message;
    for (;;) yield_to_scheduler();  // the scheduler never resumes a faulted launch
}

void release_block_barrier(BlockRunner& r) {
    r.blockArrived = 0;
    for (auto& f : r.fibers)
        if (f.state == FiberState::AtBlockBarrier) f.state = FiberState::Runnable;
}

void release_warp_barrier(BlockRunner& r, int warp) {
    r.warps[warp].arrived = 0;
    const size_t begin = (size_t)warp * kWarpSize, end = std::min(r.fibers.size(), begin + kWarpSize);
    for (size_t i = begin; i < end; ++i)
        if (r.fibers[i].state == FiberState::AtWarpBarrier) r.fibers[i].state = FiberState::Runnable;
}

// Every live lane of the calling thread's warp arrives; the last one runs `combine` (if any) before the others resume.
template <typename Combine> void warp_barrier(Combine combine) {
    BlockRunner& r = runner();
    Fiber& f = *r.current;
    Warp& w = r.warps[f.warp];
    if (w.live != kWarpSize) fault("a warp-synchronous operation in a warp of %d live threads (the emulator needs all 32)", w.live);
    if (++w.arrived == w.live) {
        combine(w);
        release_warp_barrier(r, f.warp);
        return;
    }
    f.state = FiberState::AtWarpBarrier;
    yield_to_scheduler();
}

void check_full_mask(unsigned mask, const char* what) {
    if (mask != 0xffffffffu) fault("%s with member mask 0x%08x: only full-warp masks are emulated", what, mask);
}

void check_shared(const void* p, size_t bytes, const char* what) {
    BlockRunner& r = runner();
    const unsigned char* c = static_cast<const unsigned char*>(p);
    if (c < r.shared || c + bytes > r.shared + r.sharedBytes)
        fault("%s: shared address %p (+%zu bytes) is outside the block's %zu bytes of dynamic shared memory", what, p, bytes,
              r.sharedBytes);
}

void complete(const std::vector<PendingCopy>& group) {
    for (const auto& copy : group) {
        if (copy.valid)
            std::memcpy(copy.dst, copy.src, 16);
        else
            std::memset(copy.dst, 0, 16);
    }
}

void finish_pending_copies(Fiber& f) {
    for (auto& group : f.committedGroups) complete(group);
    f.committedGroups.clear();
    complete(f.openGroup);
    f.openGroup.clear();
}

void fiber_main() {
    BlockRunner& r = runner();
    r.kernel->trampoline(r.parameters);
    Fiber& f = *r.current;
    finish_pending_copies(f);
    f.state = FiberState::Done;
    --r.live;
    Warp& w = r.warps[f.warp];
    --w.live;
    // A thread that exits no longer holds back the others' barriers.
    if (r.blockArrived > 0 && r.blockArrived == r.live) release_block_barrier(r);
    if (w.arrived > 0 && w.arrived == w.live) release_warp_barrier(r, f.warp);
    for (;;) yield_to_scheduler();
}

extern "C" void ug_emu_fiber_entry() { fiber_main(); }

// Lays out a fresh stack so that switching to it "returns" into ug_emu_fiber_entry with the ABI's alignment.
void* prepare_stack(Fiber& f) {
    const size_t page = (size_t)getpagesize();
    if (!f.stackBase) {
        void* mapping = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mapping == MAP_FAILED) return nullptr;
        mprotect(mapping, page, PROT_NONE);  // stack overflow faults instead of corrupting a neighbour
        f.stackBase = static_cast<char*>(mapping);
    }
    uintptr_t top = reinterpret_cast<uintptr_t>(f.stackBase + page + kStackBytes) & ~(uintptr_t)15;
    uint64_t* sp = reinterpret_cast<uint64_t*>(top);
    *--sp = 0;                                                      // fake return address of the entry function
    *--sp = reinterpret_cast<uint64_t>(&ug_emu_fiber_entry);        // popped by ret
    for (int i = 0; i < 6; ++i) *--sp = 0;                          // rbp rbx r12 r13 r14 r15
    sp -= 2;                                                        // x87 control word at [sp], MXCSR at [sp + 8]
    uint32_t mxcsr;
    uint16_t fpcw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fpcw));
    std::memcpy(reinterpret_cast<char*>(sp) + 8, &mxcsr, 4);
    std::memcpy(reinterpret_cast<char*>(sp), &fpcw, 2);
    return sp;
}

std::string run_block(BlockRunner& r, const LaunchShape& shape, uint3 blockIndex) {
    const unsigned threads = shape.block[0] * shape.block[1] * shape.block[2];
    r.live = (int)threads;
    r.blockArrived = 0;
    r.warps.assign((threads + kWarpSize - 1) / kWarpSize, Warp{});
    for (unsigned t = 0; t < threads; ++t) {
        Fiber& f = r.fibers[t];
        f.view.threadIndex = {t % shape.block[0], (t / shape.block[0]) % shape.block[1], t / (shape.block[0] * shape.block[1])};
        f.view.blockIndex = blockIndex;
        f.view.blockSize = {shape.block[0], shape.block[1], shape.block[2]};
        f.view.gridSize = {shape.grid[0], shape.grid[1], shape.grid[2]};
        f.state = FiberState::Runnable;
        f.warp = (int)(t / kWarpSize);
        f.lane = (int)(t % kWarpSize);
        f.openGroup.clear();
        f.committedGroups.clear();
        f.sp = prepare_stack(f);
        if (!f.sp) return "could not map a fiber stack";
        ++r.warps[f.warp].live;
    }
    std::memset(r.shared, 0xFF, r.sharedBytes);

    ThreadView* savedView = t_view;
    std::vector<unsigned> order(threads);
    const bool reversed = r.schedule == Schedule::Reverse || r.schedule == Schedule::GreedyReverse;
    const bool greedy = r.schedule == Schedule::Greedy || r.schedule == Schedule::GreedyReverse;
    for (unsigned t = 0; t < threads; ++t) order[t] = reversed ? threads - 1 - t : t;
    while (r.live > 0 && !r.faulted) {
        bool ran = false;
        if (r.schedule == Schedule::Shuffle) std::shuffle(order.begin(), order.end(), r.random);
        for (unsigned i = 0; i < threads && !r.faulted; ++i) {
            Fiber& f = r.fibers[order[i]];
            if (f.state != FiberState::Runnable) continue;
            r.current = &f;
            t_view = &f.view;
            ug_emu_switch(&r.schedulerSp, f.sp);
            ran = true;
            if (greedy) break;  // rescan from the first thread of the order
        }
        if (!ran && r.live > 0 && !r.faulted) {
            std::string waits;
            for (unsigned t = 0; t < threads; ++t) {
                const Fiber& f = r.fibers[t];
                if (f.state == FiberState::Done) continue;
                if (!waits.empty()) waits += ", ";
                waits += "thread " + std::to_string(t) + (f.state == FiberState::AtBlockBarrier ? " at __syncthreads" : " at a warp barrier");
                if (waits.size() > 300) { waits += ", …"; break; }
            }
            t_view = savedView;
            char head[160];
            snprintf(head, sizeof head, "kernel %s, block (%u, %u, %u): deadlock (barrier not reached by every thread): ",
                     r.kernel->name, blockIndex.x, blockIndex.y, blockIndex.z);
            return head + waits;
        }
    }
    t_view = savedView;
    return r.faulted ? r.fault : std::string();
}

}  // namespace

std::string run_launch(const KernelEntry& kernel, const LaunchShape& shape, void** parameters) {
    if (!t_runner) t_runner = new BlockRunner();  // one per host thread, kept (stacks are reused across launches)
    BlockRunner& r = *t_runner;
    const unsigned threads = shape.block[0] * shape.block[1] * shape.block[2];
    if (r.fibers.size() < threads) r.fibers.resize(threads);
    r.schedule = schedule_from_environment(r.random);
    const char* statsPath = std::getenv("ULTRAGEN_EMULATOR_STATS");
    r.collectStats = statsPath && *statsPath;
    r.stats = BankStats{};
    r.kernel = &kernel;
    r.parameters = parameters;
    r.faulted = false;
    r.fault.clear();
    r.sharedBytes = shape.dynamicSharedBytes;
    r.sharedStorage.assign(r.sharedBytes + 128, 0);
    r.shared = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(r.sharedStorage.data()) + 127) & ~(uintptr_t)127);
    for (unsigned z = 0; z < shape.grid[2]; ++z)
        for (unsigned y = 0; y < shape.grid[1]; ++y)
            for (unsigned x = 0; x < shape.grid[0]; ++x) {
                std::string error = run_block(r, shape, uint3{x, y, z});
                if (!error.empty()) return error;
            }
    if (r.collectStats && r.stats.phases > 0) {
        std::lock_guard lock(g_statsGate);
        BankStats& total = g_stats[kernel.name];
        total.phases += r.stats.phases;
        total.conflictedPhases += r.stats.conflictedPhases;
        total.extraWavefronts += r.stats.extraWavefronts;
        total.maxDegree = std::max(total.maxDegree, r.stats.maxDegree);
    }
    return {};
}

const char* current_thread_description() {
    static thread_local char text[256];
    if (!t_runner || !t_runner->current || !t_runner->kernel || t_view != &t_runner->current->view) return "host code";
    const ThreadView& v = *t_view;
    snprintf(text, sizeof text, "kernel %s, block (%u, %u, %u), thread (%u, %u, %u)", t_runner->kernel->name, v.blockIndex.x,
             v.blockIndex.y, v.blockIndex.z, v.threadIndex.x, v.threadIndex.y, v.threadIndex.z);
    return text;
}

// ---- the CUDA operations the kernels call (cuda_emu.h) ---------------------------------------------------------------

void* dynamic_shared() { return runner().shared; }

void syncthreads() {
    BlockRunner& r = runner();
    Fiber& f = *r.current;
    if (++r.blockArrived == r.live) {
        release_block_barrier(r);
        return;
    }
    f.state = FiberState::AtBlockBarrier;
    yield_to_scheduler();
}

void syncwarp(unsigned mask) {
    check_full_mask(mask, "__syncwarp");
    warp_barrier([](Warp&) {});
}

uint64_t shfl_xor64(unsigned mask, uint64_t value, int laneMask, int width) {
    check_full_mask(mask, "__shfl_xor_sync");
    if (width <= 0 || width > kWarpSize || (width & (width - 1))) fault("__shfl_xor_sync with width %d", width);
    BlockRunner& r = runner();
    const int lane = r.current->lane, warp = r.current->warp;
    r.warps[warp].word[lane] = value;
    warp_barrier([](Warp&) {});
    int source = lane ^ laneMask;
    if (source / width != lane / width) source = lane;  // outside this lane's segment: own value (PTX shfl.bfly)
    const uint64_t result = r.warps[warp].word[source & (kWarpSize - 1)];
    warp_barrier([](Warp&) {});  // nobody overwrites word[] before every lane has read
    return result;
}

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lanes 8i..8i+7 give the addresses of rows 0..7 of matrix i (16 bytes
// each). Without .trans, register i of lane l holds row l/4, elements 2(l%4) and 2(l%4)+1 of matrix i; with .trans the
// matrix is transposed first: elements (row 2(l%4), col l/4) and (row 2(l%4)+1, col l/4).
void ldmatrix_x4(uint32_t (&out)[4], const void* rowAddress, bool transpose) {
    check_shared(rowAddress, 16, "ldmatrix");
    if (reinterpret_cast<uintptr_t>(rowAddress) % 16 != 0) fault("ldmatrix row address %p is not 16-byte aligned", rowAddress);
    BlockRunner& r = runner();
    const int lane = r.current->lane, warp = r.current->warp;
    r.warps[warp].address[lane] = rowAddress;
    warp_barrier([transpose, &r](Warp& w) {
        if (r.collectStats) {
            BankStats& stats = r.stats;
            for (int i = 0; i < 4; ++i) {
                const unsigned degree = ldmatrix_bank_degree(w.address + 8 * i);
                ++stats.phases;
                if (degree > 1) ++stats.conflictedPhases;
                stats.extraWavefronts += degree - 1;
                stats.maxDegree = std::max(stats.maxDegree, degree);
            }
        }
        for (int l = 0; l < kWarpSize; ++l) {
            const int g = l >> 2, q = l & 3;
            for (int i = 0; i < 4; ++i) {
                uint16_t lo, hi;
                if (!transpose) {
                    const char* row = static_cast<const char*>(w.address[8 * i + g]);
                    std::memcpy(&lo, row + 4 * q, 2);
                    std::memcpy(&hi, row + 4 * q + 2, 2);
                } else {
                    std::memcpy(&lo, static_cast<const char*>(w.address[8 * i + 2 * q]) + 2 * g, 2);
                    std::memcpy(&hi, static_cast<const char*>(w.address[8 * i + 2 * q + 1]) + 2 * g, 2);
                }
                w.out[l][i] = (uint32_t)lo | ((uint32_t)hi << 16);
            }
        }
    });
    for (int i = 0; i < 4; ++i) out[i] = r.warps[warp].out[lane][i];
    warp_barrier([](Warp&) {});
}

namespace {
float bf16_to_float(uint16_t bits) {
    const uint32_t u = (uint32_t)bits << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
}  // namespace

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, fragments per the PTX ISA with g = lane / 4, q = lane % 4:
//   A (16×16): register 0 = A[g][2q..2q+1], 1 = A[g+8][2q..2q+1], 2 = A[g][2q+8..2q+9], 3 = A[g+8][2q+8..2q+9]
//   B (16×8):  register 0 = B[2q..2q+1][g], 1 = B[2q+8..2q+9][g]
//   C, D (16×8 f32): c0, c1 = C[g][2q], C[g][2q+1]; c2, c3 = C[g+8][2q], C[g+8][2q+1]
// (lower k or column in the low half). Products of bf16 are exact in f32; the sum is formed in double and rounded once.
void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    BlockRunner& r = runner();
    const int lane = r.current->lane, warp = r.current->warp;
    Warp& mine = r.warps[warp];
    for (int i = 0; i < 4; ++i) {
        mine.a[lane][i] = a[i];
        mine.c[lane][i] = d[i];
    }
    mine.b[lane][0] = b0;
    mine.b[lane][1] = b1;
    warp_barrier([](Warp& w) {
        float A[16][16], B[16][8], C[16][8];
        for (int l = 0; l < kWarpSize; ++l) {
            const int g = l >> 2, q = l & 3;
            const int rows[4] = {g, g + 8, g, g + 8}, cols[4] = {2 * q, 2 * q, 2 * q + 8, 2 * q + 8};
            for (int i = 0; i < 4; ++i) {
                A[rows[i]][cols[i]] = bf16_to_float((uint16_t)(w.a[l][i] & 0xFFFFu));
                A[rows[i]][cols[i] + 1] = bf16_to_float((uint16_t)(w.a[l][i] >> 16));
            }
            B[2 * q][g] = bf16_to_float((uint16_t)(w.b[l][0] & 0xFFFFu));
            B[2 * q + 1][g] = bf16_to_float((uint16_t)(w.b[l][0] >> 16));
            B[2 * q + 8][g] = bf16_to_float((uint16_t)(w.b[l][1] & 0xFFFFu));
            B[2 * q + 9][g] = bf16_to_float((uint16_t)(w.b[l][1] >> 16));
            C[g][2 * q] = w.c[l][0];
            C[g][2 * q + 1] = w.c[l][1];
            C[g + 8][2 * q] = w.c[l][2];
            C[g + 8][2 * q + 1] = w.c[l][3];
        }
        for (int l = 0; l < kWarpSize; ++l) {
            const int g = l >> 2, q = l & 3;
            const int rows[4] = {g, g, g + 8, g + 8}, cols[4] = {2 * q, 2 * q + 1, 2 * q, 2 * q + 1};
            for (int i = 0; i < 4; ++i) {
                double sum = C[rows[i]][cols[i]];
                for (int k = 0; k < 16; ++k) sum += (double)A[rows[i]][k] * (double)B[k][cols[i]];
                w.outF[l][i] = (float)sum;
            }
        }
    });
    for (int i = 0; i < 4; ++i) d[i] = mine.outF[lane][i];
    warp_barrier([](Warp&) {});
}

// cp.async.cg.shared.global [dst], [src], 16, (valid ? 16 : 0): with src-size 0 nothing is read and 16 zero bytes land.
void cp_async16(void* sharedDst, const void* globalSrc, bool valid) {
    check_shared(sharedDst, 16, "cp.async destination");
    if (reinterpret_cast<uintptr_t>(sharedDst) % 16 != 0) fault("cp.async destination %p is not 16-byte aligned", sharedDst);
    if (valid) {
        if (reinterpret_cast<uintptr_t>(globalSrc) % 16 != 0) fault("cp.async source %p is not 16-byte aligned", globalSrc);
        if (!device_range_valid(globalSrc, 16)) fault("cp.async source %p (16 bytes) is outside every device allocation", globalSrc);
    }
    std::memset(sharedDst, 0xFF, 16);  // poison until the group completes
    runner().current->openGroup.push_back(PendingCopy{sharedDst, globalSrc, valid});
}

void cp_async_commit() {
    Fiber& f = *runner().current;
    f.committedGroups.push_back(std::move(f.openGroup));
    f.openGroup.clear();
}

// cp.async.wait_group N: every committed group but the N most recent has completed.
void cp_async_wait(int pendingGroups) {
    Fiber& f = *runner().current;
    while ((int)f.committedGroups.size() > pendingGroups) {
        complete(f.committedGroups.front());
        f.committedGroups.erase(f.committedGroups.begin());
    }
}

}  // namespace ug_emu
