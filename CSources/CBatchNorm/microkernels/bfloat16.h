/*
 * What both bfloat16 tables share (bfloat16.c, bfloat16_avx512.c): widening,
 * and narrowing in integer arithmetic.
 */
#ifndef CBN_MICROKERNELS_BFLOAT16_H
#define CBN_MICROKERNELS_BFLOAT16_H

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

/// A float's bits u (a uint32_t, or a cbn_vu32 of sixteen) rounded to the
/// nearest bfloat16, ties to even, in the low half: right for every float
/// but NaN. CBN_BF16_QUIET(u): a NaN's bfloat16, quiet, with its sign.
#define CBN_BF16_ROUND(u) (((u) + 0x7FFFu + (((u) >> 16) & 1u)) >> 16)
#define CBN_BF16_QUIET(u) (((u) >> 16) | 0x40u)

CBN_INLINE uint16_t cbn_bf16_narrow(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (uint16_t)(f != f ? CBN_BF16_QUIET(u) : CBN_BF16_ROUND(u));
}

/// Sixteen floats f (evaluated once) to bfloat16, rounded to nearest even, NaN kept quiet.
#define CBN_BF16_NARROW(f)                                                                   \
    ({                                                                                       \
        const cbn_vf narrowing_ = (f);                                                       \
        const cbn_vu32 u_ = (cbn_vu32)narrowing_, nan_ = (cbn_vu32)(narrowing_ != narrowing_); \
        const cbn_vu32 rounded_ = CBN_BF16_ROUND(u_), quiet_ = CBN_BF16_QUIET(u_);           \
        __builtin_convertvector((rounded_ & ~nan_) | (quiet_ & nan_), VE);                   \
    })
/// CBN_BF16_NARROW for sixteen floats none of which is NaN: the same bits,
/// without the NaN case (an infinity rounds to itself).
#define CBN_BF16_NARROW_NUMBERS(f)                                                           \
    ({                                                                                       \
        const cbn_vu32 u_ = (cbn_vu32)(f);                                                   \
        __builtin_convertvector(CBN_BF16_ROUND(u_), VE);                                     \
    })
/* Shared by both bfloat16 tables. */
#define CBN_BF16_WIDEN_V(v) __builtin_convertvector((cbn_vf)(__builtin_convertvector((v), cbn_vu32) << 16), VT)
#define CBN_BF16_WIDEN_S(x) ((double)cbn_bf16_widen(x))
#define CBN_BF16_NARROW_S(t) cbn_bf16_narrow((float)(t))

#ifdef CBN_BF16_NATIVE
/// The table for AVX-512 BF16 (bfloat16_avx512.c), bitwise cbn_kernels_bf16.
extern const cbn_kernels cbn_kernels_bf16_avx512;
#endif

#endif /* CBN_MICROKERNELS_BFLOAT16_H */
