/*
 * The bfloat16 microkernels for processors with AVX-512 BF16: the template
 * again, with the same widening as bfloat16.c and a narrowing by the
 * processor's own instruction.
 */
#include "bfloat16.h"

#ifdef CBN_BF16_NATIVE
/* AVX-512 BF16's vcvtneps2bf16 narrows sixteen floats in one instruction,
 * with the same result as CBN_BF16_NARROW on every float but the subnormal
 * ones (compared on all 2^32 floats), which it flushes to zero. A vector
 * holding one (vfpclassps) takes CBN_BF16_NARROW instead, so the results are
 * bitwise those of bfloat16.c's table. Compiled for x86-64-v4 with BF16
 * only; cbn_bfloat16_kernels picks it where the processor has both. Tuned generically, as the clones are:
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
#endif

