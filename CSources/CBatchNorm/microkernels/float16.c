/*
 * The binary16 microkernels: the template (kernels_template.h) for IEEE
 * binary16, the compiler's _Float16 (F16C instructions in the AVX2 and
 * AVX-512 clones, library calls in the baseline one), parameters in float.
 *
 * The half formats compute in float, checked: a value whose terms cancel
 * (y = BN(x) + z near zero, say, where float alone lost up to 8 ulps of
 * binary16 in HalfPrecisionTests) fails the check (template/arithmetic.h)
 * and is recomputed in double. Narrowing from double goes through float, a
 * second rounding that costs at most the one ulp the bound allows, only where
 * the double lies within a float's rounding of a half-format midpoint.
 */
#include "common.h"

#define CBN_WIDEN_V(v) __builtin_convertvector(__builtin_convertvector((v), cbn_vf), VT)
#define CBN_NARROW_V(v) __builtin_convertvector(__builtin_convertvector((v), cbn_vf), VE)
#define CBN_WIDEN_S(x) ((double)(float)(x))
#define CBN_NARROW_S(t) ((_Float16)(float)(t))

#define CBN_T float
#define CBN_ELEM _Float16
#define CBN_PARAM float
#define CBN_SUFFIX f16
#define CBN_TUNING cbn_tuning_f16
#define CBN_CHECK_RATIO 0x1p8f
#include "kernels_template.h"
