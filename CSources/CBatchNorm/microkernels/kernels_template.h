/*
 * The microkernels and finalize steps for one element type. Included by
 * kernels.c once per type, with these defined (every name below gets the
 * suffix):
 *   CBN_ELEM     how tensors (x, y, dy, dx, z, dz) are stored: float, double,
 *                _Float16, or uint16_t holding bfloat16 bits;
 *   CBN_T        the type elementwise arithmetic and the coefficients use:
 *                the element type, or float for the half formats;
 *   CBN_PARAM    the type of gamma, beta, the running statistics and their
 *                gradients: the element type, or float for the half formats;
 *   CBN_WIDEN_V(v), CBN_NARROW_V(v): sixteen stored values to sixteen CBN_T
 *                and back (rounding to nearest even), CBN_WIDEN_S(x) and
 *                CBN_NARROW_S(t) one value; identities when CBN_ELEM is CBN_T;
 *   CBN_SUFFIX   f32, f64, f16 or bf16;
 *   CBN_PREFETCH_BYTES (optional): the vector loops ask for their inputs
 *                about this many bytes ahead (PREFETCH below);
 *   CBN_CHECK_RATIO (optional) R: the elementwise results are checked (see
 *                CHECKED_V below) and a value e formed from terms of total
 *                magnitude S is recomputed in double unless S <= R |e|.
 *                With float arithmetic, 2^8 for binary16 and 2^11 for
 *                bfloat16 keep every output within one unit in the last place
 *                of the float64 result.
 * The template #undefs all of these at its end.
 * Tensors are widened on load and narrowed on store, once per value.
 *
 * Formulas (see CBatchNorm.h): with d = x - mean_hi, mean_hi the mean
 * rounded to T, and k3 holding the rest of the mean (set_coefficients),
 *   forward:  y  = d * k1 + k3
 *   backward: dx = k1 * dy + (k2 * d + k3)
 * Reductions accumulate in double, sixteen lanes at a time.
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

/// Coefficients (arrays of T): loaded and stored as they are.
#define LOAD(p) CBN_LOAD(VT, p)
/// Tensors: widened on load, narrowed on store; GET and PUT for one value.
#define LOADX(p) CBN_WIDEN_V(CBN_LOAD(VE, p))
#define STOREX(p, v) CBN_STORE(VE, p, CBN_NARROW_V(v))
#define GET(p, i) ((T)CBN_WIDEN_S((p)[i]))
#define PUT(p, i, v) ((p)[i] = CBN_NARROW_S(v))
#define WIDEN(v) __builtin_convertvector((v), cbn_vd)

/// PREFETCH(p, ahead) asks for the line `ahead` values past p; loops over a
/// run ask for their inputs CBN_AHEAD values on along contiguous memory. The
/// half formats compute more per byte than float does, and the processor's
/// own prefetchers fell behind them: 32x256x56x56 binary16 inference from
/// memory took 1.3x as long without, 28x28 planes 1.2x (float: no gain). The
/// address may lie past the end of the tensor, which a prefetch does not
/// read; it is computed in integers, so no pointer leaves its array.
#ifdef CBN_PREFETCH_BYTES
#define PREFETCH(p, ahead)                                                                       \
    __builtin_prefetch((const void *)((uintptr_t)(p) + (uintptr_t)((ahead) * (int64_t)sizeof(ELEM))))
#define CBN_AHEAD ((int64_t)(CBN_PREFETCH_BYTES / sizeof(ELEM)))
#else
#define PREFETCH(p, ahead) ((void)0)
#define CBN_AHEAD ((int64_t)0)
#endif
/// The gradient's inputs `ahead` values past element i: dy, and y under relu.
#define PREFETCH_GRADIENT(dy, y, i, ahead, epi)                                                  \
    do {                                                                                         \
        PREFETCH((dy) + (i), ahead);                                                             \
        if ((epi) & CBN_EPILOGUE_RELU) PREFETCH((y) + (i), ahead);                               \
    } while (0)

/// The coefficients (job.h) of a channel block's first channel (both walks):
/// in T, with the check rows (slack, bk1 = |k1|/R, bk2 = |k2|/R), and in
/// double for the checked recomputation (w*).
typedef struct FN(cbn_block_coefficients) {
    const T *hi, *k1, *k2, *k3, *slack, *bk1, *bk2;
    const double *wm, *wk1, *wk2, *wk3;
} FN(cbn_block_coefficients);

/* ---------- contiguous runs (planes walk) ---------- */

/// With d = x[i] - pivot: *sum += d and *sumsq += d^2, sixteen lanes at a
/// time; the values past the last full sixteen go to the tails. Accumulating
/// across runs and reducing once per block keeps short runs (7x7 planes)
/// cheap. d is formed in double, exactly for float input.
CBN_INLINE void FN(add_run_shifted)(const ELEM *x, int64_t n, double pivot, cbn_vd *sum, cbn_vd *sumsq,
                                    double *tail_sum, double *tail_sumsq) {
    cbn_vd s = *sum, q = *sumsq;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        PREFETCH(x + i, CBN_AHEAD);
        cbn_vd d = WIDEN(LOADX(x + i)) - pivot;
        s += d;
        q += d * d;
    }
    *sum = s;
    *sumsq = q;
    double ts = *tail_sum, tq = *tail_sumsq;
    for (; i < n; i++) {
        double d = (double)GET(x, i) - pivot;
        ts += d;
        tq += d * d;
    }
    *tail_sum = ts;
    *tail_sumsq = tq;
}

/// Thirty-two stored values, two VEs joined: a streamed output of a 2-byte
/// format is written a whole 64-byte line per store.
typedef ELEM FN(cbn_stored2) __attribute__((vector_size(32 * sizeof(ELEM))));
#define VE2 FN(cbn_stored2)
#define CBN_JOIN(a, b) __builtin_shufflevector(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, \
                                               16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31)
#define CBN_LINE_BYTES (sizeof(VE) < 64 ? 64 : sizeof(VE))

/// Stores lanes [first, first + count) of v to out[0, count), count < 16, in
/// pieces of 8, 4, 2 and 1 lanes of constant size: no library call.
CBN_INLINE void FN(store_lanes)(ELEM *out, const VE *v, int64_t first, int64_t count) {
    ELEM lanes[16];
    memcpy(lanes, v, sizeof *v);
    const ELEM *from = lanes + first;
    if (count & 8) { memcpy(out, from, 8 * sizeof(ELEM)); out += 8; from += 8; }
    if (count & 4) { memcpy(out, from, 4 * sizeof(ELEM)); out += 4; from += 4; }
    if (count & 2) { memcpy(out, from, 2 * sizeof(ELEM)); out += 2; from += 2; }
    if (count & 1) *out = *from;
}

/// Writes out[i] = VECTOR (sixteen values from i on) or SCALAR (one) for
/// i < n, narrowed to the element type. Both may use c_, the index of value
/// i's channel when the run is rows of `period` channels one after another
/// (i mod period, kept without a division per vector; unused, it compiles
/// away). With `stream`, the values from the first whole line on are written
/// with non-temporal stores, a whole line at a time, which do not read the
/// destination lines into the cache first (large outputs: a third less
/// memory traffic). A run of sixteen values or more takes no SCALAR: the
/// values before the first whole line and after the last whole vector come
/// from whole vectors that start at or end with them, computed before any
/// store of the run reaches their inputs and stored after the vectors they
/// overlap. The lanes they share get the same value twice (each value
/// depends on its own inputs only, with the same arithmetic in any lane), so
/// this holds in place too. Streamed, only their own lanes are stored: a
/// cached store into a line that non-temporal stores are filling makes the
/// processor write the partial line out (28x28 inference took twice as long).
#define CBN_WRITE_RUN(out, n, period, stream, SCALAR, VECTOR)                                    \
    do {                                                                                         \
        int64_t i = 0, c_ = 0;                                                                   \
        if ((n) < 16) {                                                                          \
            for (; i < (n); i++, c_ = CBN_NEXT_CHANNEL(c_, 1, period)) SCALAR;                   \
            break;                                                                               \
        }                                                                                        \
        /* streamed: the body starts at the first whole line, if a vector fits after it */       \
        int64_t start_ = 0;                                                                      \
        int streamed_ = 0;                                                                       \
        if (stream) {                                                                            \
            const int64_t head_ = (int64_t)((CBN_LINE_BYTES - ((uintptr_t)(out) & (CBN_LINE_BYTES - 1))) & \
                                            (CBN_LINE_BYTES - 1)) / (int64_t)sizeof(ELEM);       \
            if (head_ <= (n) - 16) {                                                             \
                start_ = head_;                                                                  \
                streamed_ = 1;                                                                   \
            }                                                                                    \
        }                                                                                        \
        const int tail_ = (((n) - start_) & 15) != 0;                                            \
        VE last_ = {0}, first_ = {0};                                                            \
        if (tail_) {                                                                             \
            i = (n) - 16;                                                                        \
            c_ = i % (period);                                                                   \
            last_ = CBN_NARROW_V(VECTOR);                                                        \
            i = 0;                                                                               \
            c_ = 0;                                                                              \
        }                                                                                        \
        for (; i + 16 <= start_; i += 16, c_ = CBN_NEXT_CHANNEL(c_, 16, period))                 \
            STOREX((out) + i, VECTOR);                                                           \
        const int64_t first_at_ = i;                                                             \
        if (i < start_) {                                                                        \
            first_ = CBN_NARROW_V(VECTOR);                                                       \
            c_ = CBN_NEXT_CHANNEL(c_, start_ - i, period);                                       \
            i = start_;                                                                          \
        }                                                                                        \
        if (streamed_ && sizeof(VE) < CBN_LINE_BYTES) {                                          \
            for (; i + 32 <= (n); i += 32) {                                                     \
                const VE one_ = CBN_NARROW_V(VECTOR);                                            \
                i += 16;                                                                         \
                c_ = CBN_NEXT_CHANNEL(c_, 16, period);                                           \
                const VE two_ = CBN_NARROW_V(VECTOR);                                            \
                i -= 16;                                                                         \
                c_ = CBN_NEXT_CHANNEL(c_, 16, period);                                           \
                __builtin_nontemporal_store(CBN_JOIN(one_, two_), (VE2 *)((out) + i));           \
            }                                                                                    \
        }                                                                                        \
        if (streamed_)                                                                           \
            for (; i + 16 <= (n); i += 16, c_ = CBN_NEXT_CHANNEL(c_, 16, period)) {              \
                VE result_ = CBN_NARROW_V(VECTOR);                                               \
                __builtin_nontemporal_store(result_, (VE *)((out) + i));                         \
            }                                                                                    \
        for (; i + 16 <= (n); i += 16, c_ = CBN_NEXT_CHANNEL(c_, 16, period))                    \
            STOREX((out) + i, VECTOR);                                                           \
        if (first_at_ < start_) FN(store_lanes)((out) + first_at_, &first_, 0, start_ - first_at_); \
        if (tail_ && streamed_)                                                                  \
            FN(store_lanes)((out) + i, &last_, 16 - ((n) - i), (n) - i);                         \
        else if (tail_)                                                                          \
            CBN_STORE(VE, (out) + (n) - 16, last_);                                              \
    } while (0)
