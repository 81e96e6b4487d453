/*
 * Microkernels for float and double, generated from one template
 * (kernels_template.h) so that the two element types cannot drift apart.
 */
#include <string.h>

/* Vectors pass between static inline helpers only, never across an external
 * ABI, so the psABI note about wide vectors without AVX-512 does not apply. */
#pragma clang diagnostic ignored "-Wpsabi"
#include "../job.h"
#include "moments.h"

/// Sixteen doubles: the accumulator vector of every reduction. Both element
/// types are processed sixteen values at a time and widened to this, so the
/// order of additions is the same for float and double and for every ISA.
typedef double cbn_vd __attribute__((vector_size(16 * sizeof(double))));

static inline cbn_vd cbn_vd_load(const double *p) { cbn_vd v; memcpy(&v, p, sizeof v); return v; }
static inline void cbn_vd_store(double *p, cbn_vd v) { memcpy(p, &v, sizeof v); }

/// Sum of the sixteen lanes in a fixed pairwise order.
static inline double cbn_vd_sum(cbn_vd v) {
    double s8[8], s4[4];
    for (int i = 0; i < 8; i++) s8[i] = v[i] + v[i + 8];
    for (int i = 0; i < 4; i++) s4[i] = s8[i] + s8[i + 4];
    return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}

static inline int64_t cbn_min(int64_t a, int64_t b) { return a < b ? a : b; }

#define CBN_T float
#define CBN_SUFFIX f32
#include "kernels_template.h"
#undef CBN_T
#undef CBN_SUFFIX

#define CBN_T double
#define CBN_SUFFIX f64
#include "kernels_template.h"
#undef CBN_T
#undef CBN_SUFFIX
