/*
 * The backward sums: per part, Σg and Σg·(x - mean), g the masked dy; in
 * the same pass dz = g (with a residual) and, in inference mode, dx = k1*g.
 * Part of kernels_template.h.
 */

/// What a sums pass writes besides the sums, lanes [first, first + count)
/// of the sixteen values from i alone (the values of other vectors' lanes,
/// which another vector writes, may be dy or x in place).
CBN_INLINE void FN(sums_outputs_lanes)(ELEM *dz, ELEM *dx, int64_t i, const VT *g, const FN(cbn_lanes) *c,
                                       int64_t first, int64_t count, const int epi) {
    if (epi & CBN_EPILOGUE_RESIDUAL) {
        const VE narrowed = CBN_NARROW_V(*g);
        FN(store_lanes)(dz + i + first, &narrowed, first, count);
    }
    if (dx) {
        VE narrowed;
        FN(scaled_dx_v)(&narrowed, g, c);
        FN(store_lanes)(dx + i + first, &narrowed, first, count);
    }
}

/// The columns counterpart of run_sums for the sixteen channels from k:
/// adds g and g*d at rows j = 0, ... rows - 1 (at `stride`) of segments i =
/// 0, ... segments - 1 (at `segment_stride`) to sum_dy[k] and sum_dyd[k] in
/// that order (one lane or the tail of the reduction order), and keeps the
/// sums, and writes the outputs, of lanes [first, first + count) alone
/// unless `whole`. Asks for the inputs `ahead` values past each value it
/// reads (0: not at all).
CBN_INLINE void FN(rows_add_sums_v)(double *sum_dy, double *sum_dyd, const FN(cbn_sums_run) *r, int64_t stride,
                                    int64_t rows, int64_t segments, int64_t segment_stride,
                                    const FN(cbn_block_coefficients) *bc, int64_t k, int64_t first, int64_t count,
                                    const int whole, int64_t ahead, const int epi) {
    FN(cbn_lanes) c;
    FN(lanes_at)(bc, k, &c);
    const cbn_vd wm = CBN_CHECKED ? cbn_vd_load(bc->wm + k) : (cbn_vd){0};
    cbn_vd a_dy = cbn_vd_load(sum_dy + k), a_dyd = cbn_vd_load(sum_dyd + k);
    for (int64_t i = 0; i < segments; i++) {
        for (int64_t j = 0; j < rows; j++) {
            const int64_t at = i * segment_stride + j * stride + k;
            if (ahead) {
                PREFETCH(r->x + at, ahead);
                FN(prefetch_gradient)(r->dy, r->y, r->x, at, ahead, CBN_TO_L1, epi);
            }
            VT g;
            FN(gradient_v)(&g, r->dy, r->y, r->x, at, &c, epi);
            const VT x = LOADX(r->x + at);
            cbn_vd gw = WIDEN(g), d;
            FN(deviation_v)(&d, &x, &c, &wm);
            a_dy += gw;
            a_dyd += gw * d;
            if (whole)
                FN(sums_outputs_v)(r->dz, r->dx, at, &g, &c, epi);
            else
                FN(sums_outputs_lanes)(r->dz, r->dx, at, &g, &c, first, count, epi);
        }
    }
    cbn_vd_store_lanes(sum_dy + k, &a_dy, first, count);
    cbn_vd_store_lanes(sum_dyd + k, &a_dyd, first, count);
}

/// Items of at least this many channels start the backward sums' vectors
/// at x's lines (rows_head): the two vectors of part of their lanes then
/// add at most one vector in 32.
#define CBN_LINE_VECTORS_CHANNELS 1024

/// Where the vectors of a columns call over w channels start (the `head`
/// of CBN_CHANNEL_VECTORS): at the first line of x (CBN_LINE_BYTES: 64
/// bytes, a whole vector for double), modulo 16 values, where every row
/// the call reads (`stride` values apart, segments `segment_stride`)
/// starts at the same place on its lines, so that no vector loads a piece
/// of a row that spans two lines; else, and for items of fewer than
/// CBN_LINE_VECTORS_CHANNELS channels, at channel 0.
CBN_INLINE int64_t FN(rows_head)(const ELEM *x, int64_t w, int64_t stride, int64_t segments,
                                 int64_t segment_stride) {
    const int64_t line = CBN_LINE_BYTES, bytes = sizeof(ELEM);
    if (w < CBN_LINE_VECTORS_CHANNELS || stride * bytes % line != 0 ||
        (segments > 1 && segment_stride * bytes % line != 0))
        return 0;
    return FN(values_to_line)(x) % 16;
}