#define CBN_NEXT_CHANNEL(c, step, period) ((c) + (step) < (period) ? (c) + (step) : ((c) + (step)) % (period))

/// Non-temporal stores are weakly ordered: fence them before the item ends.
#if defined(__x86_64__)
#define CBN_FENCE_STREAMS(stream) do { if (stream) __builtin_ia32_sfence(); } while (0)
#else
#define CBN_FENCE_STREAMS(stream) do { (void)(stream); } while (0)
#endif

/* ---------- epilogues: the activation and the residual ---------- */

/// Integer lanes the width of T's: what comparing two VTs gives.
typedef __typeof__((VT){0} <= (VT){0}) FN(cbn_lane_mask);

/// v where y > 0 or y is NaN, +0 elsewhere: relu(v) is KEEP(v, v), and the
/// gradient mask of y = relu(...) is KEEP(dy, y) (PyTorch's threshold_backward
/// passes the gradient unless y <= 0). A bit mask, so that the values kept
/// keep their bits in vectors and single values alike.
#define KEEP(v, y) ((VT)((FN(cbn_lane_mask))(v) & ~((y) <= (VT){0})))
CBN_INLINE T FN(keep)(T v, T y) { return y <= 0 ? (T)0 : v; }

/* ---------- checked arithmetic (CBN_CHECK_RATIO) ---------- */

#define ABS(v) __builtin_elementwise_abs(v)

#ifdef CBN_CHECK_RATIO
/// e, computed in T from terms whose magnitudes add up to S, and `bound`,
/// at least S/R: every lane with bound > |e| (S > R |e|), or S not small
/// enough to rule out overflow, or NaN, is replaced by WIDE, the same value
/// computed in double, rounded to T. In float, the steps below err by at
/// most 4 * 2^-24 (S + |e|): each term of e passes through at most four
/// roundings (its coefficient, x - mean_hi, and one or two fused
/// multiply-adds), and k3, formed in double with the rest of the mean, is
/// one rounding of a value whose double error the slack's 2^-22 |mean| term
/// covers. So a kept lane is within 4 * 2^-24 (R + 1) |e|: less than one
/// unit in the last place of the format, by a factor 8, for R = 2^8
/// (binary16, whose unit is at least 2^-11 |e|) and R = 2^11 (bfloat16, at
/// least 2^-8 |e|), and rounding it to the format stays within one unit of
/// the rounded float64 result.
/// The bound is formed from the check rows (job.h): |k1|/R, |k2|/R and the
/// slack/R, each rounded up, the slack at least 2^-126. So the bound is a
/// normal number, its one or two roundings leave it at least S/R times
/// (1 - 2^-22), well inside the margin above, and no product by R is left
/// per value. A kept e is never a float subnormal. The test is per value, so
/// every value gets the same result whatever its neighbours in a vector.
#define CHECKED_V(e, bound, WIDE)                                                                \
    ({                                                                                           \
        VT checked_ = (e);                                                                       \
        const VT bound_ = (bound);                                                               \
        const FN(cbn_lane_mask) kept_ = (bound_ <= ABS(checked_)) & (bound_ <= CBN_CHECK_LIMIT);   \
        if (__builtin_expect(!__builtin_reduce_and(kept_), 0)) {                                 \
            const VT wide_ = __builtin_convertvector((WIDE), VT);                                \
            checked_ = (VT)(((FN(cbn_lane_mask))checked_ & kept_) | ((FN(cbn_lane_mask))wide_ & ~kept_)); \
        }                                                                                        \
        checked_;                                                                                \
    })
#define CHECKED_S(e, bound, WIDE)                                                                \
    ({                                                                                           \
        T checked_ = (e);                                                                        \
        const T bound_ = (bound);                                                                \
        if (!(bound_ <= ABS(checked_) && bound_ <= CBN_CHECK_LIMIT)) checked_ = (T)(WIDE);         \
        checked_;                                                                                \
    })
/// x - mean in double, for the backward sums: T is float here, and a
/// deviation rounded to float would cost the sums' cancellation its bits.
#define DEVIATION_V(xv, hi, wm) (WIDEN(xv) - (wm))
#define DEVIATION_S(xs, hi, wm) ((double)(xs) - (wm))
/// A coefficient only the check reads (the slack and the wide rows): loaded
/// here, zero of its type where nothing is checked and the rows do not exist.
#define CHECK_ONLY(v) (v)
/// S/R up to which float cannot overflow: S <= 2^100; and 1/R.
#define CBN_CHECK_LIMIT ((T)(0x1p100 / CBN_CHECK_RATIO))
#define CBN_INVERSE_RATIO ((T)(1.0 / CBN_CHECK_RATIO))
#else
#define CHECKED_V(e, bound, WIDE) (e)
#define CHECKED_S(e, bound, WIDE) (e)
#define DEVIATION_V(xv, hi, wm) WIDEN((xv) - (hi))
#define DEVIATION_S(xs, hi, wm) ((double)((xs) - (hi)))
#define CHECK_ONLY(v) ((__typeof__(v)){0})
#endif

/* ---------- the two elementwise formulas, with their epilogues ---------- */

/// y at element i: epilogue((x - hi) * k1 + k3), x the value widened;
/// the epilogue adds z[i] with CBN_EPILOGUE_RESIDUAL, then applies relu
/// with CBN_EPILOGUE_RELU, each step its own rounding. `epi` is a constant
/// where these are used, so the unused steps compile away. wm, wk1, wk3: the
/// double coefficients of the checked recomputation.
#define FORWARD_V(xv, hi, k1, k3, slack, bk1, wm, wk1, wk3, z, i, epi)                           \
    ({                                                                                           \
        const VT x_ = (xv), d_ = x_ - (hi);                                                      \
        VT e_ = d_ * (k1) + (k3), z_ = {0};                                                      \
        if ((epi) & CBN_EPILOGUE_RESIDUAL) { z_ = LOADX((z) + (i)); e_ = e_ + z_; }              \
        e_ = CHECKED_V(e_, ABS(d_) * (bk1) + ((slack) + ABS(z_) * CBN_INVERSE_RATIO),            \
                       FORWARD_WIDE(WIDEN(x_), WIDEN(z_), wm, wk1, wk3, epi));                   \
        if ((epi) & CBN_EPILOGUE_RELU) e_ = KEEP(e_, e_);                                        \
        e_;                                                                                      \
    })
#define FORWARD_S(xs, hi, k1, k3, slack, bk1, wm, wk1, wk3, z, i, epi)                           \
    ({                                                                                           \
        const T x_ = (xs), d_ = x_ - (hi);                                                       \
        T e_ = d_ * (k1) + (k3), z_ = 0;                                                         \
        if ((epi) & CBN_EPILOGUE_RESIDUAL) { z_ = GET(z, i); e_ = e_ + z_; }                     \
        e_ = CHECKED_S(e_, ABS(d_) * (bk1) + ((slack) + ABS(z_) * CBN_INVERSE_RATIO),            \
                       FORWARD_WIDE((double)x_, (double)z_, wm, wk1, wk3, epi));                 \
        if ((epi) & CBN_EPILOGUE_RELU) e_ = FN(keep)(e_, e_);                                    \
        e_;                                                                                      \
    })
