/*
 * The template's names for one element type: the suffixed function names,
 * the arithmetic and stored types, their vectors, loads, stores and
 * prefetches. Part of kernels_template.h.
 */

#define CBN_CAT2(a, b) a##_##b
#define CBN_CAT(a, b) CBN_CAT2(a, b)
#define FN(name) CBN_CAT(name, CBN_SUFFIX)
#define T CBN_T
#define ELEM CBN_ELEM
#define PARAM CBN_PARAM
#define VT FN(cbn_vec)
#define VE FN(cbn_stored)

/// Sixteen values of the arithmetic type, and sixteen as stored.
typedef T VT __attribute__((vector_size(16 * sizeof(T))));
typedef ELEM VE __attribute__((vector_size(16 * sizeof(ELEM))));

/// Integer lanes the width of T's: what comparing two VTs gives.
typedef __typeof__((VT){0} <= (VT){0}) FN(cbn_lane_mask);

/// Types stored as computed need no widening or narrowing.
#ifndef CBN_WIDEN_V
#define CBN_WIDEN_V(v) (v)
#define CBN_NARROW_V(v) (v)
#define CBN_WIDEN_S(x) (x)
#define CBN_NARROW_S(t) (t)
#endif

/// Narrowing of sixteen values known to hold no NaN (every lane passed the
/// half formats' check): a type's own narrowing without its NaN case where
/// it has one (bfloat16's, in integers), the same bits; else CBN_NARROW_V.
#ifndef CBN_NARROW_NUMBERS_V
#define CBN_NARROW_NUMBERS_V(v) CBN_NARROW_V(v)
#endif

/// Coefficients (arrays of T): loaded and stored as they are.
#define LOAD(p) CBN_LOAD(VT, p)
/// Tensors: widened on load, narrowed on store; GET and PUT for one value.
#define LOADX(p) CBN_WIDEN_V(CBN_LOAD(VE, p))
#define STOREX(p, v) CBN_STORE(VE, p, CBN_NARROW_V(v))
#define GET(p, i) ((T)CBN_WIDEN_S((p)[i]))
#define PUT(p, i, v) ((p)[i] = CBN_NARROW_S(v))
#define WIDEN(v) __builtin_convertvector((v), cbn_vd)
#define ABS(v) __builtin_elementwise_abs(v)
#define SPLAT(v) CBN_SPLAT(VT, v)

/// How far ahead, in values, loops over a run ask for their inputs along
/// contiguous memory: the tuning's distance where the plan prefetches, else 0.
#define CBN_PREFETCH_VALUES ((int64_t)(CBN_TUNING.prefetch_bytes / (int64_t)sizeof(ELEM)))
#define CBN_AHEAD(plan) ((plan)->prefetch ? CBN_PREFETCH_VALUES : 0)

/// Runs CALL(ahead) with ahead CBN_AHEAD(plan) as a constant in each branch,
/// so that the loops inside compile without a test per vector.
#define CBN_PREFETCH_SWITCH(plan, CALL)                                                          \
    do {                                                                                         \
        if ((plan)->prefetch)                                                                    \
            CALL(CBN_PREFETCH_VALUES);                                                           \
        else                                                                                     \
            CALL(0);                                                                             \
    } while (0)

/// Which cache a prefetch fills: L1 (and L2), or L2 alone.
enum { CBN_TO_L1 = 0, CBN_TO_L2 = 1 };

/// CBN_PREFETCH_SWITCH for the planes walk's reductions: CALL(ahead, level),
/// both constants in each branch, the level CBN_TO_L2 where the plan says so
/// (cbn_plan.prefetch_to_l2). Types whose tuning never asks for it compile
/// no branch for it.
#define CBN_REDUCTION_PREFETCH_SWITCH(plan, CALL)                                                \
    do {                                                                                         \
        if (CBN_TUNING.reduction_prefetch_to_l2 && (plan)->prefetch_to_l2)                       \
            CALL(CBN_PREFETCH_VALUES, CBN_TO_L2);                                                \
        else if ((plan)->prefetch)                                                               \
            CALL(CBN_PREFETCH_VALUES, CBN_TO_L1);                                                \
        else                                                                                     \
            CALL(0, CBN_TO_L1);                                                                  \
    } while (0)

/// PREFETCH_TO(p, ahead, level) asks for the line `ahead` values past p,
/// into the cache `level` says (a constant), unless `ahead` is 0; PREFETCH
/// into L1. The address may lie past the end of the tensor, which a
/// prefetch does not read; it is computed in integers, so no pointer leaves
/// its array.
#define PREFETCH_TO(p, ahead, level)                                                             \
    do {                                                                                         \
        if ((ahead) != 0) {                                                                      \
            const void *cbn_line_ = (const void *)((uintptr_t)(p) + (uintptr_t)((ahead) * (int64_t)sizeof(ELEM))); \
            if ((level) == CBN_TO_L2)                                                            \
                __builtin_prefetch(cbn_line_, 0, 2);                                             \
            else                                                                                 \
                __builtin_prefetch(cbn_line_);                                                   \
        }                                                                                        \
    } while (0)
#define PREFETCH(p, ahead) PREFETCH_TO(p, ahead, CBN_TO_L1)

/// The gradient's inputs `ahead` values past element i, into the cache
/// `level` says: dy, and y or x under relu.
CBN_INLINE void FN(prefetch_gradient)(const ELEM *dy, const ELEM *y, const ELEM *x, int64_t i, int64_t ahead,
                                      const int level, const int epi) {
    PREFETCH_TO(dy + i, ahead, level);
    if (epi & CBN_EPILOGUE_RELU) PREFETCH_TO(y + i, ahead, level);
    if (epi & CBN_EPILOGUE_RELU_FROM_X) PREFETCH_TO(x + i, ahead, level);
}

/// x `x_ahead` and, with a residual, z `ahead` values past element i.
CBN_INLINE void FN(prefetch_forward)(const ELEM *x, const ELEM *z, int64_t i, int64_t x_ahead, int64_t ahead,
                                     const int epi) {
    PREFETCH(x + i, x_ahead);
    if (epi & CBN_EPILOGUE_RESIDUAL) PREFETCH(z + i, ahead);
}
