#include <string.h>
#if defined(_OPENMP)
/* The OpenMP runtime's own (the toolchain's clang ships no omp.h). */
int omp_get_thread_num(void);
int omp_get_num_threads(void);
#endif
#include "CBenchSupport.h"

/* Clones for AVX-512, AVX2 and baseline x86-64, as the core's microkernels;
 * compiled once under ThreadSanitizer, whose instrumented ifunc resolvers
 * would run before its runtime is up and crash the process at load. */
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CBENCH_NO_MULTIVERSIONING 1
#endif
#endif
#if defined(__x86_64__) && defined(__linux__) && !defined(CBENCH_NO_MULTIVERSIONING)
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

typedef uint64_t cbench_w4 __attribute__((vector_size(32)));

CBENCH_MULTIVERSIONED
uint64_t cbench_read_words(const void *src, int64_t bytes) {
    const unsigned char *p = src;
    const int64_t n = bytes / 8;
    cbench_w4 acc[4] = {{0}, {0}, {0}, {0}};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        for (int k = 0; k < 4; k++) {
            cbench_w4 v;
            memcpy(&v, p + 8 * (i + 4 * k), sizeof v);
            acc[k] += v;
        }
    }
    uint64_t s = 0;
    for (int k = 0; k < 4; k++)
        for (int l = 0; l < 4; l++) s += acc[k][l];
    for (; i < n; i++) {
        uint64_t w;
        memcpy(&w, p + 8 * i, sizeof w);
        s += w;
    }
    return s;
}

uint64_t cbench_read_words_openmp(const void *src, int64_t bytes, int threads) {
    uint64_t total = 0;
#if defined(_OPENMP)
    const int64_t words = bytes / 8;
#pragma omp parallel num_threads(threads) reduction(+ : total)
    {
        const int64_t t = omp_get_thread_num(), team = omp_get_num_threads();
        const int64_t begin = words * t / team, end = words * (t + 1) / team;
        total += cbench_read_words((const unsigned char *)src + 8 * begin, 8 * (end - begin));
    }
#else
    (void)threads;
    total = cbench_read_words(src, bytes);
#endif
    return total;
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