#define FORWARD_WIDE(xw, zw, wm, wk1, wk3, epi)                                                  \
    ({                                                                                           \
        __typeof__(xw) w_ = ((xw) - (wm)) * (wk1) + (wk3);                                       \
        if ((epi) & CBN_EPILOGUE_RESIDUAL) w_ = w_ + (zw);                                       \
        w_;                                                                                      \
    })

/// dx = k1*g + (k2*(x - hi) + k3), g the (masked) gradient and x
/// widened; wm, wk1, wk2, wk3 as for FORWARD_V.
#define INPUT_GRADIENT_V(gv, xv, hi, k1, k2, k3, slack, bk1, bk2, wm, wk1, wk2, wk3)             \
    ({                                                                                           \
        const VT g_ = (gv), x_ = (xv), d_ = x_ - (hi);                                           \
        CHECKED_V((k1) * g_ + ((k2) * d_ + (k3)), (bk1) * ABS(g_) + ((bk2) * ABS(d_) + (slack)), \
                  (wk1) * WIDEN(g_) + ((wk2) * (WIDEN(x_) - (wm)) + (wk3)));                     \
    })
#define INPUT_GRADIENT_S(gs, xs, hi, k1, k2, k3, slack, bk1, bk2, wm, wk1, wk2, wk3)             \
    ({                                                                                           \
        const T g_ = (gs), x_ = (xs), d_ = x_ - (hi);                                            \
        CHECKED_S((k1) * g_ + ((k2) * d_ + (k3)), (bk1) * ABS(g_) + ((bk2) * ABS(d_) + (slack)), \
                  (wk1) * (double)g_ + ((wk2) * ((double)x_ - (wm)) + (wk3)));                   \
    })

/// dx = k1*g (inference mode), g the (masked) gradient; wk1 as for FORWARD_V.
#define SCALE_V(gv, k1, slack, bk1, wk1)                                                         \
    ({                                                                                           \
        const VT g_ = (gv);                                                                      \
        CHECKED_V(g_ * (k1), ABS(g_) * (bk1) + (slack), WIDEN(g_) * (wk1));                      \
    })
#define SCALE_S(gs, k1, slack, bk1, wk1)                                                         \
    ({                                                                                           \
        const T g_ = (gs);                                                                       \
        CHECKED_S(g_ * (k1), ABS(g_) * (bk1) + (slack), (double)g_ * (wk1));                     \
    })

/// The backward epilogue: g = dy[i], masked by y[i] with CBN_EPILOGUE_RELU.
#define GRADIENT_V(dy, y, i, epi)                                                                \
    ((epi) & CBN_EPILOGUE_RELU ? KEEP(LOADX((dy) + (i)), LOADX((y) + (i))) : LOADX((dy) + (i)))
#define GRADIENT_S(dy, y, i, epi) ((epi) & CBN_EPILOGUE_RELU ? FN(keep)(GET(dy, i), GET(y, i)) : GET(dy, i))

/// Calls CALL(e) with the constant e equal to `epi` (0 to 3), so that each
/// epilogue gets loops of its own from one piece of code.
#define CBN_EPILOGUE_SWITCH(epi, CALL)                                                           \
    switch (epi) {                                                                               \
    case 0: CALL(0); break;                                                                      \
    case 1: CALL(1); break;                                                                      \
    case 2: CALL(2); break;                                                                      \
    default: CALL(3); break;                                                                     \
    }

/* ---------- contiguous runs (planes walk), continued ---------- */

/// x and, with a residual, z `ahead` values past element i.
#define PREFETCH_FORWARD(x, z, i, ahead, epi)                                                    \
    do {                                                                                         \
        PREFETCH((x) + (i), ahead);                                                              \
        if ((epi) & CBN_EPILOGUE_RESIDUAL) PREFETCH((z) + (i), ahead);                           \
    } while (0)

/// y = epilogue((x - mean_hi) * k1 + k3) for channel k of the
/// block, z the residual.
CBN_INLINE void FN(run_normalize)(const ELEM *x, const ELEM *z, ELEM *y, int64_t n,
                                  const FN(cbn_block_coefficients) *bc, int64_t k, int stream, const int epi) {
    const T hi = bc->hi[k], k1 = bc->k1[k], k3 = bc->k3[k];
    const T slack = CHECK_ONLY(bc->slack[k]), bk1 = CHECK_ONLY(bc->bk1[k]);
    const double wm = CHECK_ONLY(bc->wm[k]), wk1 = CHECK_ONLY(bc->wk1[k]), wk3 = CHECK_ONLY(bc->wk3[k]);
    CBN_WRITE_RUN(y, n, n, stream, PUT(y, i, FORWARD_S(GET(x, i), hi, k1, k3, slack, bk1, wm, wk1, wk3, z, i, epi)),
                  ({ PREFETCH_FORWARD(x, z, i, CBN_AHEAD, epi);
                     FORWARD_V(LOADX(x + i), hi, k1, k3, slack, bk1, wm, wk1, wk3, z, i, epi); }));
}

/// With g the (masked) gradient: adds g and g*d to the accumulators (lanes
/// and tails); writes dz = g with CBN_EPILOGUE_RESIDUAL, and, if dx is not
/// NULL, dx = k1*g (inference mode, where dx needs no sums).
CBN_INLINE void FN(run_sums)(const ELEM *x, const ELEM *dy, const ELEM *y, ELEM *dz, ELEM *dx, int64_t n,
                             const FN(cbn_block_coefficients) *bc, int64_t k, cbn_vd *acc_dy, cbn_vd *acc_dyd,
                             double *tail_dy, double *tail_dyd, const int epi) {
    const T hi = bc->hi[k], k1 = bc->k1[k];
    const T slack = CHECK_ONLY(bc->slack[k]), bk1 = CHECK_ONLY(bc->bk1[k]);
    const double wm = CHECK_ONLY(bc->wm[k]), wk1 = CHECK_ONLY(bc->wk1[k]);
    cbn_vd a_dy = *acc_dy, a_dyd = *acc_dyd;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        PREFETCH(x + i, CBN_AHEAD);
        PREFETCH_GRADIENT(dy, y, i, CBN_AHEAD, epi);
        VT g = GRADIENT_V(dy, y, i, epi);
        cbn_vd gw = WIDEN(g);
        a_dy += gw;
        a_dyd += gw * DEVIATION_V(LOADX(x + i), hi, wm);
        if (epi & CBN_EPILOGUE_RESIDUAL) STOREX(dz + i, g);
        if (dx) STOREX(dx + i, SCALE_V(g, k1, slack, bk1, wk1));
    }
    *acc_dy = a_dy;
    *acc_dyd = a_dyd;
    double t_dy = *tail_dy, t_dyd = *tail_dyd;
    for (; i < n; i++) {
        T g = GRADIENT_S(dy, y, i, epi);
        t_dy += (double)g;
        t_dyd += (double)g * DEVIATION_S(GET(x, i), hi, wm);
        if (epi & CBN_EPILOGUE_RESIDUAL) PUT(dz, i, g);
        if (dx) PUT(dx, i, SCALE_S(g, k1, slack, bk1, wk1));
    }
    *tail_dy = t_dy;
    *tail_dyd = t_dyd;
}

/// dz = g for the passes that write it without sums (dx alone, or dz alone),
/// the inputs asked for `ahead` values on.
CBN_INLINE void FN(run_residual_gradient)(const ELEM *dy, const ELEM *y, ELEM *dz, int64_t n, int64_t ahead,
                                          int stream, const int epi) {
    CBN_WRITE_RUN(dz, n, n, stream, PUT(dz, i, GRADIENT_S(dy, y, i, epi)),
                  ({ PREFETCH_GRADIENT(dy, y, i, ahead, epi); GRADIENT_V(dy, y, i, epi); }));
}

/// dx = k1*g + (k2*(x - mean_hi) + k3) for channel k of the
/// block, g the (masked) gradient.
CBN_INLINE void FN(run_input_gradient)(const ELEM *x, const ELEM *dy, const ELEM *y, ELEM *dx, int64_t n,
                                       const FN(cbn_block_coefficients) *bc, int64_t k, int stream,
                                       const int epi) {
    const T hi = bc->hi[k], k1 = bc->k1[k], k2 = bc->k2[k], k3 = bc->k3[k];
    const T slack = CHECK_ONLY(bc->slack[k]), bk1 = CHECK_ONLY(bc->bk1[k]), bk2 = CHECK_ONLY(bc->bk2[k]);
    const double wm = CHECK_ONLY(bc->wm[k]), wk1 = CHECK_ONLY(bc->wk1[k]);
    const double wk2 = CHECK_ONLY(bc->wk2[k]), wk3 = CHECK_ONLY(bc->wk3[k]);
    CBN_WRITE_RUN(dx, n, n, stream,
                  PUT(dx, i, INPUT_GRADIENT_S(GRADIENT_S(dy, y, i, epi), GET(x, i), hi, k1, k2, k3, slack, bk1,
                                              bk2, wm, wk1, wk2, wk3)),
                  ({ PREFETCH(x + i, CBN_AHEAD); PREFETCH_GRADIENT(dy, y, i, CBN_AHEAD, epi);
                     INPUT_GRADIENT_V(GRADIENT_V(dy, y, i, epi), LOADX(x + i), hi, k1, k2, k3, slack, bk1, bk2,
                                      wm, wk1, wk2, wk3); }));
}

