/*
 * What the microkernels of every element type share: the accumulator vector,
 * loads and stores that never pass a vector by value, the lanes' pairwise
 * sum, and the columns walk's accumulators. Included by each element type's
 * file (float32.c, ...) before the template.
 */
#ifndef CBN_MICROKERNELS_COMMON_H
#define CBN_MICROKERNELS_COMMON_H

#include <string.h>

#include "job.h"
#include "moments.h"

/// Sixteen doubles: the accumulator vector of every reduction. Every element
/// type is processed sixteen values at a time and widened to this, so the
/// order of additions is the same for all four types and for every ISA.
typedef double cbn_vd __attribute__((vector_size(16 * sizeof(double))));

/// Sixteen floats: the half formats compute in float.
typedef float cbn_vf __attribute__((vector_size(16 * sizeof(float))));

/// Helpers are forced inline so that each instruction-set clone of an item
/// microkernel gets its own copy compiled for that instruction set.
#define CBN_INLINE static inline __attribute__((always_inline))

/// Item microkernels are compiled for AVX-512 (x86-64-v4), AVX2 (x86-64-v3)
/// and baseline x86-64; the dynamic loader picks one for the CPU at start-up
/// (an ifunc). Elsewhere they are compiled once, for the target. Under
/// ThreadSanitizer too: its instrumented ifunc resolvers would run before the
/// sanitizer's runtime is up and crash the process at load.
#if defined(__has_feature)
#if __has_feature(thread_sanitizer) && !defined(CBN_NO_MULTIVERSIONING)
#define CBN_NO_MULTIVERSIONING 1
#endif
#endif
#if defined(__x86_64__) && defined(__linux__) && !defined(CBN_NO_MULTIVERSIONING)
#define CBN_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define CBN_HAS_CLONES 1
/// A further bfloat16 table for AVX-512 with BF16 (bfloat16_avx512.c), chosen at run time.
#define CBN_BF16_NATIVE 1
#include <immintrin.h>
#else
#define CBN_CLONES
#if defined(__x86_64__) && defined(__linux__) && defined(__AVX512F__)
/* Compiled for AVX-512 alone (the fuzzer's build, the clone this CPU would
 * pick): the bfloat16 table for AVX-512 BF16 too. */
#define CBN_BF16_NATIVE 1
#include <immintrin.h>
#endif
#endif
#define CBN_MULTIVERSIONED CBN_CLONES

/* Vectors never cross a function boundary by value: an AVX2 clone may not
 * pass a 64-byte vector to an inlined helper (clang rejects it as an ABI
 * change). Helpers take and return vectors through pointers; loads and
 * stores are macros. */
#define CBN_LOAD(type, p) ({ type cbn_loaded_; memcpy(&cbn_loaded_, (p), sizeof cbn_loaded_); cbn_loaded_; })
#define CBN_STORE(type, p, v) do { type cbn_stored_ = (v); memcpy((p), &cbn_stored_, sizeof cbn_stored_); } while (0)
#define cbn_vd_load(p) CBN_LOAD(cbn_vd, p)
#define cbn_vd_store(p, v) CBN_STORE(cbn_vd, p, v)
/// Every lane of a vector of `type` the scalar v, bit for bit: v - 0 is v
/// for every v, -0 included, where 0 + v would turn -0 into +0.
#define CBN_SPLAT(type, v) ((v) - (type){0})

/// Integer lanes the width of cbn_vd's: what comparing two cbn_vd gives.
typedef __typeof__((cbn_vd){0} <= (cbn_vd){0}) cbn_vd_lanes;
/// The lanes of a vector before `split`, as a mask of the integer vector
/// type `lanes_type` (sixteen lanes).
#define CBN_LANES_BEFORE(lanes_type, split)                                                     \
    ((lanes_type){0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15} <                        \
     (lanes_type){0} + (__typeof__(((lanes_type){0})[0]))(split))
/// The lanes [first, first + count) of sixteen, as a mask of `lanes_type`.
#define CBN_LANES_WITHIN(lanes_type, first, count) \
    (CBN_LANES_BEFORE(lanes_type, (first) + (count)) & ~CBN_LANES_BEFORE(lanes_type, first))

