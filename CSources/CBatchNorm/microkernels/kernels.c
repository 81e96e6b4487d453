/*
 * Microkernels for float, double, binary16 and bfloat16, generated from one
 * template (kernels_template.h) so that the element types cannot drift apart.
 */
#include <string.h>

#include "../job.h"
#include "moments.h"

/// Sixteen doubles: the accumulator vector of every reduction. Every element
/// type is processed sixteen values at a time and widened to this, so the
/// order of additions is the same for all four types and for every ISA.
typedef double cbn_vd __attribute__((vector_size(16 * sizeof(double))));

/// Helpers are forced inline so that each instruction-set clone of an item
/// microkernel gets its own copy compiled for that instruction set.
#define CBN_INLINE static inline __attribute__((always_inline))

/// Item microkernels are compiled for AVX-512 (x86-64-v4), AVX2 (x86-64-v3)
/// and baseline x86-64; the dynamic loader picks one for the CPU at start-up
/// (an ifunc). Elsewhere they are compiled once, for the target. Under
/// ThreadSanitizer too: its instrumented ifunc resolvers would run before the
/// sanitizer's runtime is up and crash the process at load.
#if defined(__has_feature)
#if __has_feature(thread_sanitizer) && !defined(CBN_NO_MULTIVERSIONING)
#define CBN_NO_MULTIVERSIONING 1
#endif
#endif
#if defined(__x86_64__) && defined(__linux__) && !defined(CBN_NO_MULTIVERSIONING)
#define CBN_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
/// A further bfloat16 table for AVX-512 with BF16 (below), chosen at run time.
#define CBN_BF16_NATIVE 1
#include <immintrin.h>
#else
#define CBN_CLONES
#endif
#define CBN_MULTIVERSIONED CBN_CLONES

/* Vectors never cross a function boundary: an AVX2 clone may not pass a
 * 64-byte vector by value to an inlined helper. Loads and stores are macros. */
#define CBN_LOAD(type, p) ({ type cbn_loaded_; memcpy(&cbn_loaded_, (p), sizeof cbn_loaded_); cbn_loaded_; })
#define CBN_STORE(type, p, v) do { type cbn_stored_ = (v); memcpy((p), &cbn_stored_, sizeof cbn_stored_); } while (0)
#define cbn_vd_load(p) CBN_LOAD(cbn_vd, p)
#define cbn_vd_store(p, v) CBN_STORE(cbn_vd, p, v)

/// Sum of the sixteen lanes in a fixed pairwise order.
CBN_INLINE double cbn_vd_sum(const cbn_vd *v) {
    double s8[8], s4[4];
    for (int i = 0; i < 8; i++) s8[i] = (*v)[i] + (*v)[i + 8];
    for (int i = 0; i < 4; i++) s4[i] = s8[i] + s8[i + 4];
    return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}


/// The columns walk's accumulators for w channels: sixteen lanes per channel
/// (lane l of channel k at lane_a[l*w + k], in the worker's scratch; NULL
/// when runs are shorter than CBN_LANES and every value goes to the tail)
/// and a tail per channel. `a` and `b` are the two sums a pass takes.
typedef struct cbn_column_sums {
    double *lane_a, *lane_b;
    double tail_a[CBN_MAX_BLOCK_CHANNELS], tail_b[CBN_MAX_BLOCK_CHANNELS];
} cbn_column_sums;

/// Zeroes the sums; `lanes` is the worker's scratch (2*CBN_LANES*w doubles) or NULL.
CBN_INLINE void cbn_column_sums_clear(cbn_column_sums *sums, double *lanes, int64_t w) {
    sums->lane_a = lanes;
    sums->lane_b = lanes ? lanes + CBN_LANES * w : NULL;
    if (lanes) memset(lanes, 0, sizeof(double) * 2 * CBN_LANES * w);
    memset(sums->tail_a, 0, sizeof(double) * w);
    memset(sums->tail_b, 0, sizeof(double) * w);
}

/// Channel k's totals: its lanes' pairwise sum (cbn_vd_sum, as a planes walk
/// reduces its vector accumulator) plus its tail.
CBN_INLINE void cbn_column_sums_total(const cbn_column_sums *sums, int64_t w, int64_t k, double *a, double *b) {
    cbn_vd va = {0}, vb = {0};
    if (sums->lane_a)
        for (int l = 0; l < CBN_LANES; l++) {
            va[l] = sums->lane_a[l * w + k];
            vb[l] = sums->lane_b[l * w + k];
        }
    *a = cbn_vd_sum(&va) + sums->tail_a[k];
    *b = cbn_vd_sum(&vb) + sums->tail_b[k];
}

