/*
 * The bfloat16 microkernels: the template (kernels_template.h) for bfloat16,
 * parameters in float, checked as binary16 is (float16.c). Where the
 * processor has AVX-512 BF16, cbn_bfloat16_kernels picks the twin table of
 * bfloat16_avx512.c instead, a translation unit of its own so that a build
 * compiles the two side by side.
 */
#include "bfloat16.h"

#define CBN_WIDEN_V(v) CBN_BF16_WIDEN_V(v)
#define CBN_NARROW_V(v) CBN_BF16_NARROW(v)
#define CBN_NARROW_NUMBERS_V(v) CBN_BF16_NARROW_NUMBERS(v)
#define CBN_WIDEN_S(x) CBN_BF16_WIDEN_S(x)
#define CBN_NARROW_S(t) CBN_BF16_NARROW_S(t)

#define CBN_T float
#define CBN_ELEM uint16_t
#define CBN_PARAM float
#define CBN_SUFFIX bf16
#define CBN_TUNING cbn_tuning_bf16
#define CBN_CHECK_RATIO 0x1p11f
#include "kernels_template.h"

const cbn_kernels *cbn_bfloat16_kernels(void) {
#ifdef CBN_BF16_NATIVE
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4") && __builtin_cpu_supports("avx512bf16")) return &cbn_kernels_bf16_avx512;
#endif
    return &cbn_kernels_bf16;
}