/// Lane by lane, a's where the mask `own` (of `lanes_type`) is set, else b's.
#define CBN_SELECT(lanes_type, own, a, b) \
    ((__typeof__(a))(((lanes_type)(a) & (own)) | ((lanes_type)(b) & ~(own))))

/// Stores lanes [first, first + count) of v at p, p + 1, ... p + 15, and
/// leaves the other lanes' doubles as they are.
CBN_INLINE void cbn_vd_store_lanes(double *p, const cbn_vd *v, int64_t first, int64_t count) {
    const cbn_vd kept = cbn_vd_load(p);
    cbn_vd_store(p, CBN_SELECT(cbn_vd_lanes, CBN_LANES_WITHIN(cbn_vd_lanes, first, count), *v, kept));
}

/// Sum of the sixteen lanes in a fixed pairwise order.
CBN_INLINE double cbn_vd_sum(const cbn_vd *v) {
    double s8[8], s4[4];
    for (int i = 0; i < 8; i++) s8[i] = (*v)[i] + (*v)[i + 8];
    for (int i = 0; i < 4; i++) s4[i] = s8[i] + s8[i + 4];
    return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}

/// The columns walk's accumulators for w channels: sixteen lanes per channel
/// (lane l of channel k at lane_a[l*w + k], in the worker's scratch; NULL
/// when runs are shorter than CBN_LANES and every value goes to the tail)
/// and a tail per channel. `a` and `b` are the two sums a pass takes.
typedef struct cbn_column_sums {
    double *lane_a, *lane_b;
    double tail_a[CBN_MAX_BLOCK_CHANNELS], tail_b[CBN_MAX_BLOCK_CHANNELS];
} cbn_column_sums;

/// Zeroes the sums; `lanes` is the worker's scratch (2*CBN_LANES*w doubles) or NULL.
CBN_INLINE void cbn_column_sums_clear(cbn_column_sums *sums, double *lanes, int64_t w) {
    sums->lane_a = lanes;
    sums->lane_b = lanes ? lanes + CBN_LANES * w : NULL;
    if (lanes) memset(lanes, 0, sizeof(double) * 2 * CBN_LANES * w);
    memset(sums->tail_a, 0, sizeof(double) * w);
    memset(sums->tail_b, 0, sizeof(double) * w);
}

/// Every channel's totals, a[k] and b[k] for k < w: its lanes' pairwise sum
/// in cbn_vd_sum's order (as a planes walk reduces its vector accumulator)
/// plus its tail. The same additions per channel as cbn_vd_sum, laid across
/// channels so that the compiler vectors them (lane l of channels k, k + 1,
/// ... is contiguous).
CBN_INLINE void cbn_column_sums_totals(const cbn_column_sums *sums, int64_t w, double *a, double *b) {
    for (int pass = 0; pass < 2; pass++) {
        const double *lane = pass ? sums->lane_b : sums->lane_a;
        const double *tail = pass ? sums->tail_b : sums->tail_a;
        double *total = pass ? b : a;
        if (!lane) {
            for (int64_t k = 0; k < w; k++) total[k] = 0.0 + tail[k];
            continue;
        }
        for (int64_t k = 0; k < w; k++) {
            double s8[8], s4[4];
            for (int i = 0; i < 8; i++) s8[i] = lane[i * w + k] + lane[(i + 8) * w + k];
            for (int i = 0; i < 4; i++) s4[i] = s8[i] + s8[i + 4];
            total[k] = ((s4[0] + s4[2]) + (s4[1] + s4[3])) + tail[k];
        }
    }
}

