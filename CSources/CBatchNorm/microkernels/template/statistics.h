/*
 * The forward statistics: each part's moments (count, mean, M2), its blocks
 * summed about their first value and merged in order (plan.h). Part of
 * kernels_template.h.
 */

/// Rows a call of the columns walk takes at most: four of a lane's (16
/// rows apart), or four consecutive rows of the tail (cbn_column_calls).
#define CBN_AHEAD_ROWS 4

/// How far a columns call of `item` asks for its inputs ahead, in values
/// from each row it reads (0: not at all). Where the plan prefetches:
/// - an item of part of each row (its rows are pieces far apart): the rows
///   the next call reads, the next row for a lane's call (the next lane's
///   call takes it) and CBN_AHEAD_ROWS rows on for the tail's;
/// - whole rows so short that CBN_AHEAD_ROWS * CBN_LANES of them make about
///   CBN_AHEAD values: CBN_AHEAD_ROWS of the call's strides on, the rows of
///   a later group of the same lane (or of the tail);
/// - other whole rows: none (the processor's prefetchers follow them).
CBN_INLINE int64_t FN(columns_ahead)(const cbn_plan *plan, cbn_item item, const cbn_column_call *call) {
    const int64_t C = plan->shape.channels;
    if (!plan->prefetch) return 0;
    if (item.c1 - item.c0 < C) return call->stride == C ? CBN_AHEAD_ROWS * C : C;
    return CBN_AHEAD_ROWS * CBN_LANES * C <= 2 * CBN_AHEAD(plan) ? CBN_AHEAD_ROWS * call->stride : 0;
}

/// For the sixteen channels from k, with d = x[i*segment_stride + j*stride
/// + k] - pivot[k]: adds d to sum[k] and d^2 to sumsq[k] for i = 0, ...
/// segments - 1 and, in each, j = 0, 1, ... rows - 1, in that order, and
/// keeps the sums of lanes [first, first + count) alone (all 16: each). The
/// accumulators stay in registers for the call's rows, so a call with
/// several rows touches L1 once. Asks for x `ahead` values past each value
/// it reads (0: not at all).
CBN_INLINE void FN(rows_add_shifted_v)(double *sum, double *sumsq, const ELEM *x, int64_t stride, int64_t rows,
                                       int64_t segments, int64_t segment_stride, const double *pivot, int64_t k,
                                       int64_t first, int64_t count, int64_t ahead) {
    const cbn_vd p = cbn_vd_load(pivot + k);
    cbn_vd s = cbn_vd_load(sum + k), q = cbn_vd_load(sumsq + k);
    for (int64_t i = 0; i < segments; i++) {
        for (int64_t j = 0; j < rows; j++) {
            const int64_t at = i * segment_stride + j * stride + k;
            PREFETCH(x + at, ahead);
            cbn_vd d = WIDEN(LOADX(x + at)) - p;
            s += d;
            q += d * d;
        }
    }
    cbn_vd_store_lanes(sum + k, &s, first, count);
    cbn_vd_store_lanes(sumsq + k, &q, first, count);
}

/// For k < w, the same sums of channel k (one lane or the tail of the
/// reduction order, see plan.h): rows_add_shifted_v's vectors
/// (CBN_CHANNEL_VECTORS), or one channel at a time where w < 16. Each
/// channel adds its own values in the same order either way.
CBN_INLINE void FN(rows_add_shifted)(double *sum, double *sumsq, const ELEM *x, int64_t stride, int64_t rows,
                                     int64_t segments, int64_t segment_stride, const double *pivot, int64_t w,
                                     int64_t ahead) {
    if (w >= 16) {
#define CALL(k, first, count, whole)                                                             \
    FN(rows_add_shifted_v)(sum, sumsq, x, stride, rows, segments, segment_stride, pivot, k, first, count, ahead)
        CBN_CHANNEL_VECTORS(w, 0, CALL);
#undef CALL
        return;
    }
    for (int64_t k = 0; k < w; k++) {
        double s = sum[k], q = sumsq[k];
        for (int64_t i = 0; i < segments; i++) {
            for (int64_t j = 0; j < rows; j++) {
                double d = (double)GET(x, i * segment_stride + j * stride + k) - pivot[k];
                s += d;
                q += d * d;
            }
        }
        sum[k] = s;
        sumsq[k] = q;
    }
}