/// dx = k1*g (inference mode) for channel k of the block.
CBN_INLINE void FN(run_scale)(const ELEM *dy, const ELEM *y, ELEM *dx, int64_t n,
                              const FN(cbn_block_coefficients) *bc, int64_t k, int stream, const int epi) {
    const T k1 = bc->k1[k], slack = CHECK_ONLY(bc->slack[k]), bk1 = CHECK_ONLY(bc->bk1[k]);
    const double wk1 = CHECK_ONLY(bc->wk1[k]);
    CBN_WRITE_RUN(dx, n, n, stream, PUT(dx, i, SCALE_S(GRADIENT_S(dy, y, i, epi), k1, slack, bk1, wk1)),
                  ({ PREFETCH_GRADIENT(dy, y, i, CBN_AHEAD, epi);
                     SCALE_V(GRADIENT_V(dy, y, i, epi), k1, slack, bk1, wk1); }));
}

/* ---------- rows of a channel block (columns walk) ---------- */

/// The sums' calls take rows j = 0..3 at `stride` (CBN_COLUMN_SEGMENTS):
/// row j + 4 is the next call's row j, 4 * CBN_LANES rows on, which they ask
/// for with `prefetch`.
#define CBN_AHEAD_ROWS 4

/// Whether a columns item's sums ask for rows ahead: where its rows are
/// parts of rows, short pieces far apart that the processor's prefetchers
/// follow badly (1024x4096 binary16 backward 1.2x faster), or whole rows so
/// short that the next call's rows are about CBN_AHEAD values on (112x112's
/// 64 channels: 1.1-1.2x). Rows of 256 channels and more are one piece of
/// memory the processor follows, and asking for them 32 KiB and more ahead
/// made 56x56 and 28x28 backward 1.1x slower.
CBN_INLINE int FN(columns_prefetch)(const cbn_plan *plan, cbn_item item) {
    const int64_t C = plan->shape.channels;
    return item.c1 - item.c0 < C || CBN_AHEAD_ROWS * CBN_LANES * C <= 2 * CBN_AHEAD;
}

/// For k < w, with d = x[j*stride + k] - pivot[k]: adds d to sum[k] and d^2
/// to sumsq[k] for j = 0, 1, ... rows - 1, in that order (one lane or the
/// tail of the reduction order, see plan.h). The accumulators stay in
/// registers for the `rows` rows, so a call with several rows touches L1
/// once.
CBN_INLINE void FN(rows_add_shifted)(double *sum, double *sumsq, const ELEM *x, int64_t stride,
                                     int64_t rows, const double *pivot, int64_t w, int prefetch) {
    int64_t k = 0;
    for (; k + 16 <= w; k += 16) {
        const cbn_vd p = cbn_vd_load(pivot + k);
        cbn_vd s = cbn_vd_load(sum + k), q = cbn_vd_load(sumsq + k);
        for (int64_t j = 0; j < rows; j++) {
            if (prefetch) PREFETCH(x + j * stride + k, CBN_AHEAD_ROWS * stride);
            cbn_vd d = WIDEN(LOADX(x + j * stride + k)) - p;
            s += d;
            q += d * d;
        }
        cbn_vd_store(sum + k, s);
        cbn_vd_store(sumsq + k, q);
    }
    for (; k < w; k++) {
        double s = sum[k], q = sumsq[k];
        for (int64_t j = 0; j < rows; j++) {
            double d = (double)GET(x, j * stride + k) - pivot[k];
            s += d;
            q += d * d;
        }
        sum[k] = s;
        sumsq[k] = q;
    }
}

/// The backward sums' counterpart of rows_add_shifted: with g the (masked)
/// gradient and d = x - hi at row j, adds g to sum_dy[k] and g*d to
/// sum_dyd[k] in row order; writes dz = g with CBN_EPILOGUE_RESIDUAL and, if
/// dx is not NULL, dx = k1*g (inference mode).
CBN_INLINE void FN(rows_add_sums)(double *sum_dy, double *sum_dyd, const ELEM *x, const ELEM *dy, const ELEM *y,
                                  ELEM *dz, ELEM *dx, int64_t stride, int64_t rows, const FN(cbn_block_coefficients) *bc,
                                  int64_t w, int prefetch, const int epi) {
    int64_t k = 0;
    for (; k + 16 <= w; k += 16) {
        const VT hi = LOAD(bc->hi + k), k1 = LOAD(bc->k1 + k);
        const VT slack = CHECK_ONLY(LOAD(bc->slack + k)), bk1 = CHECK_ONLY(LOAD(bc->bk1 + k));
        const cbn_vd wm = CHECK_ONLY(cbn_vd_load(bc->wm + k)), wk1 = CHECK_ONLY(cbn_vd_load(bc->wk1 + k));
        cbn_vd a_dy = cbn_vd_load(sum_dy + k), a_dyd = cbn_vd_load(sum_dyd + k);
        for (int64_t j = 0; j < rows; j++) {
            const int64_t at = j * stride + k;
            if (prefetch) {
                PREFETCH(x + at, CBN_AHEAD_ROWS * stride);
                PREFETCH_GRADIENT(dy, y, at, CBN_AHEAD_ROWS * stride, epi);
            }
            VT g = GRADIENT_V(dy, y, at, epi);
            cbn_vd gw = WIDEN(g);
            a_dy += gw;
            a_dyd += gw * DEVIATION_V(LOADX(x + at), hi, wm);
            if (epi & CBN_EPILOGUE_RESIDUAL) STOREX(dz + at, g);
            if (dx) STOREX(dx + at, SCALE_V(g, k1, slack, bk1, wk1));
        }
        cbn_vd_store(sum_dy + k, a_dy);
        cbn_vd_store(sum_dyd + k, a_dyd);
    }
    for (; k < w; k++) {
        double t_dy = sum_dy[k], t_dyd = sum_dyd[k];
        for (int64_t j = 0; j < rows; j++) {
            const int64_t at = j * stride + k;
            T g = GRADIENT_S(dy, y, at, epi);
            t_dy += (double)g;
            t_dyd += (double)g * DEVIATION_S(GET(x, at), bc->hi[k], bc->wm[k]);
            if (epi & CBN_EPILOGUE_RESIDUAL) PUT(dz, at, g);
            if (dx) PUT(dx, at, SCALE_S(g, bc->k1[k], bc->slack[k], bc->bk1[k], bc->wk1[k]));
        }
        sum_dy[k] = t_dy;
        sum_dyd[k] = t_dyd;
    }
}

CBN_INLINE void FN(load_block_coefficients)(const cbn_job *job, cbn_item item,
                                            FN(cbn_block_coefficients) *bc) {
    const T *all = (const T *)job->coefficients;
    const double *wide = job->wide_coefficients;
    const int64_t stride = cbn_coefficient_stride(job->plan.shape.channels);
    bc->hi = all + CBN_MEAN_HI * stride + item.c0;
    bc->k1 = all + CBN_K1 * stride + item.c0;
    bc->k2 = all + CBN_K2 * stride + item.c0;
    bc->k3 = all + CBN_K3 * stride + item.c0;
#ifdef CBN_CHECK_RATIO
    bc->slack = all + CBN_SLACK * stride + item.c0;
    bc->bk1 = all + CBN_BOUND_K1 * stride + item.c0;
    bc->bk2 = all + CBN_BOUND_K2 * stride + item.c0;
    bc->wm = wide + CBN_WIDE_MEAN * stride + item.c0;
    bc->wk1 = wide + CBN_WIDE_K1 * stride + item.c0;
    bc->wk2 = wide + CBN_WIDE_K2 * stride + item.c0;
    bc->wk3 = wide + CBN_WIDE_K3 * stride + item.c0;
#else
    (void)wide;
    bc->slack = bc->bk1 = bc->bk2 = NULL;    /* only the check reads these (CHECK_ONLY) */
    bc->wm = bc->wk1 = bc->wk2 = bc->wk3 = NULL;
#endif
}

/// Stores channel c's value of one coefficient row, and its copies past the
/// end of the row (job.h). Each copy belongs to one channel, so the
/// finalize items of different channels never write the same place.
#define CBN_SET_COEFFICIENT(rows, row, c, value)                                                 \
    do {                                                                                         \
        const int64_t C_ = job->plan.shape.channels, stride_ = cbn_coefficient_stride(C_);       \
        (rows)[(row) * stride_ + (c)] = (value);                                                 \
        if ((c) < stride_ - C_) /* copies exist: a test that spares the common case a division */ \
            for (int64_t p_ = (c) + C_; p_ < stride_; p_ += C_) (rows)[(row) * stride_ + p_] = (value); \
    } while (0)

/// The part of the mean that its rounding to T, mean_hi, leaves out: exact
/// in double (Sterbenz: mean_hi lies within a factor 2 of the mean), zero in
/// double itself.
static inline double FN(mean_rest)(double mean) { return mean - (double)(T)mean; }

