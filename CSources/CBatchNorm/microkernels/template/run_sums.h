/*
 * The sums along runs (the planes walk) of both reductions: the
 * statistics' sums of x, and the backward sums of g and g*(x - mean). A run
 * at a time, or a vector at a time for the joint loop, in which a fused
 * item's sums add up its inputs inside the loops that write the output (y
 * or dx) of the item its worker ran before (statistics.h and sums.h,
 * *_beside), so that the reads of the one and the stores of the other
 * overlap and the sums' arithmetic hides under them. Part of
 * kernels_template.h.
 */

/// With d = x[0, 16) - pivot: *sum += d and *sumsq += d^2, asking for x
/// `ahead` values on, into the cache `level` says. d is formed in double,
/// exactly for float input.
CBN_INLINE void FN(add_shifted_v)(const ELEM *x, double pivot, cbn_vd *sum, cbn_vd *sumsq, int64_t ahead,
                                  const int level) {
    PREFETCH_TO(x, ahead, level);
    const cbn_vd d = WIDEN(LOADX(x)) - pivot;
    *sum += d;
    *sumsq += d * d;
}

/// add_shifted_v along a run of n values, sixteen lanes at a time; the
/// values past the last full sixteen go to the tails. Accumulating across
/// runs and reducing once per block keeps short runs (7x7 planes) cheap.
CBN_INLINE void FN(add_run_shifted)(const ELEM *x, int64_t n, double pivot, cbn_vd *sum, cbn_vd *sumsq,
                                    double *tail_sum, double *tail_sumsq, int64_t ahead, const int level) {
    cbn_vd s = *sum, q = *sumsq;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) FN(add_shifted_v)(x + i, pivot, &s, &q, ahead, level);
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

/// Inference mode's dx = k1*g (scale_v), narrowed to the element type.
CBN_INLINE void FN(scaled_dx_v)(VE *dx, const VT *g, const FN(cbn_lanes) *c) {
    VT scaled;
    const int numbers = FN(scale_v)(&scaled, g, c);
    FN(narrow_v)(dx, &scaled, numbers);
}

/// What a backward sums pass writes besides the sums, from one value's g:
/// dz = g with a residual, dx = k1*g where dx is given (inference mode).
CBN_INLINE void FN(sums_outputs_v)(ELEM *dz, ELEM *dx, int64_t i, const VT *g, const FN(cbn_lanes) *c,
                                   const int epi) {
    if (epi & CBN_EPILOGUE_RESIDUAL) STOREX(dz + i, *g);
    if (dx) {
        VE narrowed;
        FN(scaled_dx_v)(&narrowed, g, c);
        CBN_STORE(VE, dx + i, narrowed);
    }
}
CBN_INLINE void FN(sums_outputs_s)(ELEM *dz, ELEM *dx, int64_t i, T g, const FN(cbn_scalars) *c, const int epi) {
    if (epi & CBN_EPILOGUE_RESIDUAL) PUT(dz, i, g);
    if (dx) PUT(dx, i, FN(scale_s)(g, c));
}

/// The tensors of a backward sums pass, from the first value it reads.
typedef struct FN(cbn_sums_run) {
    const ELEM *x, *dy, *y;
    ELEM *dz, *dx;           /* NULL where not written */
} FN(cbn_sums_run);

/// The item's tensors for a sums pass, offset by `at` values (x is always
/// there; dy is not for the statistics' cursor).
CBN_INLINE FN(cbn_sums_run) FN(sums_run_at)(const FN(cbn_sums_run) *base, int64_t at) {
    FN(cbn_sums_run) r = {base->x + at, base->dy ? base->dy + at : NULL, base->y ? base->y + at : NULL,
                          base->dz ? base->dz + at : NULL, base->dx ? base->dx + at : NULL};
    return r;
}

