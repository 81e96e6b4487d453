/*
 * The elementwise formulas, with their epilogues and, for the half formats,
 * their check. Sixteen values at a time (suffix _v, through pointers: see
 * common.h) or one (_s). Part of kernels_template.h.
 *
 *   forward:  y  = epilogue((x - mean_hi) * k1 + k3)
 *   backward: dx = k1 * g + (k2 * (x - mean_hi) + k3), g the masked dy
 *   inference backward: dx = k1 * g
 */

/* ---------- epilogues: the activation and the residual ---------- */

/// v where y > 0 or y is NaN, +0 elsewhere: relu(v) is keep(v, v), and the
/// gradient mask of y = relu(...) is keep(dy, y) (PyTorch's threshold_backward
/// passes the gradient unless y <= 0). A bit mask, so that the values kept
/// keep their bits in vectors and single values alike.
CBN_INLINE void FN(keep_v)(VT *v, const VT *y) {
    *v = (VT)((FN(cbn_lane_mask))(*v) & ~(*y <= (VT){0}));
}
CBN_INLINE T FN(keep_s)(T v, T y) { return y <= 0 ? (T)0 : v; }

/* ---------- the check (CBN_CHECK_RATIO) ----------
 * e, computed in T from terms whose magnitudes add up to S, and `bound`, at
 * least S/R: every lane with bound > |e| (S > R |e|), or S not small enough
 * to rule out overflow, or NaN, is replaced by the same value computed in
 * double, rounded to T. In float, the steps below err by at most
 * 4 * 2^-24 (S + |e|): each term of e passes through at most four roundings
 * (its coefficient, x - mean_hi, and one or two fused multiply-adds), and
 * k3, formed in double with the rest of the mean, is one rounding of a value
 * whose double error the slack's 2^-22 |mean| term covers. So a kept lane is
 * within 4 * 2^-24 (R + 1) |e|: less than one unit in the last place of the
 * format, by a factor 8, for R = 2^8 (binary16, whose unit is at least
 * 2^-11 |e|) and R = 2^11 (bfloat16, at least 2^-8 |e|), and rounding it to
 * the format stays within one unit of the rounded float64 result.
 * The bound is formed from the check rows (job.h): |k1|/R, |k2|/R and the
 * slack/R, each rounded up, the slack at least 2^-126. So the bound is a
 * normal number, its one or two roundings leave it at least S/R times
 * (1 - 2^-22), well inside the margin above, and no product by R is left
 * per value. A kept e is never a float subnormal. The test is per value, so
 * every value gets the same result whatever its neighbours in a vector. */
#ifdef CBN_CHECK_RATIO
/// S/R up to which float cannot overflow: S <= 2^100; and 1/R.
#define CBN_CHECK_LIMIT ((T)(0x1p100 / CBN_CHECK_RATIO))
#define CBN_INVERSE_RATIO ((T)(1.0 / CBN_CHECK_RATIO))

/// Whether every lane of e passes; `kept` gets the lanes that do. One
/// comparison a lane: bound <= min(limit, |e|), the minimum selected as
/// limit < |e| ? limit : |e|, so that it is |e| where e is NaN and the lane
/// fails, as it does against |e| itself.
CBN_INLINE int FN(check_v)(const VT *e, const VT *bound, FN(cbn_lane_mask) *kept) {
    const VT magnitude = ABS(*e), limit = SPLAT(CBN_CHECK_LIMIT);
    const FN(cbn_lane_mask) over = limit < magnitude;
    const VT capped = (VT)(((FN(cbn_lane_mask))limit & over) | ((FN(cbn_lane_mask))magnitude & ~over));
    *kept = *bound <= capped;
    return __builtin_reduce_and(*kept) != 0;
}

/// e's lanes that failed the check, replaced by `wide`'s, rounded to T.
CBN_INLINE void FN(take_wide_v)(VT *e, const FN(cbn_lane_mask) *kept, const cbn_vd *wide) {
    const VT narrow = __builtin_convertvector(*wide, VT);
    *e = (VT)(((FN(cbn_lane_mask))*e & *kept) | ((FN(cbn_lane_mask))narrow & ~*kept));
}

CBN_INLINE int FN(check_s)(T e, T bound) { return bound <= ABS(e) && bound <= CBN_CHECK_LIMIT; }
#define CBN_CHECKED 1
#else
#define CBN_INVERSE_RATIO ((T)0)
#define CBN_CHECKED 0
CBN_INLINE int FN(check_s)(T e, T bound) { (void)e; (void)bound; return 1; }
#endif