/// pivot[k], k < w: the first value of block b0 of channel k of a planes
/// item whose channel 0 starts at x, in double.
CBN_INLINE void FN(plane_pivots)(const cbn_plan *plan, const ELEM *x, int64_t b0, int64_t w, double *pivot) {
    const int64_t S = plan->shape.spatial, first = cbn_plane_offset(plan, b0);
    for (int64_t k = 0; k < w; k++) pivot[k] = (double)GET(x, k * S + first);
}

/// rows[j*w + k] = runs[k*S + j] for j < length, k < w: the runs of w
/// channels of a planes walk (S values apart) as `length` rows of w values.
/// Value by value: vectorized, the copy became a slower scatter.
CBN_INLINE void FN(rows_of_runs)(ELEM *rows, const ELEM *runs, int64_t S, int64_t length, int64_t w) {
    for (int64_t j = 0; j < length; j++) {
#pragma clang loop vectorize(disable)
        for (int64_t k = 0; k < w; k++) memcpy(&rows[j * w + k], &runs[k * S + j], sizeof(ELEM));
    }
}

/// The converse: runs[k*S + j] = rows[j*w + k].
CBN_INLINE void FN(runs_of_rows)(ELEM *runs, const ELEM *rows, int64_t S, int64_t length, int64_t w) {
    for (int64_t j = 0; j < length; j++) {
#pragma clang loop vectorize(disable)
        for (int64_t k = 0; k < w; k++) memcpy(&runs[k * S + j], &rows[j * w + k], sizeof(ELEM));
    }
}

/// Channels the short-plane sums copy at a time (part_sums_short_planes):
/// their five row buffers then take at most 38 KiB of a worker's stack.
#define CBN_SHORT_PLANE_CHANNELS 64

/// block_moments_planes for planes of fewer than CBN_LANES values, whose
/// every value goes to its channel's tail, in order: each segment's w runs
/// (channel k's at x[k*S + offset ...]) are copied as rows of w channels and
/// added by rows_add_shifted, sixteen channels at a time, where a run at a
/// time would add them one value at a time. The same additions in the same order.
CBN_INLINE void FN(block_moments_short_planes)(const cbn_job *job, cbn_item item, int64_t b0, int64_t b1,
                                               cbn_moments_rows *acc) {
    const cbn_plan *plan = &job->plan;
    const int64_t S = plan->shape.spatial, w = item.c1 - item.c0;
    const ELEM *x = (const ELEM *)job->x + item.c0 * S;
    ELEM rows[(CBN_LANES - 1) * CBN_PLANE_MAX_CHANNELS];
    double sum[CBN_PLANE_MAX_CHANNELS], sumsq[CBN_PLANE_MAX_CHANNELS], pivot[CBN_PLANE_MAX_CHANNELS];
    memset(sum, 0, sizeof(double) * w);
    memset(sumsq, 0, sizeof(double) * w);
    FN(plane_pivots)(plan, x, b0, w, pivot);
    int64_t value, length;
    cbn_segments segments = cbn_segments_make(plan, b0, b1);
    while (cbn_segments_next(&segments, &value, &length)) {
        FN(rows_of_runs)(rows, x + cbn_plane_offset(plan, value), S, length, w);
        FN(rows_add_shifted)(sum, sumsq, rows, w, length, 1, 0, pivot, w, 0);
    }
    /* As block_moments_planes totals a channel: its (empty) lanes' sum, then its tail. */
    for (int64_t k = 0; k < w; k++) {
        sum[k] = 0.0 + sum[k];
        sumsq[k] = 0.0 + sumsq[k];
    }
    cbn_moments_rows_merge_shifted(acc, w, (double)(b1 - b0), pivot, sum, sumsq);
}