#ifdef CBN_CHECK_RATIO
/// A check row's value (job.h): the least T at or above v/R, and at least
/// `floor`.
static T FN(check_row)(double v, double floor) {
    const double scaled = v / CBN_CHECK_RATIO;
    if (scaled <= floor) return (T)floor;
    T t = (T)scaled;
    if ((double)t < scaled) {    /* t >= 0 and finite: the next float up is the next bit pattern */
        uint32_t bits;
        memcpy(&bits, &t, sizeof bits);
        bits++;
        memcpy(&t, &bits, sizeof t);
    }
    return t;
}

/// Whether k, nonzero, rounds to a float subnormal or to zero.
static int FN(coarse_factor)(double k) { return k != 0 && fabs((double)(T)k) < 0x1p-126; }
#endif

/// Sets channel c's coefficients (job.h) for y = (x - mean)*k1 + k3
/// (forward) or dx = k1*g + ((x - mean)*k2 + k3) (backward): mean_hi, the
/// mean rounded to T; k1, k2 and k3 rounded to T, k3 less the rest of the
/// mean times the factor of x - mean (k1 forward, k2 backward), so that the
/// kernels' x - mean_hi needs no second subtraction; the check rows; and,
/// for the check's recomputation, the mean and factors in double.
static void FN(set_coefficients)(cbn_job *job, int64_t c, double mean, double k1, double k2, double k3) {
    const double factor = job->backward ? k2 : k1;
    /* only where there is a rest: 0 * an infinite factor would make k3 NaN */
    const double rest = FN(mean_rest)(mean), k3_hi = rest != 0 ? k3 - rest * factor : k3;
    CBN_SET_COEFFICIENT((T *)job->coefficients, CBN_MEAN_HI, c, (T)mean);
    CBN_SET_COEFFICIENT((T *)job->coefficients, CBN_K1, c, (T)k1);
    CBN_SET_COEFFICIENT((T *)job->coefficients, CBN_K2, c, (T)k2);
    CBN_SET_COEFFICIENT((T *)job->coefficients, CBN_K3, c, (T)k3_hi);
#ifdef CBN_CHECK_RATIO
    CBN_SET_COEFFICIENT(job->wide_coefficients, CBN_WIDE_MEAN, c, mean);
    /* A factor that rounds to a float subnormal (or to zero) keeps less
     * than float's relative precision, which the bound assumes: an infinite
     * slack then sends every value of the channel to double. */
    const int coarse = FN(coarse_factor)(k1) || FN(coarse_factor)(k2);
    const double slack = coarse ? INFINITY : fabs(k3_hi) + 0x1p-22 * fabs(mean) * fabs(factor);
    CBN_SET_COEFFICIENT((T *)job->coefficients, CBN_SLACK, c, FN(check_row)(slack, 0x1p-126));
    CBN_SET_COEFFICIENT((T *)job->coefficients, CBN_BOUND_K1, c, FN(check_row)(fabs((double)(T)k1), 0));
    CBN_SET_COEFFICIENT((T *)job->coefficients, CBN_BOUND_K2, c, FN(check_row)(fabs((double)(T)k2), 0));
    CBN_SET_COEFFICIENT(job->wide_coefficients, CBN_WIDE_K1, c, k1);
    CBN_SET_COEFFICIENT(job->wide_coefficients, CBN_WIDE_K2, c, k2);
    CBN_SET_COEFFICIENT(job->wide_coefficients, CBN_WIDE_K3, c, k3);
#endif
}

/* ---------- item microkernels ---------- */

/// Merges the moments of block [b0, b1) of channels item.c0 + k, k < w, into
/// acc[k] (planes walk). Each channel's sums of d and d^2, d = x - (the
/// block's first value of the channel), come from one sweep.
CBN_INLINE void FN(block_moments_planes)(const cbn_job *job, cbn_item item, int64_t b0, int64_t b1,
                                         cbn_moments *acc) {
    const cbn_plan *plan = &job->plan;
    const int64_t S = plan->shape.spatial, w = item.c1 - item.c0;
    const ELEM *x = (const ELEM *)job->x + item.c0 * S;    /* channel k's values start at x + k*S */
    cbn_vd sum[CBN_PLANE_MAX_CHANNELS], sumsq[CBN_PLANE_MAX_CHANNELS];
    double tail_sum[CBN_PLANE_MAX_CHANNELS], tail_sumsq[CBN_PLANE_MAX_CHANNELS];
    double pivot[CBN_PLANE_MAX_CHANNELS];
    memset(sum, 0, sizeof(cbn_vd) * w);
    memset(sumsq, 0, sizeof(cbn_vd) * w);
    memset(tail_sum, 0, sizeof(double) * w);
    memset(tail_sumsq, 0, sizeof(double) * w);
    const int64_t first = cbn_plane_offset(plan, b0);
    for (int64_t k = 0; k < w; k++) pivot[k] = (double)GET(x, k * S + first);
    int64_t value, length;
    cbn_segments segments = cbn_segments_make(plan, b0, b1);
    while (cbn_segments_next(&segments, &value, &length)) {
        const int64_t offset = cbn_plane_offset(plan, value);
        for (int64_t k = 0; k < w; k++)
            FN(add_run_shifted)(x + k * S + offset, length, pivot[k], &sum[k], &sumsq[k], &tail_sum[k],
                                &tail_sumsq[k]);
    }
    for (int64_t k = 0; k < w; k++)
        cbn_moments_merge_shifted(&acc[k], (double)(b1 - b0), pivot[k], cbn_vd_sum(&sum[k]) + tail_sum[k],
                                  cbn_vd_sum(&sumsq[k]) + tail_sumsq[k]);
}

/// block_moments_planes for the columns walk: the same sums in the same
/// order, with lanes kept per channel.
CBN_INLINE void FN(block_moments_columns)(const cbn_job *job, cbn_item item, int64_t b0, int64_t b1,
                                          double *lanes, cbn_moments *acc) {
    const cbn_plan *plan = &job->plan;
    const int64_t C = plan->shape.channels, w = item.c1 - item.c0;
    const ELEM *x = (const ELEM *)job->x + item.c0;        /* row r, channel k at x[r*C + k] */
    double pivot[CBN_MAX_BLOCK_CHANNELS];
    cbn_column_sums sums;
    cbn_column_sums_clear(&sums, lanes, w);
    for (int64_t k = 0; k < w; k++) pivot[k] = (double)GET(x, b0 * C + k);
    const int prefetch = FN(columns_prefetch)(plan, item);
#define ADD(a, b, row, stride, rows) FN(rows_add_shifted)(a, b, x + (row) * C, stride, rows, pivot, w, prefetch)
    CBN_COLUMN_SEGMENTS(plan, b0, b1, &sums, w, ADD);
#undef ADD
    for (int64_t k = 0; k < w; k++) {
        double sum, sumsq;
        cbn_column_sums_total(&sums, w, k, &sum, &sumsq);
        cbn_moments_merge_shifted(&acc[k], (double)(b1 - b0), pivot[k], sum, sumsq);
    }
}

/// Moments of each part of one item into its partials (a = count, b = mean,
/// c = M2): the part's blocks merged in order with Chan's formula. `lanes`:
/// the worker's scratch for the columns walk's lane accumulators.
CBN_MULTIVERSIONED static void FN(statistics)(const cbn_job *job, cbn_item item, double *lanes) {
    const cbn_plan *plan = &job->plan;
    const int64_t w = item.c1 - item.c0;
    cbn_moments acc[CBN_MAX_BLOCK_CHANNELS];
    int64_t part = item.part;
    for (int64_t p0 = item.begin; p0 < item.end; p0 += plan->part_length, part++) {
        const int64_t p1 = cbn_min64(item.end, p0 + plan->part_length);
        memset(acc, 0, sizeof(cbn_moments) * w);
        for (int64_t b0 = p0; b0 < p1; b0 += plan->block_length) {
            const int64_t b1 = cbn_min64(p1, b0 + plan->block_length);
            if (plan->walk == CBN_WALK_PLANES)
                FN(block_moments_planes)(job, item, b0, b1, acc);
            else
                FN(block_moments_columns)(job, item, b0, b1, lanes, acc);
        }
        for (int64_t k = 0; k < w; k++) {
            cbn_partial *p = &job->partials[(item.c0 + k) * plan->parts + part];
            p->a = acc[k].count; p->b = acc[k].mean; p->c = acc[k].m2;
        }
    }
}

/// Rows of a columns item that its elementwise passes take as one run: all
/// of them when the item has every channel (its rows are then one piece of
/// memory, and vectors run across row ends: the coefficient rows wrap
/// around for them, job.h), else one.
CBN_INLINE int64_t FN(rows_per_run)(const cbn_plan *plan, cbn_item item) {
    return item.c1 - item.c0 == plan->shape.channels ? item.end - item.begin : 1;
}

/// Rows a columns item's elementwise passes take per load of a channel
/// vector's coefficients (CBN_WRITE_ROWS).
#define CBN_ROW_BLOCK 4