/// x - mean for the backward sums, in double. Checked types form it in
/// double from the unrounded mean: T is float there, and a deviation rounded
/// to float would cost the sums' cancellation its bits. The others subtract
/// mean_hi in T (the finalize takes the rest of the mean off the sums).
/// `wm`: the mean in double, in every lane (checked types only).
CBN_INLINE void FN(deviation_v)(cbn_vd *d, const VT *x, const FN(cbn_lanes) *c, const cbn_vd *wm) {
#ifdef CBN_CHECK_RATIO
    (void)c;
    *d = WIDEN(*x) - *wm;
#else
    (void)wm;
    *d = WIDEN(*x - c->hi);
#endif
}
CBN_INLINE double FN(deviation_s)(T x, const FN(cbn_scalars) *c) {
#ifdef CBN_CHECK_RATIO
    return (double)x - c->wm;
#else
    return (double)(x - c->hi);
#endif
}

/* ---------- the formulas ---------- */

/// y = epilogue((x - hi) * k1 + k3) of sixteen widened values x and, with
/// CBN_EPILOGUE_RESIDUAL, residuals z (zero otherwise): the epilogue adds z,
/// then applies relu with CBN_EPILOGUE_RELU, each step its own rounding.
/// `epi` is a constant where this is used, so the unused steps compile away.
/// Returns 1 where every lane passed the check, so that none of y is NaN
/// (CBN_NARROW_NUMBERS_V may narrow it); 0 otherwise, and for unchecked types.
CBN_INLINE int FN(forward_v)(VT *y, const VT *x, const VT *z, const FN(cbn_lanes) *c, const int epi) {
    const VT d = *x - c->hi;
    VT e = d * c->k1 + c->k3;
    if (epi & CBN_EPILOGUE_RESIDUAL) e = e + *z;
    int numbers = 0;
#ifdef CBN_CHECK_RATIO
    const VT bound = ABS(d) * c->bk1 + (c->slack + ABS(*z) * CBN_INVERSE_RATIO);
    FN(cbn_lane_mask) kept;
    numbers = FN(check_v)(&e, &bound, &kept);
    if (__builtin_expect(!numbers, 0)) {
        FN(cbn_wide_lanes) w;
        FN(wide_lanes)(c, &w);
        cbn_vd wide = (WIDEN(*x) - w.m) * w.k1 + w.k3;
        if (epi & CBN_EPILOGUE_RESIDUAL) wide = wide + WIDEN(*z);
        FN(take_wide_v)(&e, &kept, &wide);
    }
#endif
    if (epi & CBN_EPILOGUE_RELU) FN(keep_v)(&e, &e);
    *y = e;
    return numbers;
}
CBN_INLINE T FN(forward_s)(T x, T z, const FN(cbn_scalars) *c, const int epi) {
    const T d = x - c->hi;
    T e = d * c->k1 + c->k3;
    if (epi & CBN_EPILOGUE_RESIDUAL) e = e + z;
    if (CBN_CHECKED && !FN(check_s)(e, ABS(d) * c->bk1 + (c->slack + ABS(z) * CBN_INVERSE_RATIO))) {
        double wide = ((double)x - c->wm) * c->wk1 + c->wk3;
        if (epi & CBN_EPILOGUE_RESIDUAL) wide = wide + (double)z;
        e = (T)wide;
    }
    if (epi & CBN_EPILOGUE_RELU) e = FN(keep_s)(e, e);
    return e;
}