/// Adds g and g*d of the sixteen values from i of `r` (coefficients c; wm:
/// the mean in double, checked types) to *acc_dy and *acc_dyd, and writes
/// what the pass writes besides (sums_outputs_v). Asks for the inputs
/// `ahead` values on, into the cache `level` says.
CBN_INLINE void FN(add_gradient_v)(const FN(cbn_sums_run) *r, int64_t i, const FN(cbn_lanes) *c, const cbn_vd *wm,
                                   cbn_vd *acc_dy, cbn_vd *acc_dyd, const int64_t ahead, const int level,
                                   const int epi) {
    PREFETCH_TO(r->x + i, ahead, level);
    FN(prefetch_gradient)(r->dy, r->y, r->x, i, ahead, level, epi);
    VT g;
    FN(gradient_v)(&g, r->dy, r->y, r->x, i, c, epi);
    const VT x = LOADX(r->x + i);
    cbn_vd gw = WIDEN(g), d;
    FN(deviation_v)(&d, &x, c, wm);
    *acc_dy += gw;
    *acc_dyd += gw * d;
    FN(sums_outputs_v)(r->dz, r->dx, i, &g, c, epi);
}

/// Adds g and g*d of a run of n values of channel k (coefficients c, also as
/// scalars s) to the accumulators (lanes and tails), asking for its inputs
/// `ahead` values on, into the cache `level` says.
CBN_INLINE void FN(run_sums)(const FN(cbn_sums_run) *r, int64_t n, const FN(cbn_lanes) *c,
                             const FN(cbn_scalars) *s, cbn_vd *acc_dy, cbn_vd *acc_dyd, double *tail_dy,
                             double *tail_dyd, const int64_t ahead, const int level, const int epi) {
    cbn_vd a_dy = *acc_dy, a_dyd = *acc_dyd;
    const cbn_vd wm = CBN_SPLAT(cbn_vd, s->wm);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) FN(add_gradient_v)(r, i, c, &wm, &a_dy, &a_dyd, ahead, level, epi);
    *acc_dy = a_dy;
    *acc_dyd = a_dyd;
    double t_dy = *tail_dy, t_dyd = *tail_dyd;
    for (; i < n; i++) {
        const T g = FN(gradient_s)(r->dy, r->y, r->x, i, s, epi);
        t_dy += (double)g;
        t_dyd += (double)g * FN(deviation_s)(GET(r->x, i), s);
        FN(sums_outputs_s)(r->dz, r->dx, i, g, s, epi);
    }
    *tail_dy = t_dy;
    *tail_dyd = t_dyd;
}

/// What a sum cursor adds up: the statistics' d and d^2, d = x - pivot
/// (add_run_shifted), or the backward sums' g and g*d, d = x - mean
/// (run_sums, which also writes dz with a residual).
enum { CBN_CURSOR_MOMENTS = 0, CBN_CURSOR_GRADIENT = 1 };

/// One segment's sums for w channels (block_moments_planes' or
/// part_sums_planes'), taken one step at a time by another loop: channel
/// k's run of `length` values lies at k*S from the tensors of `run` (x alone
/// for the moments), summed into sum[k], sumsq[k] and the tails. A step adds
/// the next whole vector of channel k's run, the one the cursor is on; past
/// its last one, a cursor that goes `across` the channels (one loop over a
/// segment of whole planes) adds the run's tail and moves to channel k + 1,
/// and any other waits for its caller to end the channel. Each channel's
/// values go to the same lanes in the same order as add_run_shifted's and
/// run_sums', so the sums are those of the passes alone, bit for bit.
/// Channel k's vector sums are held in `s` and `q` while it runs. `kind`
/// and `epi` are constants where a cursor is made, so that each compiles to
/// its own loops.
typedef struct FN(cbn_sum_cursor) {
    int kind, epi;
    FN(cbn_sums_run) run;
    int64_t S, length, w;
    int64_t k, i;                   /* the next step: channel k, from value i */
    int across;
    cbn_vd s, q;
    cbn_vd *sum, *sumsq;
    double *tail_sum, *tail_sumsq;
    const double *pivot;                        /* the moments' */
    const FN(cbn_block_coefficients) *bc;       /* the gradient's coefficients, and channel k's: */
    FN(cbn_scalars) scalars;
    int64_t ahead;                  /* asks for the inputs this many values on (0: not at all)... */
    int level;                      /* ...into this cache (CBN_TO_L1 or CBN_TO_L2) */
} FN(cbn_sum_cursor);