/// For k < w, the same sums of channel k: rows_add_sums_v's vectors
/// (CBN_CHANNEL_VECTORS, from x's first line), or one channel at a time
/// where w < 16. Each channel adds its own values in the same order either
/// way.
CBN_INLINE void FN(rows_add_sums)(double *sum_dy, double *sum_dyd, const FN(cbn_sums_run) *r, int64_t stride,
                                  int64_t rows, int64_t segments, int64_t segment_stride,
                                  const FN(cbn_block_coefficients) *bc, int64_t w, int64_t ahead, const int epi) {
    if (w >= 16) {
#define CALL(k, first, count, whole)                                                             \
    FN(rows_add_sums_v)(sum_dy, sum_dyd, r, stride, rows, segments, segment_stride, bc, k, first, count, whole, \
                        ahead, epi)
        CBN_CHANNEL_VECTORS(w, FN(rows_head)(r->x, w, stride, segments, segment_stride), CALL);
#undef CALL
        return;
    }
    for (int64_t k = 0; k < w; k++) {
        FN(cbn_scalars) s;
        FN(scalars_at)(bc, k, &s);
        double t_dy = sum_dy[k], t_dyd = sum_dyd[k];
        for (int64_t i = 0; i < segments; i++) {
            for (int64_t j = 0; j < rows; j++) {
                const int64_t at = i * segment_stride + j * stride + k;
                const T g = FN(gradient_s)(r->dy, r->y, r->x, at, &s, epi);
                t_dy += (double)g;
                t_dyd += (double)g * FN(deviation_s)(GET(r->x, at), &s);
                FN(sums_outputs_s)(r->dz, r->dx, at, g, &s, epi);
            }
        }
        sum_dy[k] = t_dy;
        sum_dyd[k] = t_dyd;
    }
}

/// part_sums_planes for planes of fewer than CBN_LANES values, whose every
/// value goes to its channel's tail, in order: each segment's runs of up to
/// CBN_SHORT_PLANE_CHANNELS channels are copied as rows (x, dy, and y under
/// relu) and summed by rows_add_sums sixteen channels at a time, and the
/// rows it writes (dz, dx) are copied back, where a run at a time would sum
/// them one value at a time. The same additions in the same order. All of
/// a piece is read before any of it is written, so this holds in place too.
CBN_INLINE void FN(part_sums_short_planes)(const cbn_job *job, cbn_item item, int64_t p0, int64_t p1,
                                           const FN(cbn_block_coefficients) *bc, const FN(cbn_sums_run) *base,
                                           double *sum_dy, double *sum_dyd, const int epi) {
    const cbn_plan *plan = &job->plan;
    const int64_t S = plan->shape.spatial, w = item.c1 - item.c0;
    ELEM x[(CBN_LANES - 1) * CBN_SHORT_PLANE_CHANNELS], dy[(CBN_LANES - 1) * CBN_SHORT_PLANE_CHANNELS];
    ELEM y[(CBN_LANES - 1) * CBN_SHORT_PLANE_CHANNELS], dz[(CBN_LANES - 1) * CBN_SHORT_PLANE_CHANNELS];
    ELEM dx[(CBN_LANES - 1) * CBN_SHORT_PLANE_CHANNELS];
    const int writes_dz = (epi & CBN_EPILOGUE_RESIDUAL) && base->dz;
    memset(sum_dy, 0, sizeof(double) * w);
    memset(sum_dyd, 0, sizeof(double) * w);
    int64_t value, length;
    cbn_segments segments = cbn_segments_make(plan, p0, p1);
    while (cbn_segments_next(&segments, &value, &length)) {
        const int64_t offset = cbn_plane_offset(plan, value);
        for (int64_t k0 = 0; k0 < w; k0 += CBN_SHORT_PLANE_CHANNELS) {
            const int64_t n = cbn_min64(w - k0, CBN_SHORT_PLANE_CHANNELS);
            const FN(cbn_sums_run) runs = FN(sums_run_at)(base, k0 * S + offset);
            const FN(cbn_sums_run) rows = {x, dy, epi & CBN_EPILOGUE_RELU ? y : NULL, writes_dz ? dz : NULL,
                                           runs.dx ? dx : NULL};
            FN(rows_of_runs)(x, runs.x, S, length, n);
            FN(rows_of_runs)(dy, runs.dy, S, length, n);
            if (rows.y) FN(rows_of_runs)(y, runs.y, S, length, n);
            FN(cbn_block_coefficients) from;
            FN(block_coefficients_from)(bc, k0, &from);
            FN(rows_add_sums)(sum_dy + k0, sum_dyd + k0, &rows, n, length, 1, 0, &from, n, 0, epi);
            if (rows.dz) FN(runs_of_rows)(runs.dz, dz, S, length, n);
            if (rows.dx) FN(runs_of_rows)(runs.dx, dx, S, length, n);
        }
    }
    /* As part_sums_planes totals a channel: its (empty) lanes' sum, then its tail. */
    for (int64_t k = 0; k < w; k++) {
        sum_dy[k] = 0.0 + sum_dy[k];
        sum_dyd[k] = 0.0 + sum_dyd[k];
    }
}

