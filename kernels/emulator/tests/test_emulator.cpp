// Tests of the CUDA emulator itself, through the driver API it exports (the way the C# backend uses it): the warp-wide
// operations against their PTX ISA definitions, barriers, cp.async ordering, the schedule orders, and every fault the
// emulator promises to report. The test kernels are in emulator_test_kernels.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "runtime.h"

extern "C" {
int cuInit(unsigned);
int cuModuleLoadDataEx(void**, const void*, unsigned, int*, void**);
int cuModuleGetFunction(void**, void*, const char*);
int cuModuleUnload(void*);
int cuMemAlloc_v2(uintptr_t*, size_t);
int cuMemFree_v2(uintptr_t);
int cuMemcpyHtoD_v2(uintptr_t, const void*, size_t);
int cuMemcpyDtoH_v2(void*, uintptr_t, size_t);
int cuLaunchKernel(void*, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, void*, void**, void**);
int cuFuncSetAttribute(void*, int, int);
int cuGetErrorString(int, const char**);
}

namespace {

constexpr int kLaunchFailed = 719;
constexpr int kInvalidValue = 1;
constexpr int kInvalidPtx = 218;

const char* kModule =
    ".version 7.0\n.target sm_80\n"
    ".visible .entry emu_test_mma(\n.visible .entry emu_test_ldmatrix(\n.visible .entry emu_test_shuffle(\n"
    ".visible .entry emu_test_barrier(\n.visible .entry emu_test_race(\n.visible .entry emu_test_cp_async(\n"
    ".visible .entry emu_test_misaligned_ldmatrix(\n.visible .entry emu_test_ldmatrix_outside_shared(\n"
    ".visible .entry emu_test_deadlock(\n.visible .entry emu_test_cp_async_bad_source(\n.visible .entry emu_test_overrun(\n"
    ".visible .entry emu_test_warp_skew(\n";

void* function(const char* name) {
    static void* module = [] {
        EXPECT_EQ(cuInit(0), 0);
        void* m = nullptr;
        EXPECT_EQ(cuModuleLoadDataEx(&m, kModule, 0, nullptr, nullptr), 0);
        return m;
    }();
    void* f = nullptr;
    EXPECT_EQ(cuModuleGetFunction(&f, module, name), 0) << name;
    return f;
}

// A device buffer filled from (or read back into) a host vector.
template <typename T> struct Device {
    uintptr_t ptr = 0;
    size_t count;
    explicit Device(const std::vector<T>& host) : count(host.size()) {
        EXPECT_EQ(cuMemAlloc_v2(&ptr, count * sizeof(T)), 0);
        EXPECT_EQ(cuMemcpyHtoD_v2(ptr, host.data(), count * sizeof(T)), 0);
    }
    explicit Device(size_t n) : Device(std::vector<T>(n)) {}
    std::vector<T> read() const {
        std::vector<T> host(count);
        EXPECT_EQ(cuMemcpyDtoH_v2(host.data(), ptr, count * sizeof(T)), 0);
        return host;
    }
    ~Device() { cuMemFree_v2(ptr); }
};

template <typename... P> int launch(const char* name, unsigned grid, unsigned block, unsigned shared, P... params) {
    void* values[] = {&params..., nullptr};
    return cuLaunchKernel(function(name), grid, 1, 1, block, 1, 1, shared, nullptr, values, nullptr);
}

std::string failure(int status) {
    const char* text = "";
    cuGetErrorString(status, &text);
    return text;
}

uint16_t bf16_bits(float x) {  // inputs below are exactly representable
    uint32_t u;
    std::memcpy(&u, &x, 4);
    return (uint16_t)(u >> 16);
}
float bf16_value(uint16_t b) {
    const uint32_t u = (uint32_t)b << 16;
    float x;
    std::memcpy(&x, &u, 4);
    return x;
}

struct ScheduleGuard {
    explicit ScheduleGuard(const char* value) { setenv("ULTRAGEN_EMULATOR_SCHEDULE", value, 1); }
    ~ScheduleGuard() { unsetenv("ULTRAGEN_EMULATOR_SCHEDULE"); }
};

}  // namespace

TEST(Emulator, MmaM16n8k16Bf16EqualsTheMatrixProduct) {
    std::mt19937 random(1);
    std::uniform_int_distribution<int> small(-8, 8);
    std::vector<uint16_t> a(256), b(128);
    std::vector<float> c(128);
    for (auto& x : a) x = bf16_bits((float)small(random) / 4);
    for (auto& x : b) x = bf16_bits((float)small(random) / 8);
    for (auto& x : c) x = (float)small(random);
    Device<uint16_t> da(a), db(b);
    Device<float> dc(c), dd(128);
    ASSERT_EQ(launch("emu_test_mma", 1, 32, 0, da.ptr, db.ptr, dc.ptr, dd.ptr), 0);
    auto d = dd.read();
    for (int row = 0; row < 16; ++row)
        for (int col = 0; col < 8; ++col) {
            double expected = c[row * 8 + col];
            for (int k = 0; k < 16; ++k) expected += (double)bf16_value(a[row * 16 + k]) * bf16_value(b[k * 8 + col]);
            EXPECT_EQ(d[row * 8 + col], (float)expected) << "D[" << row << "][" << col << "]";
        }
}