/// Puts the cursor at the start of channel k's run, k < w.
CBN_INLINE void FN(sum_cursor_channel)(FN(cbn_sum_cursor) *c, int64_t k) {
    c->k = k;
    c->i = 0;
    c->s = c->sum[k];
    c->q = c->sumsq[k];
    if (c->kind == CBN_CURSOR_GRADIENT) FN(scalars_at)(c->bc, k, &c->scalars);
}

/// A cursor of `kind` over the segment of w channels whose channel 0's run
/// starts at `run`; `pivot` for the moments, `bc` and `epi` for the gradient.
CBN_INLINE void FN(sum_cursor_start)(FN(cbn_sum_cursor) *c, const int kind, const int epi,
                                     const FN(cbn_sums_run) *run, int64_t S, int64_t length, int64_t w,
                                     const double *pivot, const FN(cbn_block_coefficients) *bc, cbn_vd *sum,
                                     cbn_vd *sumsq, double *tail_sum, double *tail_sumsq, int64_t ahead, int level) {
    c->kind = kind;
    c->epi = epi;
    c->run = *run;
    c->S = S;
    c->length = length;
    c->w = w;
    c->across = 0;
    c->sum = sum;
    c->sumsq = sumsq;
    c->tail_sum = tail_sum;
    c->tail_sumsq = tail_sumsq;
    c->pivot = pivot;
    c->bc = bc;
    c->ahead = ahead;
    c->level = level;
    FN(sum_cursor_channel)(c, 0);
}

/// The cursor's rest of channel k's run from value i, with the constant `level`.
CBN_INLINE void FN(sum_cursor_rest)(FN(cbn_sum_cursor) *c, const int level) {
    const int64_t k = c->k;
    const FN(cbn_sums_run) rest = FN(sums_run_at)(&c->run, k * c->S + c->i);
    if (c->kind == CBN_CURSOR_MOMENTS) {
        FN(add_run_shifted)(rest.x, c->length - c->i, c->pivot[k], &c->s, &c->q, &c->tail_sum[k],
                            &c->tail_sumsq[k], c->ahead, level);
    } else {
        FN(cbn_lanes) lanes;
        FN(lanes_of)(&c->scalars, &lanes);
        FN(run_sums)(&rest, c->length - c->i, &lanes, &c->scalars, &c->s, &c->q, &c->tail_sum[k],
                     &c->tail_sumsq[k], c->ahead, level, c->epi);
    }
}

/// Adds the rest of channel k's run and moves to the next channel (past
/// the last, every step does nothing).
CBN_INLINE void FN(sum_cursor_end_channel)(FN(cbn_sum_cursor) *c) {
    if (c->level == CBN_TO_L2)
        FN(sum_cursor_rest)(c, CBN_TO_L2);
    else
        FN(sum_cursor_rest)(c, CBN_TO_L1);
    c->sum[c->k] = c->s;
    c->sumsq[c->k] = c->q;
    if (c->k + 1 < c->w) {
        FN(sum_cursor_channel)(c, c->k + 1);
    } else {
        c->k = c->w;
        c->i = c->length;
    }
}

/// One step: the next sixteen values of the cursor's channel.
CBN_INLINE void FN(sum_cursor_step)(FN(cbn_sum_cursor) *c) {
    if (c->i + 16 <= c->length) {
        const int64_t at = c->k * c->S + c->i;
        if (c->kind == CBN_CURSOR_MOMENTS) {
            FN(add_shifted_v)(c->run.x + at, c->pivot[c->k], &c->s, &c->q, c->ahead, c->level);
        } else {
            FN(cbn_lanes) lanes;
            FN(lanes_of)(&c->scalars, &lanes);
            const cbn_vd wm = CBN_SPLAT(cbn_vd, c->scalars.wm);
            FN(add_gradient_v)(&c->run, at, &lanes, &wm, &c->s, &c->q, c->ahead, c->level, c->epi);
        }
        c->i += 16;
    } else if (c->across && c->k < c->w) {
        FN(sum_cursor_end_channel)(c);
    }
}

/// The rest of every channel's run from the cursor's on.
CBN_INLINE void FN(sum_cursor_finish)(FN(cbn_sum_cursor) *c) {
    while (c->k < c->w) FN(sum_cursor_end_channel)(c);
}
