/*
 * The statistics' sums along runs (the planes walk): a run at a time, or a
 * vector at a time for the joint loop, in which a fused item's statistics
 * add up its x inside the loops that write the y of the item its worker ran
 * before (statistics.h, statistics_beside), so that the reads of the one and
 * the stores of the other overlap and the sums' arithmetic hides under them.
 * Part of kernels_template.h.
 */

/// With d = x[i] - pivot: *sum += d and *sumsq += d^2, sixteen lanes at a
/// time; the values past the last full sixteen go to the tails. Accumulating
/// across runs and reducing once per block keeps short runs (7x7 planes)
/// cheap. d is formed in double, exactly for float input. Asks for x
/// `ahead` values on, into the cache `level` says.
CBN_INLINE void FN(add_run_shifted)(const ELEM *x, int64_t n, double pivot, cbn_vd *sum, cbn_vd *sumsq,
                                    double *tail_sum, double *tail_sumsq, int64_t ahead, const int level) {
    cbn_vd s = *sum, q = *sumsq;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        PREFETCH_TO(x + i, ahead, level);
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

/// One segment's sums for w channels (block_moments_planes'), taken one
/// step at a time by another loop: channel k's run of `length` values lies
/// at x + k*S, summed about pivot[k] into sum[k], sumsq[k] and the tails.
/// A step adds the next whole vector of channel k's run, the one the
/// cursor is on; past its last one, a cursor that goes `across` the
/// channels (one loop over a segment of whole planes) adds the run's tail
/// and moves to channel k + 1, and any other waits for its caller to end
/// the channel. Each channel's values go to the same lanes in the same order
/// as add_run_shifted's, so the sums are those of the statistics alone, bit
/// for bit. Channel k's vector sums are held in `s` and `q` while it runs.
typedef struct FN(cbn_sum_cursor) {
    const ELEM *x;
    int64_t S, length, w;
    int64_t k, i;                   /* the next step: channel k, from value i */
    int across;
    cbn_vd s, q;
    cbn_vd *sum, *sumsq;
    double *tail_sum, *tail_sumsq;
    const double *pivot;
    int64_t ahead;                  /* asks for x this many values on (0: not at all)... */
    int level;                      /* ...into this cache (CBN_TO_L1 or CBN_TO_L2) */
} FN(cbn_sum_cursor);

/// Puts the cursor at the start of channel k's run, k < w.
CBN_INLINE void FN(sum_cursor_channel)(FN(cbn_sum_cursor) *c, int64_t k) {
    c->k = k;
    c->i = 0;
    c->s = c->sum[k];
    c->q = c->sumsq[k];
}

/// A cursor over the segment of w channels whose channel 0's run starts at x.
CBN_INLINE void FN(sum_cursor_start)(FN(cbn_sum_cursor) *c, const ELEM *x, int64_t S, int64_t length, int64_t w,
                                     const double *pivot, cbn_vd *sum, cbn_vd *sumsq, double *tail_sum,
                                     double *tail_sumsq, int64_t ahead, int level) {
    c->x = x;
    c->S = S;
    c->length = length;
    c->w = w;
    c->across = 0;
    c->sum = sum;
    c->sumsq = sumsq;
    c->tail_sum = tail_sum;
    c->tail_sumsq = tail_sumsq;
    c->pivot = pivot;
    c->ahead = ahead;
    c->level = level;
    FN(sum_cursor_channel)(c, 0);
}

/// Adds the rest of channel k's run and moves to the next channel (past
/// the last, every step does nothing).
CBN_INLINE void FN(sum_cursor_end_channel)(FN(cbn_sum_cursor) *c) {
    const int64_t k = c->k;
    const ELEM *rest = c->x + k * c->S + c->i;
    if (c->level == CBN_TO_L2)
        FN(add_run_shifted)(rest, c->length - c->i, c->pivot[k], &c->s, &c->q, &c->tail_sum[k], &c->tail_sumsq[k],
                            c->ahead, CBN_TO_L2);
    else
        FN(add_run_shifted)(rest, c->length - c->i, c->pivot[k], &c->s, &c->q, &c->tail_sum[k], &c->tail_sumsq[k],
                            c->ahead, CBN_TO_L1);
    c->sum[k] = c->s;
    c->sumsq[k] = c->q;
    if (k + 1 < c->w) {
        FN(sum_cursor_channel)(c, k + 1);
    } else {
        c->k = c->w;
        c->i = c->length;
    }
}

/// One step: the next sixteen values of the cursor's channel.
CBN_INLINE void FN(sum_cursor_step)(FN(cbn_sum_cursor) *c) {
    if (c->i + 16 <= c->length) {
        const ELEM *at = c->x + c->k * c->S + c->i;
        PREFETCH_TO(at, c->ahead, c->level);
        const cbn_vd d = WIDEN(LOADX(at)) - c->pivot[c->k];
        c->s += d;
        c->q += d * d;
        c->i += 16;
    } else if (c->across && c->k < c->w) {
        FN(sum_cursor_end_channel)(c);
    }
}

/// The rest of every channel's run from the cursor's on.
CBN_INLINE void FN(sum_cursor_finish)(FN(cbn_sum_cursor) *c) {
    while (c->k < c->w) FN(sum_cursor_end_channel)(c);
}
