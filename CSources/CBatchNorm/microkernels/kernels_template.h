/*
 * The microkernels and finalize steps for one element type, a file per
 * operation in template/. Included once by each element type's file
 * (float32.c, float64.c, float16.c, bfloat16.c, bfloat16_avx512.c), with these
 * defined (every name they declare gets the suffix):
 *   CBN_ELEM     how tensors (x, y, dy, dx, z, dz) are stored: float, double,
 *                _Float16, or uint16_t holding bfloat16 bits;
 *   CBN_T        the type elementwise arithmetic and the coefficients use:
 *                the element type, or float for the half formats;
 *   CBN_PARAM    the type of gamma, beta, the running statistics and their
 *                gradients: the element type, or float for the half formats;
 *   CBN_WIDEN_V(v), CBN_NARROW_V(v): sixteen stored values to sixteen CBN_T
 *                and back (rounding to nearest even), CBN_WIDEN_S(x) and
 *                CBN_NARROW_S(t) one value; left undefined when CBN_ELEM is CBN_T;
 *   CBN_SUFFIX   f32, f64, f16 or bf16;
 *   CBN_TUNING   the type's tuning table (plan/tuning.h), which the plan
 *                reads too: how far ahead the loops prefetch, for one;
 *   CBN_CHECK_RATIO (optional) R: the elementwise results are checked (see
 *                template/arithmetic.h) and a value e formed from terms of total
 *                magnitude S is recomputed in double unless S <= R |e|.
 *                With float arithmetic, 2^8 for binary16 and 2^11 for
 *                bfloat16 keep every output within one unit in the last place
 *                of the float64 result;
 *   CBN_JOINT_LOOP (optional): the joint loop (statistics_beside and
 *                sums_beside, in template/statistics.h and sums.h) is
 *                compiled; without it, the table has neither and the plan
 *                never asks for them. The half formats leave it out: it ran
 *                slower for them.
 * The template #undefs all of these at its end (template/undef.h).
 * Tensors are widened on load and narrowed on store, once per value.
 *
 * Formulas (see CBatchNorm.h): with d = x - mean_hi, mean_hi the mean
 * rounded to T, and k3 holding the rest of the mean (set_coefficients),
 *   forward:  y  = d * k1 + k3
 *   backward: dx = k1 * dy + (k2 * d + k3)
 * Reductions accumulate in double, sixteen lanes at a time.
 */

/* UBSan's address checks (pointer overflow, alignment, null, object size)
 * and its checks of calls through pointers are left out of the
 * microkernels: ASan checks every load and store their vector loops make,
 * and those UBSan checks made each element type's file take two to three
 * times as long to compile, or more. The arithmetic checks stay. Builds
 * without clones only (the sanitizers' builds): clang accepts no
 * no_sanitize on a function with target_clones. */
#ifndef CBN_HAS_CLONES
#pragma clang attribute push(__attribute__((no_sanitize("pointer-overflow", "alignment", "null", "object-size", \
                                                        "function", "returns-nonnull-attribute"))),           \
                             apply_to = function)
#endif
#include "template/types.h"
#include "template/coefficients.h"
#include "template/arithmetic.h"
#include "template/run_sums.h"
#include "template/stores.h"
#include "template/elementwise.h"
#include "template/statistics.h"
#include "template/normalize.h"
#include "template/sums.h"
#include "template/input_gradient.h"
#include "template/finalize.h"

const cbn_kernels CBN_CAT(cbn_kernels, CBN_SUFFIX) = {
    .checked = CBN_CHECKED,
    .compute_bytes = sizeof(T),
    .tuning = &CBN_TUNING,
    .statistics = FN(statistics),
#ifdef CBN_JOINT_LOOP
    .statistics_beside = FN(statistics_beside),
    .sums_beside = FN(sums_beside),
#else
    .statistics_beside = NULL,
    .sums_beside = NULL,
#endif
    .normalize = FN(normalize),
    .sums = FN(sums),
    .input_gradient = FN(input_gradient),
    .finalize_forward = FN(finalize_forward),
    .finalize_backward = FN(finalize_backward),
    .prepare = FN(prepare),
    .inference_statistics = FN(inference_statistics),
};

#ifndef CBN_HAS_CLONES
#pragma clang attribute pop
#endif

#include "template/undef.h"