/// Whether a columns item's elementwise pass takes its rows in blocks
/// (CBN_WRITE_ROWS): where the plan says so (plan.h: which tensors, and
/// why), for items of a multiple of 16 channels.
CBN_INLINE int FN(row_blocks)(const cbn_plan *plan, cbn_item item) {
    return plan->row_blocks && (item.c1 - item.c0) % 16 == 0;
}

/// out[i] = VECTOR, narrowed, over the first w channels (a multiple of 16)
/// of `rows` rows of C channels, CBN_ROW_BLOCK rows at a time: for the 16
/// channels at k_, COEFFICIENTS (declarations that load them) once, then
/// VECTOR for i = j*C + k_ in each row j of the block. Elementwise, so the
/// results are those of CBN_WRITE_RUN.
#define CBN_WRITE_ROWS(out, rows, w, C, COEFFICIENTS, VECTOR)                                       \
    for (int64_t r_ = 0; r_ < (rows); r_ += CBN_ROW_BLOCK) {                                     \
        const int64_t r1_ = cbn_min64((rows), r_ + CBN_ROW_BLOCK);                               \
        for (int64_t k_ = 0; k_ < (w); k_ += 16) {                                                 \
            COEFFICIENTS;                                                                        \
            for (int64_t j_ = r_; j_ < r1_; j_++) {                                              \
                const int64_t i = j_ * (C) + k_;                                                 \
                STOREX((out) + i, VECTOR);                                                       \
            }                                                                                    \
        }                                                                                        \
    }

/// How far on a columns item's elementwise loops ask for their inputs:
/// CBN_AHEAD along runs of whole rows; in a run of part of a row, the same
/// channels of a row about CBN_AHEAD values of the item later (the next row
/// at least).
CBN_INLINE int64_t FN(column_ahead)(const cbn_plan *plan, cbn_item item) {
    const int64_t C = plan->shape.channels, w = item.c1 - item.c0;
    if (w == C) return CBN_AHEAD;
    const int64_t rows = CBN_AHEAD / w;
    return C * (rows > 1 ? rows : 1);
}

/// y = epilogue(BN(x)) over one item, for the constant epilogue `epi`.
CBN_INLINE void FN(normalize_item)(const cbn_job *job, cbn_item item, const int epi) {
    const cbn_plan *plan = &job->plan;
    FN(cbn_block_coefficients) bc;
    FN(load_block_coefficients)(job, item, &bc);
    if (plan->walk == CBN_WALK_PLANES) {
        const int64_t S = plan->shape.spatial, w = item.c1 - item.c0, base = item.c0 * S;
        const ELEM *x = (const ELEM *)job->x + base, *z = job->residual ? (const ELEM *)job->residual + base : NULL;
        ELEM *y = (ELEM *)job->out + base;
        int64_t value, length;
        cbn_segments segments = cbn_segments_make(plan, item.begin, item.end);
        while (cbn_segments_next(&segments, &value, &length)) {
            const int64_t offset = cbn_plane_offset(plan, value);
            for (int64_t k = 0; k < w; k++) {
                const int64_t at = k * S + offset;
                FN(run_normalize)(x + at, z ? z + at : NULL, y + at, length, &bc, k, plan->streaming, epi);
            }
        }
    } else if (FN(row_blocks)(plan, item)) {
        const int64_t C = plan->shape.channels, at = item.begin * C + item.c0, ahead = CBN_ROW_BLOCK * C;
        const ELEM *x = (const ELEM *)job->x + at, *z = job->residual ? (const ELEM *)job->residual + at : NULL;
        ELEM *y = (ELEM *)job->out + at;
        CBN_WRITE_ROWS(y, item.end - item.begin, item.c1 - item.c0, C,
                       const VT hi = LOAD(bc.hi + k_); const VT k1 = LOAD(bc.k1 + k_);
                       const VT k3 = LOAD(bc.k3 + k_); const VT slack = CHECK_ONLY(LOAD(bc.slack + k_));
                       const VT bk1 = CHECK_ONLY(LOAD(bc.bk1 + k_)),
                       ({ PREFETCH_FORWARD(x, z, i, ahead, epi);
                          FORWARD_V(LOADX(x + i), hi, k1, k3, slack, bk1, cbn_vd_load(bc.wm + k_),
                                    cbn_vd_load(bc.wk1 + k_), cbn_vd_load(bc.wk3 + k_), z, i, epi); }));
    } else {
        const int64_t C = plan->shape.channels, w = item.c1 - item.c0;
        const int64_t rows = FN(rows_per_run)(plan, item), ahead = FN(column_ahead)(plan, item);
        for (int64_t r = item.begin; r < item.end; r += rows) {
            const int64_t at = r * C + item.c0;
            const ELEM *x = (const ELEM *)job->x + at, *z = job->residual ? (const ELEM *)job->residual + at : NULL;
            ELEM *y = (ELEM *)job->out + at;
            CBN_WRITE_RUN(y, rows * w, w, plan->streaming,
                          PUT(y, i, FORWARD_S(GET(x, i), bc.hi[c_], bc.k1[c_], bc.k3[c_], bc.slack[c_],
                                              bc.bk1[c_], bc.wm[c_], bc.wk1[c_], bc.wk3[c_], z, i, epi)),
                          ({ PREFETCH_FORWARD(x, z, i, ahead, epi);
                             FORWARD_V(LOADX(x + i), LOAD(bc.hi + c_), LOAD(bc.k1 + c_),
                                       LOAD(bc.k3 + c_), LOAD(bc.slack + c_), LOAD(bc.bk1 + c_),
                                       cbn_vd_load(bc.wm + c_), cbn_vd_load(bc.wk1 + c_), cbn_vd_load(bc.wk3 + c_), z,
                                       i, epi); }));
        }
    }
    CBN_FENCE_STREAMS(plan->streaming);
}

CBN_MULTIVERSIONED static void FN(normalize)(const cbn_job *job, cbn_item item) {
#define CALL(e) FN(normalize_item)(job, item, e)
    CBN_EPILOGUE_SWITCH(job->epilogue, CALL)
#undef CALL
}

/// Backward sums of part [p0, p1) of channels item.c0 + k (planes walk) into
/// sum_dy[k] and sum_dyd[k]; with dx_all, also dx = k1*g in the same pass.
CBN_INLINE void FN(part_sums_planes)(const cbn_job *job, cbn_item item, int64_t p0, int64_t p1,
                                     const FN(cbn_block_coefficients) *bc, ELEM *dx_all, double *sum_dy,
                                     double *sum_dyd, const int epi) {
    const cbn_plan *plan = &job->plan;
    const int64_t S = plan->shape.spatial, w = item.c1 - item.c0, base = item.c0 * S;
    const ELEM *x = (const ELEM *)job->x + base, *dy = (const ELEM *)job->dy + base;
    const ELEM *y = job->y ? (const ELEM *)job->y + base : NULL;
    ELEM *dz = job->dresidual ? (ELEM *)job->dresidual + base : NULL;
    ELEM *dx = dx_all ? dx_all + base : NULL;
    cbn_vd lanes_dy[CBN_PLANE_MAX_CHANNELS], lanes_dyd[CBN_PLANE_MAX_CHANNELS];
    double tails_dy[CBN_PLANE_MAX_CHANNELS], tails_dyd[CBN_PLANE_MAX_CHANNELS];
    memset(lanes_dy, 0, sizeof(cbn_vd) * w);
    memset(lanes_dyd, 0, sizeof(cbn_vd) * w);
    memset(tails_dy, 0, sizeof(double) * w);
    memset(tails_dyd, 0, sizeof(double) * w);
    int64_t value, length;
    cbn_segments segments = cbn_segments_make(plan, p0, p1);
    while (cbn_segments_next(&segments, &value, &length)) {
        const int64_t offset = cbn_plane_offset(plan, value);
        for (int64_t k = 0; k < w; k++) {
            const int64_t at = k * S + offset;
            FN(run_sums)(x + at, dy + at, y ? y + at : NULL, dz ? dz + at : NULL, dx ? dx + at : NULL, length, bc, k,
                         &lanes_dy[k], &lanes_dyd[k], &tails_dy[k], &tails_dyd[k], epi);
        }
    }
    for (int64_t k = 0; k < w; k++) {
        sum_dy[k] = cbn_vd_sum(&lanes_dy[k]) + tails_dy[k];
        sum_dyd[k] = cbn_vd_sum(&lanes_dyd[k]) + tails_dyd[k];
    }
}

/// part_sums_planes for the columns walk: the same sums in the same order.
CBN_INLINE void FN(part_sums_columns)(const cbn_job *job, cbn_item item, int64_t p0, int64_t p1,
                                      const FN(cbn_block_coefficients) *bc, ELEM *dx_all, double *lanes,
                                      double *sum_dy, double *sum_dyd, const int epi) {
    const cbn_plan *plan = &job->plan;
    const int64_t C = plan->shape.channels, w = item.c1 - item.c0;
    const ELEM *x = (const ELEM *)job->x + item.c0, *dy = (const ELEM *)job->dy + item.c0;
    const ELEM *y = job->y ? (const ELEM *)job->y + item.c0 : NULL;
    ELEM *dz = job->dresidual ? (ELEM *)job->dresidual + item.c0 : NULL;
    ELEM *dx = dx_all ? dx_all + item.c0 : NULL;
    cbn_column_sums sums;
    cbn_column_sums_clear(&sums, lanes, w);
    const int prefetch = FN(columns_prefetch)(plan, item);
#define ADD(a, b, row, stride, rows)                                                             \
    FN(rows_add_sums)(a, b, x + (row) * C, dy + (row) * C, y ? y + (row) * C : NULL, dz ? dz + (row) * C : NULL, \
                      dx ? dx + (row) * C : NULL, stride, rows, bc, w, prefetch, epi)
    CBN_COLUMN_SEGMENTS(plan, p0, p1, &sums, w, ADD);
#undef ADD
    for (int64_t k = 0; k < w; k++) cbn_column_sums_total(&sums, w, k, &sum_dy[k], &sum_dyd[k]);
}

