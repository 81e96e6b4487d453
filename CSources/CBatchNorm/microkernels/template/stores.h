/*
 * Writing an elementwise result: what each elementwise pass computes at a
 * value (`cbn_elementwise`), and the loops that write a run of values or a
 * block of rows with it, streamed or cached. Part of kernels_template.h.
 */

/// Thirty-two stored values, two VEs joined: a streamed output of a 2-byte
/// format is written a whole 64-byte line per store.
typedef ELEM FN(cbn_stored2) __attribute__((vector_size(32 * sizeof(ELEM))));
#define CBN_LINE_BYTES (sizeof(VE) < 64 ? 64 : sizeof(VE))

/// The run an elementwise pass writes: its inputs, indexed as its output is
/// (NULL where the pass reads none), how far on the loops ask for them
/// (`x_ahead` for x: in a fused item's second pass, the distance to the
/// worker's next item, cbn_item.next), and where its coefficients come
/// from (`plane`: the values of each plane of a run of whole planes). The
/// pass (`op`, a cbn_elementwise_op), its epilogue (`epi`) and the kind of
/// run (`rows`, a cbn_run_kind) are parameters of the functions below,
/// constants where a run is written, so that each compiles to loops of its
/// own. So is `sums`, the sum cursor that steps once per vector computed
/// (the joint loop's, run_sums.h), in every pass but the joint loop's,
/// where it is NULL: their loops compile without its steps.
typedef struct FN(cbn_run) {
    const ELEM *x, *z, *dy, *y;
    int64_t ahead, x_ahead;
    const FN(cbn_block_coefficients) *bc;
    const FN(cbn_lanes) *lanes;
    const FN(cbn_scalars) *scalars;
    int64_t plane;
} FN(cbn_run);

/// The pass's sixteen values from element i on, with the coefficients `c`,
/// narrowed to the element type (narrow_v); steps `sums` unless NULL.
CBN_INLINE void FN(elementwise_lanes_v)(const int op, const int epi, const FN(cbn_run) *r,
                                        FN(cbn_sum_cursor) *sums, int64_t i, const FN(cbn_lanes) *c, VE *out) {
    VT g, x, z = {0}, v;
    int numbers = 0;
    if (sums) FN(sum_cursor_step)(sums);
    switch (op) {
    case CBN_OP_NORMALIZE:
        FN(prefetch_forward)(r->x, r->z, i, r->x_ahead, r->ahead, epi);
        x = LOADX(r->x + i);
        if (epi & CBN_EPILOGUE_RESIDUAL) z = LOADX(r->z + i);
        numbers = FN(forward_v)(&v, &x, &z, c, epi);
        break;
    case CBN_OP_INPUT_GRADIENT:
        PREFETCH(r->x + i, r->x_ahead);
        FN(prefetch_gradient)(r->dy, r->y, r->x, i, r->ahead, CBN_TO_L1, epi);
        FN(gradient_v)(&g, r->dy, r->y, r->x, i, c, epi);
        x = LOADX(r->x + i);
        numbers = FN(input_gradient_v)(&v, &g, &x, c);
        break;
    case CBN_OP_SCALE:
        FN(prefetch_gradient)(r->dy, r->y, r->x, i, r->ahead, CBN_TO_L1, epi);
        FN(gradient_v)(&g, r->dy, r->y, r->x, i, c, epi);
        numbers = FN(scale_v)(&v, &g, c);
        break;
    default:    /* CBN_OP_RESIDUAL_GRADIENT: dy as it is, NaN or not */
        FN(prefetch_gradient)(r->dy, r->y, r->x, i, r->ahead, CBN_TO_L1, epi);
        FN(gradient_v)(&v, r->dy, r->y, r->x, i, c, epi);
        break;
    }
    FN(narrow_v)(out, &v, numbers);
}

/// The pass's sixteen values from element i on, the first of channel c, narrowed.
CBN_INLINE void FN(narrowed_v)(const int op, const int epi, const int rows, const FN(cbn_run) *r,
                               FN(cbn_sum_cursor) *sums, int64_t i, int64_t c, VE *out) {
    if (rows == CBN_RUN_ROWS) {
        FN(cbn_lanes) lanes;
        FN(lanes_at)(r->bc, c, &lanes);
        FN(elementwise_lanes_v)(op, epi, r, sums, i, &lanes, out);
    } else {
        FN(elementwise_lanes_v)(op, epi, r, sums, i, r->lanes, out);
    }
}

/// The pass's value at element i, of channel c.
CBN_INLINE T FN(elementwise_s)(const int op, const int epi, const int rows, const FN(cbn_run) *r, int64_t i,
                               int64_t c) {
    FN(cbn_scalars) at;
    const FN(cbn_scalars) *s = r->scalars;
    if (rows == CBN_RUN_ROWS) {
        FN(scalars_at)(r->bc, c, &at);
        s = &at;
    }
    switch (op) {
    case CBN_OP_NORMALIZE:
        return FN(forward_s)(GET(r->x, i), epi & CBN_EPILOGUE_RESIDUAL ? GET(r->z, i) : 0, s, epi);
    case CBN_OP_INPUT_GRADIENT: return FN(input_gradient_s)(FN(gradient_s)(r->dy, r->y, r->x, i, s, epi), GET(r->x, i), s);
    case CBN_OP_SCALE: return FN(scale_s)(FN(gradient_s)(r->dy, r->y, r->x, i, s, epi), s);
    default: return FN(gradient_s)(r->dy, r->y, r->x, i, s, epi);
    }
}

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

