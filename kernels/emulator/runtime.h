// The emulator's runtime as the driver layer (driver.cpp) sees it: the kernel registry and one entry point that runs a
// launch to completion on the calling thread.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace ug_emu {

// Calls the kernel with its parameters unpacked from cuLaunchKernel's void*[] (one pointer per parameter).
using Trampoline = void (*)(void** parameters);

struct KernelEntry {
    const char* name;
    Trampoline trampoline;
};

void register_kernel(const char* name, Trampoline trampoline);
const KernelEntry* find_kernel(const char* name);
size_t kernel_count();

struct LaunchShape {
    unsigned grid[3];
    unsigned block[3];
    unsigned dynamicSharedBytes;
};

// Runs every block of the launch, one after another, each block's threads as fibers. Returns "" on success, else what
// went wrong (a fault the hardware would raise or a rule of the PTX ISA the kernel broke), naming the block and thread.
std::string run_launch(const KernelEntry& kernel, const LaunchShape& shape, void** parameters);

// Wavefronts an ldmatrix phase with these 8 row addresses needs (1 = no bank conflict); for tests.
unsigned ldmatrix_bank_degree(const void* const* rows);

// "kernel K, block (x, y, z), thread (x, y, z)" of the emulated thread running on this host thread, or "host code"
// (for the fault handler: async-signal-safe, a static buffer).
const char* current_thread_description();

// Device allocations (driver.cpp): whether [p, p + bytes) lies inside one live allocation.
bool device_range_valid(const void* p, size_t bytes);

}  // namespace ug_emu