/// The sixteen-channel vectors of a columns loop over channels [0, w),
/// w >= 16: CALL(k, first, count, whole) for the vector of channels k to
/// k + 15 whose lanes [first, first + count) are its own. The whole vectors
/// (whole = 1, lanes 0 to 15) from channel `head` (0 <= head < 16; 0 where
/// w < head + 16), after the vector at channel 0 for the channels before
/// it; then, where they do not end at w, the vector that ends at channel w
/// for the channels past the last whole one. Each channel is some vector's
/// own lane exactly once, and every vector lies within [0, w).
#define CBN_CHANNEL_VECTORS(w, head, CALL)                                                       \
    do {                                                                                         \
        int64_t cbn_k_ = (head) > 0 && (head) + 16 <= (w) ? (head) : 0;                          \
        if (cbn_k_ > 0) CALL(0, 0, cbn_k_, 0);                                                   \
        for (; cbn_k_ + 16 <= (w); cbn_k_ += 16) CALL(cbn_k_, 0, 16, 1);                        \
        if (cbn_k_ < (w)) CALL((w) - 16, 16 - ((w) - cbn_k_), (w) - cbn_k_, 0);                  \
    } while (0)

/// One call of the columns walk's reduction order: add rows `row`,
/// `row + stride`, ... (`rows` of them) of the block's channels to the
/// accumulators `a` and `b` (a lane's or the tails), and the same rows of
/// the `segments` - 1 images after, `segment_stride` values apart.
typedef struct cbn_column_call {
    double *a, *b;
    int64_t row, stride, rows;
    int64_t segments, segment_stride;
} cbn_column_call;

/// Rows a lane's call takes, where images are so short that each
/// lane gets one or two of an image's rows (16 to 47 rows): a call then takes
/// the rows of several images, so that the accumulators are loaded once for
/// more rows.
#define CBN_COLUMN_CALL_ROWS 6

/// The calls over rows [begin, end) in the reduction order (plan.h): lane l
/// gets rows first + l, first + l + 16, ... (up to four per call, so that
/// the accumulators are touched once per four rows), the tail the rows past
/// the segment's last multiple of 16 (up to four per call, in order).
/// Whole images of 16 to 47 rows go in groups: each call takes a lane's
/// rows (or the tail's) of several images, in order, CBN_COLUMN_CALL_ROWS
/// of a lane's where the range holds that many images; whole images of 48
/// to 63 rows (7x7), whose lanes get three rows, `three_row_images` of them
/// (1: not grouped; the tuning's statistics_three_row_images). Each
/// accumulator still adds its rows in the same order, since the lanes and
/// the tail are apart.
/// Without lanes (images of fewer than CBN_LANES rows, such as BN1d's one
/// row) the tail takes every row in order, so its calls run across the
/// images' boundaries: four rows a call, not one image's.
typedef struct cbn_column_calls {
    cbn_segments segments;
    cbn_column_sums *sums;
    int64_t w, C;
    int64_t first, length, full;    /* the current segment, and its rows that go to lanes */
    int64_t count;                  /* whole segments like it taken together, one after another */
    int64_t group, lane, tail_row;  /* the next call */
    int64_t three_row_images;
} cbn_column_calls;

CBN_INLINE cbn_column_calls cbn_column_calls_make(const cbn_plan *plan, int64_t begin, int64_t end,
                                                  cbn_column_sums *sums, int64_t w, int64_t three_row_images) {
    cbn_column_calls calls = {cbn_segments_make(plan, begin, end), sums, w, plan->shape.channels, 0, 0, 0, 1,
                              0, 0, 0, three_row_images};
    if (!sums->lane_a) {    /* one run of tail calls over [begin, end) */
        calls.first = calls.tail_row = begin;
        calls.length = end - begin;
        calls.segments.next = end;
    }
    return calls;
}