TEST(Emulator, LdmatrixDistributesRowsAndTransposes) {
    std::vector<uint16_t> m(256);
    for (int i = 0; i < 256; ++i) m[i] = (uint16_t)(i * 3 + 1);
    Device<uint16_t> dm(m);
    Device<uint32_t> out(128), outT(128);
    ASSERT_EQ(launch("emu_test_ldmatrix", 1, 32, 512, dm.ptr, out.ptr, outT.ptr), 0);
    auto r = out.read(), t = outT.read();
    for (int lane = 0; lane < 32; ++lane) {
        const int g = lane / 4, q = lane % 4;
        for (int i = 0; i < 4; ++i) {
            const uint16_t* mi = m.data() + 64 * i;
            EXPECT_EQ(r[lane * 4 + i], (uint32_t)mi[g * 8 + 2 * q] | ((uint32_t)mi[g * 8 + 2 * q + 1] << 16)) << lane << "," << i;
            EXPECT_EQ(t[lane * 4 + i], (uint32_t)mi[2 * q * 8 + g] | ((uint32_t)mi[(2 * q + 1) * 8 + g] << 16)) << lane << "," << i;
        }
    }
}

TEST(Emulator, ShuffleXorExchangesWithinEachWarp) {
    Device<int> out(3 * 64);
    Device<float> sums(64);
    ASSERT_EQ(launch("emu_test_shuffle", 1, 64, 0, out.ptr, sums.ptr), 0);
    auto o = out.read();
    auto s = sums.read();
    for (int t = 0; t < 64; ++t) {
        const int warp = t / 32, lane = t % 32;
        EXPECT_EQ(o[3 * t + 0], 1000 * warp + (lane ^ 1));
        EXPECT_EQ(o[3 * t + 1], 1000 * warp + (lane ^ 2));
        EXPECT_EQ(o[3 * t + 2], 1000 * warp + (lane ^ 16));
        EXPECT_EQ(s[t], 496.0f);  // 0 + 1 + … + 31
    }
}

TEST(Emulator, SyncthreadsOrdersSharedMemoryAcrossWarpsAndBlocks) {
    const unsigned threads = 96, blocks = 3;
    Device<int> out(threads * blocks);
    ASSERT_EQ(launch("emu_test_barrier", blocks, threads, threads * 4, out.ptr), 0);
    auto o = out.read();
    for (unsigned b = 0; b < blocks; ++b)
        for (unsigned t = 0; t < threads; ++t) EXPECT_EQ(o[b * threads + t], (int)(7 * ((t + 1) % threads) + b));
}

TEST(Emulator, ScheduleOrderExposesARace) {
    Device<int> out(1);
    ASSERT_EQ(launch("emu_test_race", 1, 128, 4, out.ptr), 0);
    EXPECT_EQ(out.read()[0], 127) << "forward order: the last thread's write survives";
    {
        ScheduleGuard reverse("reverse");
        ASSERT_EQ(launch("emu_test_race", 1, 128, 4, out.ptr), 0);
        EXPECT_EQ(out.read()[0], 0) << "reverse order: thread 0 writes last";
    }
}

TEST(Emulator, GreedyScheduleExposesARaceBetweenWarpsThatRoundRobinHides) {
    Device<int> out(1);
    for (const char* order : {"forward", "reverse", "greedy"}) {
        ScheduleGuard guard(order);
        ASSERT_EQ(launch("emu_test_warp_skew", 1, 64, 4, out.ptr), 0);
        EXPECT_EQ(out.read()[0], 2) << order << ": warp 0's write comes first";
    }
    ScheduleGuard guard("greedy-reverse");
    ASSERT_EQ(launch("emu_test_warp_skew", 1, 64, 4, out.ptr), 0);
    EXPECT_EQ(out.read()[0], 1) << "greedy-reverse: warp 1 runs its whole barrier interval before warp 0 starts";
}

TEST(Emulator, CpAsyncLandsOnlyAtWaitGroupAndZeroFillsInvalidSources) {
    Device<float> src(std::vector<float>{1.5f, -2.f, 3.25f, 4.f}), before(4), after(4);
    ASSERT_EQ(launch("emu_test_cp_async", 1, 1, 16, src.ptr, before.ptr, after.ptr, 0), 0);
    for (float x : before.read()) EXPECT_TRUE(std::isnan(x)) << "read before cp.async.wait_group must see the poison";
    EXPECT_EQ(after.read(), (std::vector<float>{1.5f, -2.f, 3.25f, 4.f}));
    ASSERT_EQ(launch("emu_test_cp_async", 1, 1, 16, src.ptr, before.ptr, after.ptr, 1), 0);
    EXPECT_EQ(after.read(), (std::vector<float>{0, 0, 0, 0}));
}

