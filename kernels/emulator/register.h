// Included at the end of each generated emulator translation unit (CMakeLists.txt: one per kernels/**/*.cu): registers
// every extern "C" __global__ entry of that file under its name, with a trampoline whose parameter types come from the
// kernel's own declaration (decltype), so argument unpacking cannot drift from the kernel's signature.
#pragma once
#include <type_traits>
#include <utility>

#include "runtime.h"

namespace ug_emu {

template <typename F, F kernel> struct KernelTrampoline;

template <typename... Params, void (*kernel)(Params...)>
struct KernelTrampoline<void (*)(Params...), kernel> {
    static void call(void** parameters) { invoke(parameters, std::index_sequence_for<Params...>{}); }

private:
    template <size_t... I> static void invoke(void** parameters, std::index_sequence<I...>) {
        kernel(*static_cast<std::remove_cv_t<std::remove_reference_t<Params>>*>(parameters[I])...);
    }
};

struct Registrar {
    Registrar(const char* name, Trampoline trampoline) { register_kernel(name, trampoline); }
};

}  // namespace ug_emu

#define UG_EMU_REGISTER(kernel) \
    static ug_emu::Registrar ug_emu_registrar_##kernel(#kernel, &ug_emu::KernelTrampoline<decltype(&kernel), &kernel>::call);