/// Calls ADD(a, b, first_row, stride, rows) over the segments of rows
/// [begin, end) in the reduction order (plan.h): lane l gets rows first + l,
/// first + l + 16, ... (up to four per call, so that the accumulators are
/// touched once per four rows), the tail the rows past the segment's last
/// multiple of 16 (up to four per call, in order).
#define CBN_COLUMN_SEGMENTS(plan, begin, end, sums, w, ADD)                                      \
    do {                                                                                         \
        const int64_t C_ = (plan)->shape.channels;                                               \
        int64_t first_, length_;                                                                 \
        cbn_segments segments_ = cbn_segments_make((plan), (begin), (end));                      \
        while (cbn_segments_next(&segments_, &first_, &length_)) {                               \
            const int64_t full_ = (sums)->lane_a ? length_ / CBN_LANES * CBN_LANES : 0;          \
            for (int64_t g_ = 0; g_ < full_; g_ += 4 * CBN_LANES) {                              \
                const int64_t rows_ = cbn_min64((full_ - g_) / CBN_LANES, 4);                      \
                for (int64_t l_ = 0; l_ < CBN_LANES; l_++)                                       \
                    ADD((sums)->lane_a + l_ * (w), (sums)->lane_b + l_ * (w), first_ + g_ + l_,  \
                        CBN_LANES * C_, rows_);                                                  \
            }                                                                                    \
            for (int64_t r_ = first_ + full_; r_ < first_ + length_; r_ += 4)                    \
                ADD((sums)->tail_a, (sums)->tail_b, r_, C_, cbn_min64(4, first_ + length_ - r_));  \
        }                                                                                        \
    } while (0)

/* ---------- the element types ---------- */

/* float and double: stored as computed, parameters of the same type. */
#define CBN_WIDEN_V(v) (v)
#define CBN_NARROW_V(v) (v)
#define CBN_WIDEN_S(x) (x)
#define CBN_NARROW_S(t) (t)
#define CBN_T float
#define CBN_ELEM float
#define CBN_PARAM float
#define CBN_SUFFIX f32
#include "kernels_template.h"

#define CBN_WIDEN_V(v) (v)
#define CBN_NARROW_V(v) (v)
#define CBN_WIDEN_S(x) (x)
#define CBN_NARROW_S(t) (t)
#define CBN_T double
#define CBN_ELEM double
#define CBN_PARAM double
#define CBN_SUFFIX f64
#include "kernels_template.h"

/* The half formats compute in float, checked: a value whose terms cancel
 * (y = BN(x) + z near zero, say, where float alone lost up to 8 ulps of
 * binary16 in HalfPrecisionTests) fails the test of CHECKED_V and is
 * recomputed in double. Narrowing from double goes through float, a second
 * rounding that costs at most the one ulp the bound allows, only where the
 * double lies within a float's rounding of a half-format midpoint. */
typedef float cbn_vf __attribute__((vector_size(16 * sizeof(float))));

/* IEEE binary16: the compiler's _Float16 (F16C instructions in the AVX2 and
 * AVX-512 clones, library calls in the baseline one). */
#define CBN_WIDEN_V(v) __builtin_convertvector(__builtin_convertvector((v), cbn_vf), VT)
#define CBN_NARROW_V(v) __builtin_convertvector(__builtin_convertvector((v), cbn_vf), VE)
#define CBN_WIDEN_S(x) ((double)(float)(x))
#define CBN_NARROW_S(t) ((_Float16)(float)(t))

#define CBN_T float
#define CBN_ELEM _Float16
#define CBN_PARAM float
#define CBN_SUFFIX f16
#define CBN_CHECK_RATIO 0x1p8f
#define CBN_PREFETCH_BYTES 4096
#include "kernels_template.h"

/* bfloat16, the upper half of a float's bits, held in uint16_t: widening
 * is a shift; narrowing rounds to nearest even by adding 0x7FFF plus the kept
 * part's lowest bit (a carry into the exponent is the right result, up to
 * infinity), and keeps NaN a quiet NaN with its sign. Integer vector
 * operations, so every clone vectorizes them and no library call is needed. */
typedef uint32_t cbn_vu32 __attribute__((vector_size(16 * sizeof(uint32_t))));