/// Stores the pass's sixteen values from element i on, narrowed.
CBN_INLINE void FN(store_v)(const int op, const int epi, const int rows, const FN(cbn_run) *r,
                            FN(cbn_sum_cursor) *sums, ELEM *out, int64_t i, int64_t c) {
    VE v;
    FN(narrowed_v)(op, epi, rows, r, sums, i, c, &v);
    CBN_STORE(VE, out + i, v);
}

/// How many values from `out` on lie before the first whole line.
CBN_INLINE int64_t FN(values_to_line)(const ELEM *out) {
    const uintptr_t past = (uintptr_t)out & (CBN_LINE_BYTES - 1);
    return (int64_t)((CBN_LINE_BYTES - past) & (CBN_LINE_BYTES - 1)) / (int64_t)sizeof(ELEM);
}

/// Writes `one` and then `two` to a whole 64-byte line at `out` with one
/// non-temporal store (a 2-byte format's thirty-two values).
CBN_INLINE void FN(stream_line)(ELEM *out, const VE *one, const VE *two) {
    const FN(cbn_stored2) line = __builtin_shufflevector(*one, *two, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13,
                                                         14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27,
                                                         28, 29, 30, 31);
    __builtin_nontemporal_store(line, (FN(cbn_stored2) *)out);
}

/// Writes the streamed body of a run, out[i, n) from the first whole line
/// (i) on, with non-temporal stores a whole line at a time; returns where
/// the whole vectors end. `*c` follows i's channel.
CBN_INLINE int64_t FN(stream_body)(const int op, const int epi, const int rows, const FN(cbn_run) *r,
                                   FN(cbn_sum_cursor) *sums, ELEM *out, int64_t i, int64_t n, int64_t period,
                                   int64_t *c) {
    if (sizeof(VE) < CBN_LINE_BYTES) {
        for (; i + 32 <= n; i += 32) {
            VE one, two;
            FN(narrowed_v)(op, epi, rows, r, sums, i, *c, &one);
            *c = cbn_next_channel(*c, 16, period);
            FN(narrowed_v)(op, epi, rows, r, sums, i + 16, *c, &two);
            *c = cbn_next_channel(*c, 16, period);
            FN(stream_line)(out + i, &one, &two);
        }
    }
    for (; i + 16 <= n; i += 16, *c = cbn_next_channel(*c, 16, period)) {
        VE result;
        FN(narrowed_v)(op, epi, rows, r, sums, i, *c, &result);
        __builtin_nontemporal_store(result, (VE *)(out + i));
    }
    return i;
}

/// Writes out[i] for i < n, the pass's values narrowed to the element type:
/// a run of one channel (CBN_RUN_CHANNEL, period n) or of rows of `period`
/// channels (CBN_RUN_ROWS), value i of channel i mod period. Streamed or in
/// a run of rows, the whole vectors start at out's first whole line (where
/// a vector fits after it), so that where the inputs fall on lines as out
/// does, no vector loads or stores across two lines (a columns job's
/// coefficient rows are shifted to match, job.c). With `stream`, they are
/// written with non-temporal stores, a whole line at a time, which do not
/// read the destination lines into the cache first (large outputs: a third
/// less memory traffic). A run of sixteen values or more takes no single
/// values: the values before the first whole line and after the last whole
/// vector come from whole vectors that start at or end with them, computed
/// before any store of the run reaches their inputs and stored after the
/// vectors they overlap. The lanes they share get the same value twice
/// (each value depends on its own inputs only, with the same arithmetic in
/// any lane), so this holds in place too. Streamed, only their own lanes
/// are stored: a cached store into a line that non-temporal stores are
/// filling makes the processor write the partial line out. Each vector
/// computed steps `sums` unless it is NULL.
CBN_INLINE void FN(write_run)(const int op, const int epi, const int rows, const FN(cbn_run) *r,
                              FN(cbn_sum_cursor) *sums, ELEM *out, int64_t n, int64_t period, int stream) {
    int64_t i = 0, c = 0;
    if (n < 16) {
        for (; i < n; i++, c = cbn_next_channel(c, 1, period)) PUT(out, i, FN(elementwise_s)(op, epi, rows, r, i, c));
        return;
    }
    /* the body starts at the first whole line, if a vector fits after it:
     * streamed, and in runs of rows (channel runs, whose alignment differs
     * from channel to channel, measured no faster for it cached) */
    const int64_t head = stream || rows == CBN_RUN_ROWS ? FN(values_to_line)(out) : 0;
    const int64_t start = head <= n - 16 ? head : 0;
    const int streamed = stream && head <= n - 16;
    const int tail = ((n - start) & 15) != 0;
    VE last = {0}, first = {0};
    if (tail) FN(narrowed_v)(op, epi, rows, r, sums, n - 16, (n - 16) % period, &last);
    for (; i + 16 <= start; i += 16, c = cbn_next_channel(c, 16, period)) FN(store_v)(op, epi, rows, r, sums, out, i, c);
    const int64_t first_at = i;
    if (i < start) {
        FN(narrowed_v)(op, epi, rows, r, sums, i, c, &first);
        c = cbn_next_channel(c, start - i, period);
        i = start;
    }
    if (streamed) i = FN(stream_body)(op, epi, rows, r, sums, out, i, n, period, &c);
    for (; i + 16 <= n; i += 16, c = cbn_next_channel(c, 16, period)) FN(store_v)(op, epi, rows, r, sums, out, i, c);
    if (first_at < start && streamed)
        FN(store_lanes)(out + first_at, &first, 0, start - first_at);
    else if (first_at < start)
        CBN_STORE(VE, out + first_at, first);
    if (tail && streamed)
        FN(store_lanes)(out + i, &last, 16 - (n - i), n - i);
    else if (tail)
        CBN_STORE(VE, out + n - 16, last);
}