/// Sums of part [p0, p1) of channels item.c0 + k (planes walk) into
/// sum_dy[k] and sum_dyd[k]; `base` from the item's first channel. With
/// `beside` (planes of CBN_LANES values or more), the same segments of that
/// item get their dx in the same loops, with the epilogue the sums' leaves
/// to the dx pass (CBN_DX_EPILOGUE): each vector of dx written steps the
/// sums by one vector (run_sums.h).
CBN_INLINE void FN(part_sums_planes)(const cbn_job *job, cbn_item item, int64_t p0, int64_t p1,
                                     const FN(cbn_block_coefficients) *bc, const FN(cbn_sums_run) *base,
                                     const FN(cbn_beside) *beside, double *sum_dy, double *sum_dyd, const int epi) {
    const cbn_plan *plan = &job->plan;
    const int64_t S = plan->shape.spatial, w = item.c1 - item.c0;
    if (S < CBN_LANES && !beside) {
        FN(part_sums_short_planes)(job, item, p0, p1, bc, base, sum_dy, sum_dyd, epi);
        return;
    }
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
        if (beside) {
            const FN(cbn_sums_run) run = FN(sums_run_at)(base, offset);
            FN(cbn_sum_cursor) cursor;
            FN(sum_cursor_start)(&cursor, CBN_CURSOR_GRADIENT, epi, &run, S, length, w, NULL, bc, lanes_dy,
                                 lanes_dyd, tails_dy, tails_dyd, FN(joint_ahead)(plan), FN(joint_level)(plan));
            FN(elementwise_segment)(CBN_OP_INPUT_GRADIENT, CBN_DX_EPILOGUE(epi), plan, beside->w, &beside->inputs,
                                    beside->out, offset, length, &cursor);
            FN(sum_cursor_finish)(&cursor);
            continue;
        }
        for (int64_t k = 0; k < w; k++) {
            const FN(cbn_sums_run) run = FN(sums_run_at)(base, k * S + offset);
            FN(cbn_scalars) s;
            FN(cbn_lanes) c;
            FN(scalars_at)(bc, k, &s);
            FN(lanes_of)(&s, &c);
#define CALL(ahead, level)                                                                       \
    FN(run_sums)(&run, length, &c, &s, &lanes_dy[k], &lanes_dyd[k], &tails_dy[k], &tails_dyd[k], ahead, level, epi)
            CBN_REDUCTION_PREFETCH_SWITCH(plan, CALL);
#undef CALL
        }
    }
    for (int64_t k = 0; k < w; k++) {
        sum_dy[k] = cbn_vd_sum(&lanes_dy[k]) + tails_dy[k];
        sum_dyd[k] = cbn_vd_sum(&lanes_dyd[k]) + tails_dyd[k];
    }
}

/// part_sums_planes for the columns walk: the same sums in the same order;
/// `base` from the item's first channel of row 0.
CBN_INLINE void FN(part_sums_columns)(const cbn_job *job, cbn_item item, int64_t p0, int64_t p1,
                                      const FN(cbn_block_coefficients) *bc, const FN(cbn_sums_run) *base,
                                      double *lanes, double *sum_dy, double *sum_dyd, const int epi) {
    const cbn_plan *plan = &job->plan;
    const int64_t C = plan->shape.channels, w = item.c1 - item.c0;
    cbn_column_sums sums;
    cbn_column_sums_clear(&sums, lanes, w);
    cbn_column_calls calls = cbn_column_calls_make(plan, p0, p1, &sums, w, 1);    /* two tensors a row: grouping 7x7 lost */
    cbn_column_call call;
    /* Calls of one image's rows get a loop of their own, without the segments' loop. */
    while (cbn_column_calls_next(&calls, &call)) {
        const FN(cbn_sums_run) run = FN(sums_run_at)(base, call.row * C);
        const int64_t ahead = FN(columns_ahead)(plan, item, &call);
        if (call.segments == 1)
            FN(rows_add_sums)(call.a, call.b, &run, call.stride, call.rows, 1, 0, bc, w, ahead, epi);
        else
            FN(rows_add_sums)(call.a, call.b, &run, call.stride, call.rows, call.segments, call.segment_stride, bc,
                              w, ahead, epi);
    }
    cbn_column_sums_totals(&sums, w, sum_dy, sum_dyd);
}