CBN_INLINE float cbn_bf16_widen(uint16_t b) {
    const uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

CBN_INLINE uint16_t cbn_bf16_narrow(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if (f != f) return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

/// Sixteen floats f to bfloat16, rounded to nearest even, NaN kept quiet.
#define CBN_BF16_NARROW(f)                                                                   \
    ({                                                                                       \
        const cbn_vu32 u_ = (cbn_vu32)(f), nan_ = (cbn_vu32)((f) != (f));                    \
        const cbn_vu32 rounded_ = (u_ + 0x7FFFu + ((u_ >> 16) & 1u)) >> 16;                  \
        __builtin_convertvector((rounded_ & ~nan_) | (((u_ >> 16) | 0x40u) & nan_), VE);     \
    })
#define CBN_WIDEN_V(v) __builtin_convertvector((cbn_vf)(__builtin_convertvector((v), cbn_vu32) << 16), VT)
#define CBN_NARROW_V(v) ({ const cbn_vf f_ = __builtin_convertvector((v), cbn_vf); CBN_BF16_NARROW(f_); })
#define CBN_WIDEN_S(x) ((double)cbn_bf16_widen(x))
#define CBN_NARROW_S(t) cbn_bf16_narrow((float)(t))

#define CBN_T float
#define CBN_ELEM uint16_t
#define CBN_PARAM float
#define CBN_SUFFIX bf16
#define CBN_CHECK_RATIO 0x1p11f
#define CBN_PREFETCH_BYTES 4096
#include "kernels_template.h"

#ifdef CBN_BF16_NATIVE
/* bfloat16 again, for processors with AVX-512 BF16: its vcvtneps2bf16
 * narrows sixteen floats in one instruction, with the same result as
 * CBN_BF16_NARROW on every float but the subnormal ones (compared on all 2^32
 * floats), which it flushes to zero. A vector holding one (vfpclassps) takes
 * CBN_BF16_NARROW instead, so the results are bitwise those of the table
 * above. Compiled for x86-64-v4 with BF16 only; cbn_bfloat16_kernels picks
 * it where the processor has both. Tuned generically, as the clones are:
 * the x86-64-v4 tuning prefers 256-bit vectors, and under it this table's
 * reductions ran in ymm registers, twice the instructions of the clones'. */
#define CBN_BF16_TARGET __attribute__((target("arch=x86-64-v4,avx512bf16,tune=x86-64")))
#undef CBN_MULTIVERSIONED
#undef CBN_INLINE
#define CBN_MULTIVERSIONED CBN_BF16_TARGET
#define CBN_INLINE static inline __attribute__((always_inline)) CBN_BF16_TARGET
#define CBN_WIDEN_V(v) __builtin_convertvector((cbn_vf)(__builtin_convertvector((v), cbn_vu32) << 16), VT)
#define CBN_NARROW_V(v)                                                                      \
    ({                                                                                       \
        const cbn_vf f_ = __builtin_convertvector((v), cbn_vf);                              \
        VE narrowed_;                                                                        \
        if (__builtin_expect(_mm512_fpclass_ps_mask((__m512)f_, 0x20) != 0, 0)) {            \
            narrowed_ = CBN_BF16_NARROW(f_);                                                 \
        } else {                                                                             \
            const __m256bh native_ = _mm512_cvtneps_pbh((__m512)f_);                         \
            memcpy(&narrowed_, &native_, sizeof narrowed_);                                  \
        }                                                                                    \
        narrowed_;                                                                           \
    })
#define CBN_WIDEN_S(x) ((double)cbn_bf16_widen(x))
#define CBN_NARROW_S(t) cbn_bf16_narrow((float)(t))

#define CBN_T float
#define CBN_ELEM uint16_t
#define CBN_PARAM float
#define CBN_SUFFIX bf16_avx512
#define CBN_CHECK_RATIO 0x1p11f
#define CBN_PREFETCH_BYTES 4096
#include "kernels_template.h"
#undef CBN_MULTIVERSIONED
#undef CBN_INLINE
#define CBN_MULTIVERSIONED CBN_CLONES
#define CBN_INLINE static inline __attribute__((always_inline))
#endif

const cbn_kernels *cbn_bfloat16_kernels(void) {
#ifdef CBN_BF16_NATIVE
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4") && __builtin_cpu_supports("avx512bf16")) return &cbn_kernels_bf16_avx512;
#endif
    return &cbn_kernels_bf16;
}

const char *cbn_isa_name(void) {
#if defined(__x86_64__) && defined(__linux__) && !defined(CBN_NO_MULTIVERSIONING)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4"))
        return cbn_bfloat16_kernels() != &cbn_kernels_bf16 ? "x86-64-v4 (AVX-512; AVX-512 BF16 for bfloat16)"
                                                           : "x86-64-v4 (AVX-512)";
    if (__builtin_cpu_supports("x86-64-v3")) return "x86-64-v3 (AVX2)";
    return "x86-64 baseline (SSE2)";
#else
    return "compiled for the build target";
#endif
}