/// The pass's sixteen values from element i on of a run of whole planes of
/// adjacent channels, narrowed: i lies in channel k's plane, `left` values
/// before its end; each lane with its own plane's coefficients (planes of
/// 16 values or more: a vector reaches into the next plane at most).
CBN_INLINE void FN(planes_narrowed_v)(const int op, const int epi, const FN(cbn_run) *r,
                                      FN(cbn_sum_cursor) *sums, int64_t k, int64_t left, int64_t i, VE *out) {
    FN(cbn_lanes) lanes;
    FN(plane_lanes)(r->bc, k, left, &lanes);
    FN(elementwise_lanes_v)(op, epi, r, sums, i, &lanes, out);
}

/// Writes out[i] for i < n, n >= 16, a run of whole planes of r->plane >= 16
/// values (planes_narrowed_v), streamed: the whole lines with non-temporal
/// stores, the values before the first and after the last with cached
/// stores of their own lanes (as write_run's). Each vector is computed at
/// one place, every kind of store a branch after it, so that the pass's
/// arithmetic compiles once here. A vector that ends the run starts before
/// the values it stores; it is computed after the stores before it, so the
/// lanes it does not store may read outputs in place, and only they.
CBN_INLINE void FN(stream_planes)(const int op, const int epi, const FN(cbn_run) *r, FN(cbn_sum_cursor) *sums,
                                   ELEM *out, int64_t n) {
    const int64_t line = CBN_LINE_BYTES / (int64_t)sizeof(ELEM);
    const int64_t head = cbn_min64(FN(values_to_line)(out), n), lines_end = head + (n - head) / line * line;
    int64_t k = 0, end = r->plane;    /* the plane of the vector at `at`, and where it ends */
    VE pending = {0};
    for (int64_t i = 0; i < n;) {
        const int64_t at = i + 16 <= n ? i : n - 16;    /* never less than the vector before's */
        while (at >= end) {
            k++;
            end += r->plane;
        }
        VE v;
        FN(planes_narrowed_v)(op, epi, r, sums, k, end - at, at, &v);
        if (i < head || i >= lines_end) {
            const int64_t end = cbn_min64(i < head ? head : n, at + 16);
            if (end - i == 16)
                CBN_STORE(VE, out + i, v);
            else
                FN(store_lanes)(out + i, &v, i - at, end - i);
            i = end;
        } else if (line == 16) {
            __builtin_nontemporal_store(v, (VE *)(out + i));
            i += 16;
        } else if ((i - head) % line == 0) {
            pending = v;
            i += 16;
        } else {
            FN(stream_line)(out + i - 16, &pending, &v);
            i += 16;
        }
    }
}

/// Rows a columns item's elementwise passes take per load of a channel
/// vector's coefficients (write_rows).
#define CBN_ROW_BLOCK 4

/// out[i] over the first w channels (a multiple of 16) of `rows` rows of C
/// channels, CBN_ROW_BLOCK rows at a time: for the 16 channels at k, their
/// coefficients loaded once, then the values of those channels in each row
/// of the block. Elementwise, so the results are those of write_run.
CBN_INLINE void FN(write_rows)(const int op, const int epi, const FN(cbn_run) *r, ELEM *out, int64_t rows,
                               int64_t w, int64_t C) {
    for (int64_t b = 0; b < rows; b += CBN_ROW_BLOCK) {
        const int64_t b1 = cbn_min64(rows, b + CBN_ROW_BLOCK);
        for (int64_t k = 0; k < w; k += 16) {
            FN(cbn_lanes) lanes;
            FN(lanes_at)(r->bc, k, &lanes);
            for (int64_t j = b; j < b1; j++) {
                VE v;
                FN(elementwise_lanes_v)(op, epi, r, NULL, j * C + k, &lanes, &v);
                CBN_STORE(VE, out + j * C + k, v);
            }
        }
    }
}