/// Merges the moments of block [b0, b1) of channels item.c0 + k, k < w, into
/// acc's channel k (planes walk). Each channel's sums of d and d^2, d = x - (the
/// block's first value of the channel), come from one sweep. With `beside`
/// (planes of CBN_LANES values or more), the same segment of that item is
/// normalized with the epilogue `epi` in the same loops: each vector of y
/// it writes steps the sums by one vector (run_sums.h).
CBN_INLINE void FN(block_moments_planes)(const int epi, const cbn_job *job, cbn_item item, int64_t b0, int64_t b1,
                                         const FN(cbn_beside) *beside, cbn_moments_rows *acc) {
    const cbn_plan *plan = &job->plan;
    const int64_t S = plan->shape.spatial, w = item.c1 - item.c0;
    if (S < CBN_LANES && !beside) {
        FN(block_moments_short_planes)(job, item, b0, b1, acc);
        return;
    }
    const ELEM *x = (const ELEM *)job->x + item.c0 * S;    /* channel k's values start at x + k*S */
    cbn_vd sum[CBN_PLANE_MAX_CHANNELS], sumsq[CBN_PLANE_MAX_CHANNELS];
    double tail_sum[CBN_PLANE_MAX_CHANNELS], tail_sumsq[CBN_PLANE_MAX_CHANNELS];
    double pivot[CBN_PLANE_MAX_CHANNELS];
    memset(sum, 0, sizeof(cbn_vd) * w);
    memset(sumsq, 0, sizeof(cbn_vd) * w);
    memset(tail_sum, 0, sizeof(double) * w);
    memset(tail_sumsq, 0, sizeof(double) * w);
    FN(plane_pivots)(plan, x, b0, w, pivot);
    int64_t value, length;
    cbn_segments segments = cbn_segments_make(plan, b0, b1);
    while (cbn_segments_next(&segments, &value, &length)) {
        const int64_t offset = cbn_plane_offset(plan, value);
        if (beside) {
            const FN(cbn_sums_run) run = {x + offset, NULL, NULL, NULL, NULL};
            FN(cbn_sum_cursor) cursor;
            FN(sum_cursor_start)(&cursor, CBN_CURSOR_MOMENTS, 0, &run, S, length, w, pivot, NULL, sum, sumsq,
                                 tail_sum, tail_sumsq, FN(joint_ahead)(plan), FN(joint_level)(plan));
            FN(elementwise_segment)(CBN_OP_NORMALIZE, epi, plan, beside->w, &beside->inputs, beside->out, offset,
                                    length, &cursor);
            FN(sum_cursor_finish)(&cursor);
            continue;
        }
#define CALL(ahead, level)                                                                       \
    for (int64_t k = 0; k < w; k++)                                                              \
        FN(add_run_shifted)(x + k * S + offset, length, pivot[k], &sum[k], &sumsq[k], &tail_sum[k], \
                            &tail_sumsq[k], ahead, level)
        CBN_REDUCTION_PREFETCH_SWITCH(plan, CALL);
#undef CALL
    }
    double total[CBN_PLANE_MAX_CHANNELS], total_sq[CBN_PLANE_MAX_CHANNELS];
    for (int64_t k = 0; k < w; k++) {
        total[k] = cbn_vd_sum(&sum[k]) + tail_sum[k];
        total_sq[k] = cbn_vd_sum(&sumsq[k]) + tail_sumsq[k];
    }
    cbn_moments_rows_merge_shifted(acc, w, (double)(b1 - b0), pivot, total, total_sq);
}

/// block_moments_planes for the columns walk: the same sums in the same
/// order, with lanes kept per channel.
CBN_INLINE void FN(block_moments_columns)(const cbn_job *job, cbn_item item, int64_t b0, int64_t b1,
                                          double *lanes, cbn_moments_rows *acc) {
    const cbn_plan *plan = &job->plan;
    const int64_t C = plan->shape.channels, w = item.c1 - item.c0;
    const ELEM *x = (const ELEM *)job->x + item.c0;        /* row r, channel k at x[r*C + k] */
    double pivot[CBN_MAX_BLOCK_CHANNELS];
    cbn_column_sums sums;
    cbn_column_sums_clear(&sums, lanes, w);
    for (int64_t k = 0; k < w; k++) pivot[k] = (double)GET(x, b0 * C + k);
    cbn_column_calls calls = cbn_column_calls_make(plan, b0, b1, &sums, w, CBN_TUNING.statistics_three_row_images);
    cbn_column_call call;
    /* Calls of one image's rows get a loop of their own, without the segments' loop. */
    while (cbn_column_calls_next(&calls, &call)) {
        const int64_t ahead = FN(columns_ahead)(plan, item, &call);
        if (call.segments == 1)
            FN(rows_add_shifted)(call.a, call.b, x + call.row * C, call.stride, call.rows, 1, 0, pivot, w, ahead);
        else
            FN(rows_add_shifted)(call.a, call.b, x + call.row * C, call.stride, call.rows, call.segments,
                                 call.segment_stride, pivot, w, ahead);
    }
    double sum[CBN_MAX_BLOCK_CHANNELS], sumsq[CBN_MAX_BLOCK_CHANNELS];
    cbn_column_sums_totals(&sums, w, sum, sumsq);
    cbn_moments_rows_merge_shifted(acc, w, (double)(b1 - b0), pivot, sum, sumsq);
}