TEST(Emulator, FaultsAreLaunchFailuresNamingKernelAndCause) {
    int status = launch("emu_test_misaligned_ldmatrix", 1, 32, 256);
    EXPECT_EQ(status, kLaunchFailed);
    EXPECT_NE(failure(status).find("emu_test_misaligned_ldmatrix"), std::string::npos) << failure(status);
    EXPECT_NE(failure(status).find("not 16-byte aligned"), std::string::npos) << failure(status);

    status = launch("emu_test_ldmatrix_outside_shared", 1, 32, 128);
    EXPECT_EQ(status, kLaunchFailed);
    EXPECT_NE(failure(status).find("outside the block's 128 bytes"), std::string::npos) << failure(status);

    status = launch("emu_test_deadlock", 1, 64, 0);
    EXPECT_EQ(status, kLaunchFailed);
    EXPECT_NE(failure(status).find("deadlock"), std::string::npos) << failure(status);

    Device<float> small(4);
    status = launch("emu_test_cp_async_bad_source", 1, 1, 16, small.ptr);
    EXPECT_EQ(status, kLaunchFailed);
    EXPECT_NE(failure(status).find("outside every device allocation"), std::string::npos) << failure(status);

    // The emulator keeps working after a failed launch.
    Device<int> out(1);
    EXPECT_EQ(launch("emu_test_race", 1, 32, 4, out.ptr), 0);
}

TEST(Emulator, DriverChecksWhatTheBackendCouldGetWrong) {
    Device<float> buffer(4);
    float host[8] = {};
    EXPECT_EQ(cuMemcpyHtoD_v2(buffer.ptr, host, 32), kInvalidValue) << "copy past the allocation";
    EXPECT_EQ(cuMemFree_v2(buffer.ptr + 4), kInvalidValue) << "free of an address that is not an allocation";

    Device<int> out(1);
    EXPECT_EQ(launch("emu_test_race", 1, 32, 64 * 1024, out.ptr), kInvalidValue) << "above 48 KiB without the opt-in";
    ASSERT_EQ(cuFuncSetAttribute(function("emu_test_race"), 8, 64 * 1024), 0);
    EXPECT_EQ(launch("emu_test_race", 1, 32, 64 * 1024, out.ptr), 0);
    EXPECT_EQ(launch("emu_test_race", 1, 2048, 4, out.ptr), kInvalidValue) << "more than 1024 threads";

    void* module = nullptr;
    char log[256] = {};
    int options[] = {5, 6};
    void* values[] = {log, reinterpret_cast<void*>((uintptr_t)sizeof log)};
    EXPECT_EQ(cuModuleLoadDataEx(&module, ".visible .entry not_a_kernel(\n", 2, options, values), kInvalidPtx);
    EXPECT_NE(std::string(log).find("not_a_kernel"), std::string::npos) << log;
}

TEST(Emulator, LdmatrixBankDegreeSeesTheRowStride) {
    alignas(128) static char tile[8 * 1024];
    const void* rows[8];
    for (int r = 0; r < 8; ++r) rows[r] = tile + r * 128;  // bf16 rows of 64: every row starts in bank 0
    EXPECT_EQ(ug_emu::ldmatrix_bank_degree(rows), 8u);
    for (int r = 0; r < 8; ++r) rows[r] = tile + r * 144;  // padded by 8 bf16 (common/tiles.cuh): 8 bank groups
    EXPECT_EQ(ug_emu::ldmatrix_bank_degree(rows), 1u);
    for (int r = 0; r < 8; ++r) rows[r] = tile;  // one row read 8 times: a broadcast, not a conflict
    EXPECT_EQ(ug_emu::ldmatrix_bank_degree(rows), 1u);
}

TEST(EmulatorDeathTest, WritingPastTheEndOfAnAllocationStopsTheProcessNamingKernelAndBuffer) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    EXPECT_EXIT(
        {
            Device<float> buffer(7);  // 28 bytes: the guard page starts at byte 32
            launch("emu_test_overrun", 1, 32, 0, buffer.ptr, 8);
        },
        testing::ExitedWithCode(70), "illegal address .*4 bytes past the end of the 28-byte device allocation.*kernel emu_test_overrun, block \\(0, 0, 0\\), thread \\(0, 0, 0\\)");
    Device<float> buffer(8);
    EXPECT_EQ(launch("emu_test_overrun", 1, 32, 0, buffer.ptr, 7), 0) << "the last element itself is fine";
}
