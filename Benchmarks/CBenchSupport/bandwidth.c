#include <string.h>
#include "CBenchSupport.h"

#if defined(__x86_64__) && defined(__linux__)
#define CBENCH_MULTIVERSIONED __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CBENCH_MULTIVERSIONED
#endif

typedef float cbench_v16 __attribute__((vector_size(64)));

CBENCH_MULTIVERSIONED
void cbench_copy(float *dst, const float *src, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = src[i];
}

CBENCH_MULTIVERSIONED
void cbench_copy_nontemporal(float *dst, const float *src, int64_t n) {
    int64_t i = 0;
    for (; i < n && ((uintptr_t)(dst + i) & 63) != 0; i++) dst[i] = src[i];
    for (; i + 16 <= n; i += 16) {
        cbench_v16 v;
        memcpy(&v, src + i, sizeof v);
        __builtin_nontemporal_store(v, (cbench_v16 *)(dst + i));
    }
    for (; i < n; i++) dst[i] = src[i];
#if defined(__x86_64__)
    __builtin_ia32_sfence();
#endif
}

CBENCH_MULTIVERSIONED
double cbench_read(const float *src, int64_t n) {
    cbench_v16 acc[4] = {{0}, {0}, {0}, {0}};
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        for (int k = 0; k < 4; k++) {
            cbench_v16 v;
            memcpy(&v, src + i + 16 * k, sizeof v);
            acc[k] += v;
        }
    }
    double s = 0;
    for (int k = 0; k < 4; k++)
        for (int l = 0; l < 16; l++) s += acc[k][l];
    for (; i < n; i++) s += src[i];
    return s;
}

#define CBENCH_ELEMENTWISE(T, SUFFIX)                                                        \
    CBENCH_MULTIVERSIONED                                                                    \
    void cbench_relu_##SUFFIX(T *y, const T *z, int64_t n) {                                 \
        if (z)                                                                               \
            for (int64_t i = 0; i < n; i++) { T v = y[i] + z[i]; y[i] = v > 0 ? v : 0; }     \
        else                                                                                 \
            for (int64_t i = 0; i < n; i++) { T v = y[i]; y[i] = v > 0 ? v : 0; }           \
    }                                                                                        \
    CBENCH_MULTIVERSIONED                                                                    \
    void cbench_relu_mask_##SUFFIX(T *g, const T *dy, const T *y, int64_t n) {               \
        for (int64_t i = 0; i < n; i++) g[i] = y[i] > 0 ? dy[i] : 0;                         \
    }

CBENCH_ELEMENTWISE(float, f32)
CBENCH_ELEMENTWISE(double, f64)