/// Backward sums of each part of one item into its partials (a = sum g,
/// b = sum g*(x - mean)), for the constant epilogue `epi`.
CBN_INLINE void FN(sums_item)(const cbn_job *job, cbn_item item, int scale_dy, double *lanes, const int epi) {
    const cbn_plan *plan = &job->plan;
    const int64_t w = item.c1 - item.c0;
    ELEM *dx_all = scale_dy ? (ELEM *)job->out : NULL;
    FN(cbn_block_coefficients) bc;
    FN(load_block_coefficients)(job, item, &bc);
    double sum_dy[CBN_MAX_BLOCK_CHANNELS], sum_dyd[CBN_MAX_BLOCK_CHANNELS];
    int64_t part = item.part;
    for (int64_t p0 = item.begin; p0 < item.end; p0 += plan->part_length, part++) {
        const int64_t p1 = cbn_min64(item.end, p0 + plan->part_length);
        if (plan->walk == CBN_WALK_PLANES)
            FN(part_sums_planes)(job, item, p0, p1, &bc, dx_all, sum_dy, sum_dyd, epi);
        else
            FN(part_sums_columns)(job, item, p0, p1, &bc, dx_all, lanes, sum_dy, sum_dyd, epi);
        for (int64_t k = 0; k < w; k++) {
            cbn_partial *p = &job->partials[(item.c0 + k) * plan->parts + part];
            p->a = sum_dy[k]; p->b = sum_dyd[k]; p->c = 0;
        }
    }
}

/// Backward sums of one item; with scale_dy, also dx = k1*g in the same pass
/// (inference mode); dz = g with a residual. `lanes`: as for statistics.
CBN_MULTIVERSIONED static void FN(sums)(const cbn_job *job, cbn_item item, int scale_dy, double *lanes) {
#define CALL(e) FN(sums_item)(job, item, scale_dy, lanes, e)
    CBN_EPILOGUE_SWITCH(job->epilogue, CALL)
#undef CALL
}

/// dx from the coefficients over one item, for the constant epilogue `epi`;
/// inference mode needs no x: dx = k1*g. Writes dz = g when no sums pass has.
CBN_INLINE void FN(input_gradient_item)(const cbn_job *job, cbn_item item, const int epi) {
    const cbn_plan *plan = &job->plan;
    const int through_statistics = job->training;
    FN(cbn_block_coefficients) bc;
    FN(load_block_coefficients)(job, item, &bc);
    if (plan->walk == CBN_WALK_PLANES) {
        const int64_t S = plan->shape.spatial, w = item.c1 - item.c0, base = item.c0 * S;
        const ELEM *dy = (const ELEM *)job->dy + base, *y = job->y ? (const ELEM *)job->y + base : NULL;
        ELEM *dx = job->out ? (ELEM *)job->out + base : NULL;
        ELEM *dz = job->dresidual ? (ELEM *)job->dresidual + base : NULL;
        int64_t value, length;
        cbn_segments segments = cbn_segments_make(plan, item.begin, item.end);
        while (cbn_segments_next(&segments, &value, &length)) {
            const int64_t offset = cbn_plane_offset(plan, value);
            for (int64_t k = 0; k < w; k++) {
                const int64_t at = k * S + offset;
                const ELEM *y_at = y ? y + at : NULL;
                if (epi & CBN_EPILOGUE_RESIDUAL)
                    FN(run_residual_gradient)(dy + at, y_at, dz + at, length, CBN_AHEAD, plan->streaming, epi);
                if (!dx) continue;
                if (through_statistics) {
                    FN(run_input_gradient)((const ELEM *)job->x + base + at, dy + at, y_at, dx + at, length, &bc, k,
                                           plan->streaming, epi);
                } else {
                    FN(run_scale)(dy + at, y_at, dx + at, length, &bc, k, plan->streaming, epi);
                }
            }
        }
    } else if (FN(row_blocks)(plan, item)) {
        const int64_t C = plan->shape.channels, w = item.c1 - item.c0, rows = item.end - item.begin;
        const int64_t at = item.begin * C + item.c0, ahead = CBN_ROW_BLOCK * C;
        const ELEM *dy = (const ELEM *)job->dy + at, *y = job->y ? (const ELEM *)job->y + at : NULL;
        ELEM *dx = job->out ? (ELEM *)job->out + at : NULL;
        if (epi & CBN_EPILOGUE_RESIDUAL)
            CBN_WRITE_ROWS((ELEM *)job->dresidual + at, rows, w, C, (void)0,
                           ({ PREFETCH_GRADIENT(dy, y, i, ahead, epi); GRADIENT_V(dy, y, i, epi); }));
        if (dx && through_statistics) {
            const ELEM *x = (const ELEM *)job->x + at;
            CBN_WRITE_ROWS(dx, rows, w, C,
                           const VT hi = LOAD(bc.hi + k_);
                           const VT k1 = LOAD(bc.k1 + k_); const VT k2 = LOAD(bc.k2 + k_);
                           const VT k3 = LOAD(bc.k3 + k_); const VT slack = CHECK_ONLY(LOAD(bc.slack + k_));
                           const VT bk1 = CHECK_ONLY(LOAD(bc.bk1 + k_)); const VT bk2 = CHECK_ONLY(LOAD(bc.bk2 + k_)),
                           ({ PREFETCH(x + i, ahead); PREFETCH_GRADIENT(dy, y, i, ahead, epi);
                              INPUT_GRADIENT_V(GRADIENT_V(dy, y, i, epi), LOADX(x + i), hi, k1, k2, k3, slack, bk1,
                                               bk2, cbn_vd_load(bc.wm + k_), cbn_vd_load(bc.wk1 + k_),
                                               cbn_vd_load(bc.wk2 + k_), cbn_vd_load(bc.wk3 + k_)); }));
        } else if (dx) {
            CBN_WRITE_ROWS(dx, rows, w, C,
                           const VT k1 = LOAD(bc.k1 + k_); const VT slack = CHECK_ONLY(LOAD(bc.slack + k_));
                           const VT bk1 = CHECK_ONLY(LOAD(bc.bk1 + k_)),
                           ({ PREFETCH_GRADIENT(dy, y, i, ahead, epi);
                              SCALE_V(GRADIENT_V(dy, y, i, epi), k1, slack, bk1, cbn_vd_load(bc.wk1 + k_)); }));
        }
    } else {
        const int64_t C = plan->shape.channels, w = item.c1 - item.c0;
        const int64_t rows = FN(rows_per_run)(plan, item), ahead = FN(column_ahead)(plan, item);
        for (int64_t r = item.begin; r < item.end; r += rows) {
            const int64_t at = r * C + item.c0, n = rows * w;
            const ELEM *dy = (const ELEM *)job->dy + at, *y = job->y ? (const ELEM *)job->y + at : NULL;
            ELEM *dx = job->out ? (ELEM *)job->out + at : NULL;
            if (epi & CBN_EPILOGUE_RESIDUAL)
                FN(run_residual_gradient)(dy, y, (ELEM *)job->dresidual + at, n, ahead, plan->streaming, epi);
            if (!dx) continue;
            if (through_statistics) {
                const ELEM *x = (const ELEM *)job->x + at;
                CBN_WRITE_RUN(dx, n, w, plan->streaming,
                              PUT(dx, i, INPUT_GRADIENT_S(GRADIENT_S(dy, y, i, epi), GET(x, i), bc.hi[c_],
                                                          bc.k1[c_], bc.k2[c_], bc.k3[c_], bc.slack[c_], bc.bk1[c_],
                                                          bc.bk2[c_], bc.wm[c_], bc.wk1[c_], bc.wk2[c_], bc.wk3[c_])),
                              ({ PREFETCH(x + i, ahead); PREFETCH_GRADIENT(dy, y, i, ahead, epi);
                                 INPUT_GRADIENT_V(GRADIENT_V(dy, y, i, epi), LOADX(x + i), LOAD(bc.hi + c_),
                                                  LOAD(bc.k1 + c_), LOAD(bc.k2 + c_),
                                                  LOAD(bc.k3 + c_), LOAD(bc.slack + c_), LOAD(bc.bk1 + c_),
                                                  LOAD(bc.bk2 + c_), cbn_vd_load(bc.wm + c_),
                                                  cbn_vd_load(bc.wk1 + c_), cbn_vd_load(bc.wk2 + c_),
                                                  cbn_vd_load(bc.wk3 + c_)); }));
            } else {
                CBN_WRITE_RUN(dx, n, w, plan->streaming,
                              PUT(dx, i, SCALE_S(GRADIENT_S(dy, y, i, epi), bc.k1[c_], bc.slack[c_], bc.bk1[c_],
                                                 bc.wk1[c_])),
                              ({ PREFETCH_GRADIENT(dy, y, i, ahead, epi);
                                 SCALE_V(GRADIENT_V(dy, y, i, epi), LOAD(bc.k1 + c_), LOAD(bc.slack + c_),
                                         LOAD(bc.bk1 + c_), cbn_vd_load(bc.wk1 + c_)); }));
            }
        }
    }
    CBN_FENCE_STREAMS(plan->streaming);
}

