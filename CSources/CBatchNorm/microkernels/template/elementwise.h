/*
 * How an elementwise pass walks one item: a planes item run by run, each
 * run of one channel; a columns item in runs of rows or in blocks of rows.
 * The pass itself (what it writes at a value) is a cbn_elementwise
 * (stores.h). Part of kernels_template.h.
 */

/// Rows of a columns item that its elementwise passes take as one run: all
/// of them when the item has every channel (its rows are then one piece of
/// memory, and vectors run across row ends: the coefficient rows wrap
/// around for them, job.h), else one.
CBN_INLINE int64_t FN(rows_per_run)(const cbn_plan *plan, cbn_item item) {
    return item.c1 - item.c0 == plan->shape.channels ? item.end - item.begin : 1;
}

/// Whether a columns item's elementwise pass takes its rows in blocks
/// (write_rows): where the plan says so (plan.h), for items of part of each
/// row and a multiple of 16 channels.
CBN_INLINE int FN(row_blocks)(const cbn_plan *plan, cbn_item item) {
    const int64_t w = item.c1 - item.c0;
    return plan->row_blocks && w < plan->shape.channels && w % 16 == 0;
}

/// How far on a columns item's elementwise loops ask for their inputs:
/// CBN_AHEAD along runs of whole rows; in a run of part of a row, the same
/// channels of a row about CBN_AHEAD values of the item later (the next row
/// at least); 0 where the plan asks for no prefetches.
CBN_INLINE int64_t FN(column_ahead)(const cbn_plan *plan, cbn_item item) {
    const int64_t C = plan->shape.channels, w = item.c1 - item.c0;
    if (w == C || !plan->prefetch) return CBN_AHEAD(plan);
    const int64_t rows = CBN_AHEAD(plan) / w;
    return C * (rows > 1 ? rows : 1);
}

/// The pass's inputs for an item: each tensor from the item's origin `at`
/// (cbn_plan_item_origin).
CBN_INLINE FN(cbn_run) FN(item_inputs)(const cbn_job *job, int64_t at, const int op, const int epi) {
    const int reads_x = op == CBN_OP_NORMALIZE || op == CBN_OP_INPUT_GRADIENT || (epi & CBN_EPILOGUE_RELU_FROM_X);
    const int reads_dy = op != CBN_OP_NORMALIZE;
    FN(cbn_run) r = {0};
    r.x = reads_x ? (const ELEM *)job->x + at : NULL;
    r.z = op == CBN_OP_NORMALIZE && job->residual ? (const ELEM *)job->residual + at : NULL;
    r.dy = reads_dy ? (const ELEM *)job->gradient_dy + at : NULL;
    r.y = reads_dy && job->y ? (const ELEM *)job->y + at : NULL;
    return r;
}

/// `r`'s inputs `at` values on.
CBN_INLINE FN(cbn_run) FN(run_at)(const FN(cbn_run) *r, int64_t at) {
    FN(cbn_run) moved = *r;
    moved.x = r->x ? r->x + at : NULL;
    moved.z = r->z ? r->z + at : NULL;
    moved.dy = r->dy ? r->dy + at : NULL;
    moved.y = r->y ? r->y + at : NULL;
    return moved;
}

/// The item whose output (y or dx) a fused item's first pass writes in its
/// own loops (the joint loop, statistics_beside and sums_beside): the
/// elementwise pass's inputs and output from that item's origin, and its
/// channels.
typedef struct FN(cbn_beside) {
    FN(cbn_run) inputs;
    ELEM *out;
    int64_t w;
} FN(cbn_beside);

/// How far on the joint loop's sums ask for their inputs: the next image's
/// values (theirs, a whole segment on), so that no segment's reads start
/// from memory cold; 0 where the plan asks for no prefetches.
CBN_INLINE int64_t FN(joint_ahead)(const cbn_plan *plan) {
    return plan->prefetch ? plan->shape.channels * plan->shape.spatial : 0;
}

/// ...and into which cache: L2 where the plan's reductions ask into L2.
CBN_INLINE int FN(joint_level)(const cbn_plan *plan) { return plan->prefetch_to_l2 ? CBN_TO_L2 : CBN_TO_L1; }