/// The backward epilogue's g = dy[i], masked by y[i] (CBN_EPILOGUE_RELU) or
/// by the y that the forward formula, with the mask coefficients of `c`,
/// gives from x[i] (CBN_EPILOGUE_RELU_FROM_X): forward_v and its check as
/// the forward pass ran them, rounded to the element type, so bit for bit
/// the y a forward without residual stored.
CBN_INLINE void FN(gradient_v)(VT *g, const ELEM *dy, const ELEM *y, const ELEM *x, int64_t i,
                               const FN(cbn_lanes) *c, const int epi) {
    *g = LOADX(dy + i);
    if (epi & CBN_EPILOGUE_RELU) {
        const VT mask = LOADX(y + i);
        FN(keep_v)(g, &mask);
    }
    if (epi & CBN_EPILOGUE_RELU_FROM_X) {
        FN(cbn_lanes) m;
        FN(mask_lanes)(c, &m);
        const VT xv = LOADX(x + i), z = {0};
        VT e;
        FN(forward_v)(&e, &xv, &z, &m, 0);
        const VT stored = CBN_WIDEN_V(CBN_NARROW_V(e));
        FN(keep_v)(g, &stored);
    }
}
CBN_INLINE T FN(gradient_s)(const ELEM *dy, const ELEM *y, const ELEM *x, int64_t i, const FN(cbn_scalars) *s,
                            const int epi) {
    if (epi & CBN_EPILOGUE_RELU) return FN(keep_s)(GET(dy, i), GET(y, i));
    if (epi & CBN_EPILOGUE_RELU_FROM_X) {
        FN(cbn_scalars) m;
        FN(mask_scalars)(s, &m);
        const T stored = (T)CBN_WIDEN_S(CBN_NARROW_S(FN(forward_s)(GET(x, i), 0, &m, 0)));
        return FN(keep_s)(GET(dy, i), stored);
    }
    return GET(dy, i);
}

/// dx = k1*g + (k2*(x - hi) + k3), g the (masked) gradient and x widened.
/// Returns what forward_v returns.
CBN_INLINE int FN(input_gradient_v)(VT *dx, const VT *g, const VT *x, const FN(cbn_lanes) *c) {
    const VT d = *x - c->hi;
    VT e = c->k1 * *g + (c->k2 * d + c->k3);
    int numbers = 0;
#ifdef CBN_CHECK_RATIO
    const VT bound = c->bk1 * ABS(*g) + (c->bk2 * ABS(d) + c->slack);
    FN(cbn_lane_mask) kept;
    numbers = FN(check_v)(&e, &bound, &kept);
    if (__builtin_expect(!numbers, 0)) {
        FN(cbn_wide_lanes) w;
        FN(wide_lanes)(c, &w);
        const cbn_vd wide = w.k1 * WIDEN(*g) + (w.k2 * (WIDEN(*x) - w.m) + w.k3);
        FN(take_wide_v)(&e, &kept, &wide);
    }
#endif
    *dx = e;
    return numbers;
}
CBN_INLINE T FN(input_gradient_s)(T g, T x, const FN(cbn_scalars) *c) {
    const T d = x - c->hi;
    const T e = c->k1 * g + (c->k2 * d + c->k3);
    if (CBN_CHECKED && !FN(check_s)(e, c->bk1 * ABS(g) + (c->bk2 * ABS(d) + c->slack)))
        return (T)(c->wk1 * (double)g + (c->wk2 * ((double)x - c->wm) + c->wk3));
    return e;
}

/// dx = k1*g (inference mode), g the (masked) gradient. Returns what
/// forward_v returns.
CBN_INLINE int FN(scale_v)(VT *dx, const VT *g, const FN(cbn_lanes) *c) {
    VT e = *g * c->k1;
    int numbers = 0;
#ifdef CBN_CHECK_RATIO
    const VT bound = ABS(*g) * c->bk1 + c->slack;
    FN(cbn_lane_mask) kept;
    numbers = FN(check_v)(&e, &bound, &kept);
    if (__builtin_expect(!numbers, 0)) {
        FN(cbn_wide_lanes) w;
        FN(wide_lanes)(c, &w);
        const cbn_vd wide = WIDEN(*g) * w.k1;
        FN(take_wide_v)(&e, &kept, &wide);
    }
#endif
    *dx = e;
    return numbers;
}
CBN_INLINE T FN(scale_s)(T g, const FN(cbn_scalars) *c) {
    const T e = g * c->k1;
    if (CBN_CHECKED && !FN(check_s)(e, ABS(g) * c->bk1 + c->slack)) return (T)((double)g * c->wk1);
    return e;
}

/// v narrowed to the element type, where `numbers` is what the formula that
/// gave v returned: without the narrowing's NaN case where every lane passed
/// the half formats' check (CBN_NARROW_NUMBERS_V), which gives the same bits.
CBN_INLINE void FN(narrow_v)(VE *out, const VT *v, const int numbers) {
    *out = numbers ? CBN_NARROW_NUMBERS_V(*v) : CBN_NARROW_V(*v);
}
