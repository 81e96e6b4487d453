/*
 * Which microkernels this processor runs. The element types' tables are
 * float32.c, float64.c, float16.c and bfloat16.c (with its twin for AVX-512
 * BF16, bfloat16_avx512.c), each one instantiation of the template
 * (kernels_template.h, a file per operation in template/), so that the
 * element types cannot drift apart; each file says what its type is: how it
 * is stored, widened and narrowed, whether its results are checked, and which
 * tuning table (plan/tuning.h) it takes.
 */
#include "common.h"

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
