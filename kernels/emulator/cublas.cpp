// cublasGemmEx and the handle calls the Cuda backend makes (src/UltraGen.Cuda/Interop/Cublas.cs), over host memory, for
// the CUDA emulator (built as libcublas.so.12 beside the emulated libcuda.so.1). Column-major, as cuBLAS:
//   C = alpha·op(A)·op(B) + beta·C,  op(A) m×k, op(B) k×n, C m×n;  op(X) = X (CUBLAS_OP_N) or Xᵀ (CUBLAS_OP_T)
// with cuBLAS's argument rules (leading dimensions at least the stored rows; INVALID_VALUE otherwise), its type
// combinations for CUBLAS_COMPUTE_32F (A, B of one type; C f32 or that type), and beta = 0 meaning C is not read (a
// NaN-poisoned output does not leak into the result). Accumulation in double, one rounding to C's type.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "include/cuda_bf16.h"
#include "include/cuda_fp16.h"

namespace {

enum : int {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_NOT_SUPPORTED = 15,
};
enum : int { CUDA_R_32F = 0, CUDA_R_16F = 2, CUDA_R_16BF = 14 };
enum : int { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 };
constexpr int CUBLAS_COMPUTE_32F = 68;

struct Handle {
    void* stream = nullptr;
};

double load(const void* base, int type, long long index) {
    switch (type) {
        case CUDA_R_32F: return static_cast<const float*>(base)[index];
        case CUDA_R_16BF: return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[index]);
        default: return __half2float(static_cast<const __half*>(base)[index]);
    }
}

void store(void* base, int type, long long index, double value) {
    switch (type) {
        case CUDA_R_32F: static_cast<float*>(base)[index] = (float)value; break;
        case CUDA_R_16BF: static_cast<__nv_bfloat16*>(base)[index] = __float2bfloat16_rn((float)value); break;
        default: static_cast<__half*>(base)[index] = __float2half_rn((float)value); break;
    }
}

bool supported(int abType, int cType) {
    if (abType == CUDA_R_32F) return cType == CUDA_R_32F;
    if (abType == CUDA_R_16BF || abType == CUDA_R_16F) return cType == abType || cType == CUDA_R_32F;
    return false;
}

}  // namespace

extern "C" {

int cublasCreate_v2(void** handle) {
    if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
    *handle = new Handle();
    return CUBLAS_STATUS_SUCCESS;
}
int cublasDestroy_v2(void* handle) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    delete static_cast<Handle*>(handle);
    return CUBLAS_STATUS_SUCCESS;
}
int cublasSetStream_v2(void* handle, void* stream) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    static_cast<Handle*>(handle)->stream = stream;
    return CUBLAS_STATUS_SUCCESS;
}

int cublasGemmEx(void* handle, int transa, int transb, int m, int n, int k, const void* alpha, const void* A, int aType,
                 int lda, const void* B, int bType, int ldb, const void* beta, void* C, int cType, int ldc, int computeType,
                 int algo) {
    (void)algo;
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    if ((transa != CUBLAS_OP_N && transa != CUBLAS_OP_T) || (transb != CUBLAS_OP_N && transb != CUBLAS_OP_T)) return CUBLAS_STATUS_INVALID_VALUE;
    if (m < 0 || n < 0 || k < 0) return CUBLAS_STATUS_INVALID_VALUE;
    const int aRows = transa == CUBLAS_OP_N ? m : k, bRows = transb == CUBLAS_OP_N ? k : n;
    if (lda < (aRows > 1 ? aRows : 1) || ldb < (bRows > 1 ? bRows : 1) || ldc < (m > 1 ? m : 1)) return CUBLAS_STATUS_INVALID_VALUE;
    if (computeType != CUBLAS_COMPUTE_32F || aType != bType || !supported(aType, cType)) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
    const double a = *static_cast<const float*>(alpha), b = *static_cast<const float*>(beta);
    for (int col = 0; col < n; ++col)
        for (int row = 0; row < m; ++row) {
            double sum = 0;
            for (int p = 0; p < k; ++p) {
                const long long ai = transa == CUBLAS_OP_N ? row + (long long)p * lda : p + (long long)row * lda;
                const long long bi = transb == CUBLAS_OP_N ? p + (long long)col * ldb : col + (long long)p * ldb;
                sum += load(A, aType, ai) * load(B, bType, bi);
            }
            const long long ci = row + (long long)col * ldc;
            const double previous = b == 0.0 ? 0.0 : b * load(C, cType, ci);
            store(C, cType, ci, a * sum + previous);
        }
    return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"