CBN_MULTIVERSIONED static void FN(input_gradient)(const cbn_job *job, cbn_item item) {
#define CALL(e) FN(input_gradient_item)(job, item, e)
    CBN_EPILOGUE_SWITCH(job->gradient_epilogue, CALL)
#undef CALL
}

/* ---------- per-channel finalize ---------- */

/// Statistics, running statistics and coefficients of channel c from its
/// moments (this slice's, or the whole batch's across processes).
static void FN(finish_forward)(cbn_job *job, int64_t c, cbn_moments acc) {
    const PARAM *weight = (const PARAM *)job->weight, *bias = (const PARAM *)job->bias;
    PARAM *running_mean = (PARAM *)job->running_mean, *running_var = (PARAM *)job->running_var;
    const double m = acc.count, momentum = job->momentum;
    const double variance = acc.m2 / m;
    const double mean = job->mutant == CBN_MUTANT_WRONG_MEAN ? acc.mean + 1e-3 * (sqrt(variance) + fabs(acc.mean))
                                                             : acc.mean;
    const double invstd = cbn_inverse_std(variance, job->eps);
    if (job->saved_mean) job->saved_mean[c] = mean;
    if (job->saved_invstd) job->saved_invstd[c] = invstd;
    if (running_mean) {
        const double unbiased = acc.m2 / (m - 1);
        running_mean[c] = (PARAM)((1 - momentum) * (double)running_mean[c] + momentum * mean);
        running_var[c] = (PARAM)((1 - momentum) * (double)running_var[c] + momentum * unbiased);
    }
    const double gamma = weight ? (double)weight[c] : 1.0;
    FN(set_coefficients)(job, c, mean, gamma * cbn_normalizing_scale(invstd), 0, bias ? (double)bias[c] : 0.0);
}

static void FN(finalize_forward)(cbn_job *job, int64_t c0, int64_t c1) {
    const int64_t parts = job->plan.parts;
    for (int64_t c = c0; c < c1; c++) {
        if (job->moments_in) {
            const double *given = job->moments_in + 3 * c;
            FN(finish_forward)(job, c, (cbn_moments){given[0], given[1], given[2]});
            continue;
        }
        cbn_moments acc = {0, 0, 0};
        for (int64_t p = 0; p < parts; p++) {
            const cbn_partial *part = &job->partials[c * parts + p];
            cbn_moments_merge(&acc, part->a, part->b, part->c);
        }
        if (job->moments_out) {
            double *out = job->moments_out + 3 * c;
            out[0] = acc.count; out[1] = acc.mean; out[2] = acc.m2;
        } else {
            FN(finish_forward)(job, c, acc);
        }
    }
}

/// dweight, dbias and the dx coefficients of channel c from the sums of its
/// m values (this slice's, or the whole batch's across processes).
static void FN(finish_backward)(cbn_job *job, int64_t c, double m, double sum_dy, double sum_dy_d) {
    const PARAM *weight = (const PARAM *)job->weight;
    PARAM *dweight = (PARAM *)job->dweight, *dbias = (PARAM *)job->dbias;
    const double invstd = cbn_normalizing_scale(job->invstd_in[c]);
    const double gamma = weight ? (double)weight[c] : 1.0;
    const double grad_bias = sum_dy, grad_weight = sum_dy_d * invstd;
    if (dweight) dweight[c] = (PARAM)grad_weight;
    if (dbias) dbias[c] = (PARAM)grad_bias;
    if (job->training)
        FN(set_coefficients)(job, c, job->mean_in[c], gamma * invstd, -gamma * invstd * invstd * grad_weight / m,
                             -gamma * invstd * grad_bias / m);
}

static void FN(finalize_backward)(cbn_job *job, int64_t c0, int64_t c1) {
    const int64_t parts = job->plan.parts;
    for (int64_t c = c0; c < c1; c++) {
        if (job->sums_in) {
            const double *given = job->sums_in + 3 * c;
            FN(finish_backward)(job, c, given[0], given[1], given[2]);
            continue;
        }
        double sum_dy = 0, sum_dy_d = 0;
        for (int64_t p = 0; p < parts; p++) {
            sum_dy += job->partials[c * parts + p].a;
            sum_dy_d += job->partials[c * parts + p].b;
        }
#ifndef CBN_CHECK_RATIO
        /* The passes summed g*(x - mean_hi) (DEVIATION): take the rest of
         * the mean off here, in double, once (not 0 * an infinite sum). */
        const double rest = FN(mean_rest)(job->mean_in[c]);
        if (rest != 0) sum_dy_d -= rest * sum_dy;
#endif
        if (job->sums_out) {
            double *out = job->sums_out + 3 * c;
            out[0] = (double)job->plan.m; out[1] = sum_dy; out[2] = sum_dy_d;
        } else {
            FN(finish_backward)(job, c, (double)job->plan.m, sum_dy, sum_dy_d);
        }
    }
}

/// Coefficients known before any pass: inference forward (from the running
/// statistics) and backward (from the given mean and invstd).
static void FN(prepare)(cbn_job *job) {
    const PARAM *weight = (const PARAM *)job->weight, *bias = (const PARAM *)job->bias;
    for (int64_t c = 0; c < job->plan.shape.channels; c++) {
        const double gamma = weight ? (double)weight[c] : 1.0;
        if (job->backward) {
            FN(set_coefficients)(job, c, job->mean_in[c], gamma * cbn_normalizing_scale(job->invstd_in[c]), 0, 0);
        } else if (!job->training) {
            const double variance = (double)((const PARAM *)job->running_var)[c];
            FN(set_coefficients)(job, c, (double)((const PARAM *)job->running_mean)[c],
                                 gamma * cbn_normalizing_scale(cbn_inverse_std(variance, job->eps)), 0,
                                 bias ? (double)bias[c] : 0.0);
        }
    }
}

static void FN(inference_statistics)(int64_t channels, const void *running_mean,
                                     const void *running_var, double eps,
                                     double *mean_out, double *invstd_out) {
    for (int64_t c = 0; c < channels; c++) {
        mean_out[c] = (double)((const PARAM *)running_mean)[c];
        invstd_out[c] = cbn_inverse_std((double)((const PARAM *)running_var)[c], eps);
    }
}

const cbn_kernels CBN_CAT(cbn_kernels, CBN_SUFFIX) = {
#ifdef CBN_CHECK_RATIO
    .checked = 1,
#endif
    .statistics = FN(statistics),
    .normalize = FN(normalize),
    .sums = FN(sums),
    .input_gradient = FN(input_gradient),
    .finalize_forward = FN(finalize_forward),
    .finalize_backward = FN(finalize_backward),
    .prepare = FN(prepare),
    .inference_statistics = FN(inference_statistics),
};

#undef CBN_CAT2
#undef CBN_WRITE_RUN
#undef CBN_NEXT_CHANNEL
#undef CBN_SET_COEFFICIENT
#undef CBN_EPILOGUE_SWITCH
#undef FORWARD_V
#undef FORWARD_S
#undef FORWARD_WIDE
#undef INPUT_GRADIENT_V
#undef INPUT_GRADIENT_S
#undef SCALE_V
#undef SCALE_S
#undef CHECKED_V
#undef CHECKED_S
#undef CHECK_ONLY
#undef CBN_CHECK_LIMIT
#undef CBN_INVERSE_RATIO
#undef PREFETCH
#undef PREFETCH_GRADIENT
#undef PREFETCH_FORWARD
#undef CBN_AHEAD
#undef CBN_AHEAD_ROWS
#undef CBN_ROW_BLOCK
#undef CBN_WRITE_ROWS
#undef DEVIATION_V
#undef DEVIATION_S
#undef ABS
#undef GRADIENT_V
#undef GRADIENT_S
#undef KEEP
#undef CBN_FENCE_STREAMS
#undef CBN_CAT
#undef FN
#undef T
#undef ELEM
#undef PARAM
#undef VT
#undef VE
#undef VE2
#undef CBN_JOIN
#undef CBN_LINE_BYTES
#undef LOAD
#undef LOADX
#undef STOREX
#undef GET
#undef PUT
#undef WIDEN
/* The instantiation's parameters: each #include defines its own. */
#undef CBN_T
#undef CBN_ELEM
#undef CBN_PARAM
#undef CBN_SUFFIX
#undef CBN_WIDEN_V
#undef CBN_NARROW_V
#undef CBN_WIDEN_S
#undef CBN_NARROW_S
#undef CBN_CHECK_RATIO
#undef CBN_PREFETCH_BYTES