/// Moments of each part of one item into its partials: the part's blocks
/// merged in order with Chan's formula. `lanes`: the worker's scratch for the
/// columns walk's lane accumulators. With `beside`, y of that item in the
/// same loops (block_moments_planes).
CBN_INLINE void FN(statistics_item)(const int epi, const cbn_job *job, cbn_item item, const FN(cbn_beside) *beside,
                                    double *lanes) {
    const cbn_plan *plan = &job->plan;
    const int64_t w = item.c1 - item.c0;
    double mean[CBN_MAX_BLOCK_CHANNELS], m2[CBN_MAX_BLOCK_CHANNELS];
    cbn_moments_rows acc = {0, mean, m2};
    int64_t part = item.part;
    for (int64_t p0 = item.begin; p0 < item.end; p0 += plan->part_length, part++) {
        const int64_t p1 = cbn_min64(item.end, p0 + plan->part_length);
        acc.count = 0;
        for (int64_t b0 = p0; b0 < p1; b0 += plan->block_length) {
            const int64_t b1 = cbn_min64(p1, b0 + plan->block_length);
            if (beside || plan->walk == CBN_WALK_PLANES)
                FN(block_moments_planes)(epi, job, item, b0, b1, beside, &acc);
            else
                FN(block_moments_columns)(job, item, b0, b1, lanes, &acc);
        }
        for (int64_t k = 0; k < w; k++)
            job->partials[(item.c0 + k) * plan->parts + part].moments = (cbn_moments){acc.count, mean[k], m2[k]};
    }
}

/// Moments of each part of one item into its partials (statistics_item).
CBN_MULTIVERSIONED static void FN(statistics)(const cbn_job *job, cbn_item item, double *lanes) {
    FN(statistics_item)(0, job, item, NULL, lanes);
}

#ifdef CBN_JOINT_LOOP
/// The statistics of `item` and, in the same loops, y of the fused item
/// `beside` with the epilogue e, whose coefficients are set (the joint
/// loop, plan.h): a function of its own for each epilogue, as normalize's.
#define CBN_STATISTICS_BESIDE_WITH(e)                                                            \
    CBN_MULTIVERSIONED static void FN(statistics_beside_with_##e)(const cbn_job *job, cbn_item item, \
                                                                   cbn_item beside, double *lanes) { \
        FN(cbn_block_coefficients) bc;                                                           \
        FN(load_block_coefficients)(job, beside, &bc);                                           \
        const FN(cbn_beside) joint = FN(beside_of)(job, beside, CBN_OP_NORMALIZE, e, &bc);        \
        FN(statistics_item)(e, job, item, &joint, lanes);                                        \
        cbn_fence_streams(job->plan.streaming);                                                  \
    }
CBN_STATISTICS_BESIDE_WITH(0)
CBN_STATISTICS_BESIDE_WITH(1)
CBN_STATISTICS_BESIDE_WITH(2)
CBN_STATISTICS_BESIDE_WITH(3)
#undef CBN_STATISTICS_BESIDE_WITH

/// The statistics of `item` and y of `beside` in the same loops, in loops
/// of their own for each epilogue.
static void FN(statistics_beside)(const cbn_job *job, cbn_item item, cbn_item beside, double *lanes) {
#define CALL(e) FN(statistics_beside_with_##e)(job, item, beside, lanes)
    CBN_EPILOGUE_SWITCH(job->epilogue, CALL)
#undef CALL
}
#endif