/// Backward sums of each part of one item into its partials, for the
/// constant epilogue `epi`; with scale_dy, dx = k1*g in the same pass. With
/// `beside`, dx of that item in the same loops (part_sums_planes).
CBN_INLINE void FN(sums_item)(const cbn_job *job, cbn_item item, int scale_dy, const FN(cbn_beside) *beside,
                              double *lanes, const int epi) {
    const cbn_plan *plan = &job->plan;
    const int64_t w = item.c1 - item.c0;
    const int64_t first = plan->walk == CBN_WALK_PLANES ? item.c0 * plan->shape.spatial : item.c0;
    FN(cbn_block_coefficients) bc;
    FN(load_block_coefficients)(job, item, &bc);
    const FN(cbn_sums_run) base = {
        (const ELEM *)job->x + first, (const ELEM *)job->dy + first, job->y ? (const ELEM *)job->y + first : NULL,
        job->dresidual ? (ELEM *)job->dresidual + first : NULL, scale_dy ? (ELEM *)job->out + first : NULL,
    };
    double sum_dy[CBN_MAX_BLOCK_CHANNELS], sum_dyd[CBN_MAX_BLOCK_CHANNELS];
    int64_t part = item.part;
    for (int64_t p0 = item.begin; p0 < item.end; p0 += plan->part_length, part++) {
        const int64_t p1 = cbn_min64(item.end, p0 + plan->part_length);
        if (beside || plan->walk == CBN_WALK_PLANES)
            FN(part_sums_planes)(job, item, p0, p1, &bc, &base, beside, sum_dy, sum_dyd, epi);
        else
            FN(part_sums_columns)(job, item, p0, p1, &bc, &base, lanes, sum_dy, sum_dyd, epi);
        for (int64_t k = 0; k < w; k++) {
            cbn_partial *p = &job->partials[(item.c0 + k) * plan->parts + part];
            p->sums.dy = sum_dy[k];
            p->sums.dy_deviation = sum_dyd[k];
        }
    }
}

/// sums_item, a function of its own for each epilogue e (as normalize's).
#define CBN_SUMS_WITH(e)                                                                         \
    CBN_MULTIVERSIONED static void FN(sums_with_##e)(const cbn_job *job, cbn_item item, int scale_dy, \
                                                     double *lanes) {                            \
        FN(sums_item)(job, item, scale_dy, NULL, lanes, e);                                      \
    }
CBN_SUMS_WITH(0)
CBN_SUMS_WITH(1)
CBN_SUMS_WITH(2)
CBN_SUMS_WITH(3)
CBN_SUMS_WITH(CBN_EPILOGUE_RELU_FROM_X)
#undef CBN_SUMS_WITH

/// Backward sums of one item; with scale_dy, also dx = k1*g in the same pass
/// (inference mode); dz = g with a residual. `lanes`: as for statistics.
static void FN(sums)(const cbn_job *job, cbn_item item, int scale_dy, double *lanes) {
#define CALL(e) FN(sums_with_##e)(job, item, scale_dy, lanes)
    CBN_GRADIENT_EPILOGUE_SWITCH(job->epilogue, CALL)
#undef CALL
}

#ifdef CBN_JOINT_LOOP
/// The backward sums of `item` and, in the same loops, dx of the fused item
/// `beside`, whose coefficients are set (the joint loop, plan.h), for the
/// sums' epilogue e: a function of its own for each epilogue, as sums'.
#define CBN_SUMS_BESIDE_WITH(e)                                                                  \
    CBN_MULTIVERSIONED static void FN(sums_beside_with_##e)(const cbn_job *job, cbn_item item, cbn_item beside, \
                                                             double *lanes) {                    \
        FN(cbn_block_coefficients) bc;                                                           \
        FN(load_block_coefficients)(job, beside, &bc);                                           \
        const FN(cbn_beside) joint = FN(beside_of)(job, beside, CBN_OP_INPUT_GRADIENT, CBN_DX_EPILOGUE(e), &bc); \
        FN(sums_item)(job, item, 0, &joint, lanes, e);                                           \
        cbn_fence_streams(job->plan.streaming);                                                  \
    }
CBN_SUMS_BESIDE_WITH(0)
CBN_SUMS_BESIDE_WITH(1)
CBN_SUMS_BESIDE_WITH(2)
CBN_SUMS_BESIDE_WITH(3)
CBN_SUMS_BESIDE_WITH(CBN_EPILOGUE_RELU_FROM_X)
#undef CBN_SUMS_BESIDE_WITH

/// The backward sums of `item` and dx of `beside` in the same loops, in
/// loops of their own for each epilogue.
static void FN(sums_beside)(const cbn_job *job, cbn_item item, cbn_item beside, double *lanes) {
#define CALL(e) FN(sums_beside_with_##e)(job, item, beside, lanes)
    CBN_GRADIENT_EPILOGUE_SWITCH(job->epilogue, CALL)
#undef CALL
}
#endif