/// The next call; 0 when there is none.
CBN_INLINE int cbn_column_calls_next(cbn_column_calls *it, cbn_column_call *call) {
    for (;;) {
        if (it->group < it->full) {
            call->a = it->sums->lane_a + it->lane * it->w;
            call->b = it->sums->lane_b + it->lane * it->w;
            call->row = it->first + it->group + it->lane;
            call->stride = CBN_LANES * it->C;
            call->rows = cbn_min64((it->full - it->group) / CBN_LANES, 4);
            call->segments = it->count;
            call->segment_stride = it->length * it->C;
            if (++it->lane == CBN_LANES) {
                it->lane = 0;
                it->group += 4 * CBN_LANES;
            }
            return 1;
        }
        if (it->tail_row < it->first + it->length) {
            call->a = it->sums->tail_a;
            call->b = it->sums->tail_b;
            call->row = it->tail_row;
            call->stride = it->C;
            call->rows = it->count > 1 ? it->first + it->length - it->tail_row
                                       : cbn_min64(4, it->first + it->length - it->tail_row);
            call->segments = it->count;
            call->segment_stride = it->length * it->C;
            it->tail_row += call->rows;
            return 1;
        }
        if (!cbn_segments_next(&it->segments, &it->first, &it->length)) return 0;
        it->full = it->sums->lane_a ? it->length / CBN_LANES * CBN_LANES : 0;
        /* A whole image whose lanes get one or two rows: it and the whole
         * images after it, for CBN_COLUMN_CALL_ROWS rows a lane; three rows:
         * three_row_images images. */
        it->count = 1;
        if (it->full > 0 && it->length == it->segments.spatial && it->full < 4 * CBN_LANES) {
            const int64_t wanted = it->full < 3 * CBN_LANES
                                       ? (CBN_COLUMN_CALL_ROWS * CBN_LANES + it->full - 1) / it->full
                                       : it->three_row_images;
            it->count = cbn_min64(wanted, (it->segments.end - it->first) / it->length);
            it->segments.next = it->first + it->count * it->length;
        }
        it->group = it->lane = 0;
        it->tail_row = it->first + it->full;
    }
}

/// The elementwise passes (microkernels/template/stores.h).
typedef enum cbn_elementwise_op {
    CBN_OP_NORMALIZE,            ///< y from x (and z)
    CBN_OP_INPUT_GRADIENT,       ///< dx from dy (masked by y or x) and x
    CBN_OP_SCALE,                ///< dx from dy alone (inference mode)
    CBN_OP_RESIDUAL_GRADIENT,    ///< dz, the masked dy
} cbn_elementwise_op;

/// Calls CALL(e) with the constant e equal to `epi` (0 to 3), so that each
/// epilogue gets loops of its own from one piece of code.
#define CBN_EPILOGUE_SWITCH(epi, CALL)                                                           \
    switch (epi) {                                                                               \
    case 0: CALL(0); break;                                                                      \
    case 1: CALL(1); break;                                                                      \
    case 2: CALL(2); break;                                                                      \
    default: CALL(3); break;                                                                     \
    }

/// CBN_EPILOGUE_SWITCH for the backward passes, whose epilogue may also be
/// the relu mask recomputed from x (CBN_EPILOGUE_RELU_FROM_X, never with a
/// residual).
#define CBN_GRADIENT_EPILOGUE_SWITCH(epi, CALL)                                                  \
    switch (epi) {                                                                               \
    case CBN_EPILOGUE_RELU_FROM_X: CALL(CBN_EPILOGUE_RELU_FROM_X); break;                        \
    default: CBN_EPILOGUE_SWITCH(epi, CALL)                                                      \
    }

/// The epilogue of the dx pass after a sums pass of epilogue e: with a
/// residual, the sums pass has written dz = g (the masked dy), which the
/// dx pass reads as its dy, as it is (job.c, gradient_epilogue).
#define CBN_DX_EPILOGUE(e) ((e) & CBN_EPILOGUE_RESIDUAL ? 0 : (e))

/// What a run that write_run writes is (its `rows`), which says where each
/// value's coefficients come from: one channel's run, or rows of channels
/// (channels last), each value its own channel's.
typedef enum cbn_run_kind { CBN_RUN_CHANNEL, CBN_RUN_ROWS } cbn_run_kind;

/// The next channel of a run of rows of `period` channels, `step` values on
/// from channel c (c + step mod period, without a division per vector).
CBN_INLINE int64_t cbn_next_channel(int64_t c, int64_t step, int64_t period) {
    return c + step < period ? c + step : (c + step) % period;
}

/// Non-temporal stores are weakly ordered: fence them before the item ends.
CBN_INLINE void cbn_fence_streams(int stream) {
#if defined(__x86_64__)
    if (stream) __builtin_ia32_sfence();
#else
    (void)stream;
#endif
}

#endif /* CBN_MICROKERNELS_COMMON_H */