/// A pass over one segment of a planes item: values [offset, offset +
/// length) of each of its w channels' planes (offset from the item's first
/// value, cbn_plane_offset), each channel's run with that channel's
/// coefficients. Streamed, a segment of whole planes of sixteen values or
/// more (and fewer than the tuning's whole_planes_below) is one run across
/// the channels (stream_planes), so that only the run's two ends share lines
/// with other runs. `inputs` holds the pass's inputs from the item's first
/// value (item_inputs), `out` its output. With `sums` (the joint loop,
/// run_sums.h), each vector written steps them, across the channels in one
/// run of whole planes, else channel k's with channel k's run; the sums of
/// the channels from w on, and the rest of each run's, are the caller's.
CBN_INLINE void FN(elementwise_segment)(const int op, const int epi, const cbn_plan *plan, int64_t w,
                                        const FN(cbn_run) *inputs, ELEM *out, int64_t offset, int64_t length,
                                        FN(cbn_sum_cursor) *sums) {
    const int64_t S = plan->shape.spatial;
    if (plan->streaming && length == S && S >= CBN_LANES && S < plan->tuning->whole_planes_below) {
        FN(cbn_run) run = FN(run_at)(inputs, offset);
        run.plane = S;
        if (sums) sums->across = 1;
        FN(stream_planes)(op, epi, &run, sums, out + offset, w * S);
        return;
    }
    for (int64_t k = 0; k < w; k++) {
        const int64_t at = k * S + offset;
        FN(cbn_scalars) scalars;
        FN(cbn_lanes) lanes;
        FN(scalars_at)(inputs->bc, k, &scalars);
        FN(lanes_of)(&scalars, &lanes);
        FN(cbn_run) run = FN(run_at)(inputs, at);
        run.lanes = &lanes;
        run.scalars = &scalars;
        if (sums && k < sums->w) {
            FN(cbn_sum_cursor) channel = *sums;    /* channel k's sums, apart, so that they stay in registers */
            channel.across = 0;
            FN(sum_cursor_channel)(&channel, k);
            FN(write_run)(op, epi, CBN_RUN_CHANNEL, &run, &channel, out + at, length, length, plan->streaming);
            FN(sum_cursor_end_channel)(&channel);
        } else {
            FN(write_run)(op, epi, CBN_RUN_CHANNEL, &run, NULL, out + at, length, length, plan->streaming);
        }
    }
    if (sums && w < sums->w) FN(sum_cursor_channel)(sums, w);
    else if (sums) sums->k = sums->w;
}

/// A pass over the runs of a planes item, segment by segment.
CBN_INLINE void FN(elementwise_planes)(const int op, const int epi, const cbn_job *job, cbn_item item,
                                       const FN(cbn_run) *inputs, ELEM *out) {
    int64_t value, length;
    cbn_segments segments = cbn_segments_make(&job->plan, item.begin, item.end);
    while (cbn_segments_next(&segments, &value, &length))
        FN(elementwise_segment)(op, epi, &job->plan, item.c1 - item.c0, inputs, out,
                                cbn_plane_offset(&job->plan, value), length, NULL);
}

/// A pass over a columns item: its rows in blocks where the plan says so,
/// else in runs of rows_per_run rows. `inputs` and `out` as for
/// elementwise_planes, from the item's first row and channel.
CBN_INLINE void FN(elementwise_columns)(const int op, const int epi, const cbn_job *job, cbn_item item,
                                        const FN(cbn_run) *inputs, ELEM *out) {
    const cbn_plan *plan = &job->plan;
    const int64_t C = plan->shape.channels, w = item.c1 - item.c0;
    if (FN(row_blocks)(plan, item)) {
        FN(cbn_run) run = *inputs;
        run.ahead = plan->prefetch ? CBN_ROW_BLOCK * C : 0;
        run.x_ahead = item.next ? item.next : run.ahead;
        FN(write_rows)(op, epi, &run, out, item.end - item.begin, w, C);
        return;
    }
    const int64_t rows = FN(rows_per_run)(plan, item);
    for (int64_t r = 0; r < item.end - item.begin; r += rows) {
        FN(cbn_run) run = FN(run_at)(inputs, r * C);
        run.ahead = FN(column_ahead)(plan, item);
        run.x_ahead = item.next ? item.next : run.ahead;
        FN(write_run)(op, epi, CBN_RUN_ROWS, &run, NULL, out + r * C, rows * w, w, plan->streaming);
    }
}

/// `item` as the joint loop's item beside, for the pass `op` with the
/// epilogue `epi` (its output the job's out) and its coefficients `bc`.
CBN_INLINE FN(cbn_beside) FN(beside_of)(const cbn_job *job, cbn_item item, const int op, const int epi,
                                        const FN(cbn_block_coefficients) *bc) {
    const int64_t at = cbn_plan_item_origin(&job->plan, item);
    FN(cbn_beside) beside = {FN(item_inputs)(job, at, op, epi), (ELEM *)job->out + at, item.c1 - item.c0};
    beside.inputs.bc = bc;
    beside.inputs.ahead = beside.inputs.x_ahead = CBN_AHEAD(&job->plan);
    return beside;
}

/// A pass of `op` over one item, reading the job's tensors for it and
/// writing `out` (y, dx or dz). A fused item's second pass (item.next set)
/// asks for the next item's x instead of its own, which its first pass has
/// just read: the next item's first pass then reads x from the cache, and
/// the memory reads it while this pass writes.
CBN_INLINE void FN(elementwise_item)(const int op, const int epi, const cbn_job *job, cbn_item item, void *out) {
    const cbn_plan *plan = &job->plan;
    FN(cbn_block_coefficients) bc;
    FN(load_block_coefficients)(job, item, &bc);
    const int64_t at = cbn_plan_item_origin(plan, item);
    FN(cbn_run) inputs = FN(item_inputs)(job, at, op, epi);
    inputs.bc = &bc;
    if (plan->walk == CBN_WALK_COLUMNS) {
        FN(elementwise_columns)(op, epi, job, item, &inputs, (ELEM *)out + at);
    } else if (item.next != 0) {
        inputs.ahead = CBN_AHEAD(plan);
        inputs.x_ahead = item.next;
        FN(elementwise_planes)(op, epi, job, item, &inputs, (ELEM *)out + at);
    } else {
#define CALL(distance) (inputs.ahead = inputs.x_ahead = (distance), FN(elementwise_planes)(op, epi, job, item, &inputs, (ELEM *)out + at))
        CBN_PREFETCH_SWITCH(plan, CALL);
#undef CALL
    }
    cbn_fence_streams(plan->streaming);
}
