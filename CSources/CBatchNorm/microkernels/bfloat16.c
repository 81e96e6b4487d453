/*
 * The bfloat16 microkernels: the template (kernels_template.h) for bfloat16,
 * parameters in float, checked as binary16 is (float16.c); and, where the
 * processor has AVX-512 BF16, a second table that narrows with it.
 */
#include "common.h"

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
/* Shared by both bfloat16 tables. */
#define CBN_BF16_WIDEN_V(v) __builtin_convertvector((cbn_vf)(__builtin_convertvector((v), cbn_vu32) << 16), VT)
#define CBN_BF16_WIDEN_S(x) ((double)cbn_bf16_widen(x))
#define CBN_BF16_NARROW_S(t) cbn_bf16_narrow((float)(t))

#define CBN_WIDEN_V(v) CBN_BF16_WIDEN_V(v)
#define CBN_NARROW_V(v) ({ const cbn_vf f_ = __builtin_convertvector((v), cbn_vf); CBN_BF16_NARROW(f_); })
#define CBN_WIDEN_S(x) CBN_BF16_WIDEN_S(x)
#define CBN_NARROW_S(t) CBN_BF16_NARROW_S(t)

#define CBN_T float
#define CBN_ELEM uint16_t
#define CBN_PARAM float
#define CBN_SUFFIX bf16
#define CBN_TUNING cbn_tuning_bf16
#define CBN_CHECK_RATIO 0x1p11f
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
#define CBN_WIDEN_V(v) CBN_BF16_WIDEN_V(v)
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
#define CBN_WIDEN_S(x) CBN_BF16_WIDEN_S(x)
#define CBN_NARROW_S(t) CBN_BF16_NARROW_S(t)

#define CBN_T float
#define CBN_ELEM uint16_t
#define CBN_PARAM float
#define CBN_SUFFIX bf16_avx512
#define CBN_TUNING cbn_tuning_bf16
#define CBN_CHECK_RATIO 0x1p11f
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
