// Host stand-in for cuda_fp16.h (CUDA emulator build only): binary16 storage and round-to-nearest-even conversions,
// subnormals and overflow to infinity included.
#pragma once
#include "cuda_emu.h"

struct __half { uint16_t bits; };

inline __half __float2half_rn(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    const uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    if (std::isnan(f)) return {(uint16_t)(sign | 0x7E00u)};
    const float a = std::fabs(f);
    if (a >= 65520.0f) return {(uint16_t)(sign | 0x7C00u)};  // rounds past the largest finite half (65504)
    // Scale so the half's last place is 1.0 and let the float rint (round-half-even) do the rounding.
    int exponent;
    std::frexp(a, &exponent);                       // a = m·2^exponent, m in [0.5, 1)
    const int place = exponent - 11 < -24 ? -24 : exponent - 11;  // 11 significant bits; subnormal spacing 2^-24
    const double scaled = std::nearbyint((double)a * std::ldexp(1.0, -place));
    const double value = std::ldexp(scaled, place);  // exact after rounding
    if (value == 0.0) return {sign};
    int e;
    const double m = std::frexp(value, &e);          // value = m·2^e, m in [0.5, 1)
    if (e - 1 < -14) return {(uint16_t)(sign | (uint16_t)std::ldexp(value, 24))};  // subnormal: value / 2^-24
    const uint16_t mantissa = (uint16_t)(std::ldexp(m, 11) - 1024.0);
    return {(uint16_t)(sign | (uint16_t)((e - 1 + 15) << 10) | mantissa)};
}
inline float __half2float(__half h) {
    const int exponent = (h.bits >> 10) & 0x1F, mantissa = h.bits & 0x3FF;
    float value;
    if (exponent == 0) value = std::ldexp((float)mantissa, -24);
    else if (exponent == 31) value = mantissa ? NAN : INFINITY;
    else value = std::ldexp((float)(mantissa | 0x400), exponent - 25);
    return (h.bits & 0x8000u) ? -value : value;
}
