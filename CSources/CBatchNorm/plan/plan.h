/*
 * The plan: how a shape is cut into work. A pure function of the shape (its
 * memory layout included) and of the element size, never of the thread
 * count, so that partial results merge in the same order whatever runs them.
 *
 * It fixes two things, kept apart:
 *
 * 1. The reduction order: which roundings the sums make. It depends on n,
 *    spatial and the element size only, not on the memory layout, so that
 *    both layouts give the same bits. Channel c's m = n*spatial values, in
 *    the order (i, s), are cut into parts of `part_length` values (one
 *    partial result each, merged in part order by the finalize step), and
 *    each part into statistics blocks of `block_length` values (merged with
 *    Chan's formula, each summed about its first value). A block (for the
 *    statistics) or a part (for the backward sums) is cut into segments: the
 *    pieces of it that share an image i, at most `spatial` values. Value j
 *    of a segment goes to lane j mod 16 while j is below the segment's last
 *    multiple of 16, and to the tail after that. Each lane and the tail add
 *    their values in order; the total is the lanes' pairwise sum plus the
 *    tail. A planes walk gets this from sixteen-wide vectors along a run; a
 *    columns walk keeps sixteen accumulators per channel.
 *
 * 2. The walk: how items cover memory. An item is a block of adjacent
 *    channels and a range of whole parts.
 *    - planes (channels first, and any shape with one channel): a channel's
 *      values lie in n runs of `spatial` contiguous values. An item walks
 *      its range run by run and, within a run index, channel by channel:
 *      the block's runs for one image are adjacent in memory, so small
 *      planes (7x7) still stream.
 *    - columns (channels last, and spatial == 1): x is a matrix of m rows
 *      whose channels are contiguous. An item covers up to
 *      CBN_COLUMN_CHANNELS channels of a range of rows; microkernels vector
 *      across channels.
 *
 * An item is "fused" when it holds every part of its channels: it computes
 * the statistics (or backward sums), finalizes them and then normalizes (or
 * writes dx) while the slice is still in cache. Fused or not, the partial
 * results and their merge are the same.
 */
#ifndef CBN_PLAN_H
#define CBN_PLAN_H

#include "CBatchNorm.h"

/// Lanes of the reduction order: values j and j + 16 of a segment share one.
#define CBN_LANES 16
/// Values per statistics block, whole runs when runs are shorter.
#define CBN_BLOCK_VALUES 2048
/// ...and when runs are shorter than CBN_LANES (all their values are tail).
#define CBN_SHORT_BLOCK_VALUES 128
/// Values per part: a few blocks. Shorter for runs below CBN_LANES, whose
/// rows are short too, so that those shapes still split among threads.
#define CBN_PART_VALUES 4096
#define CBN_SHORT_PART_VALUES 1024
/// Planes with shorter runs put this many values of adjacent channels in one item's run.
#define CBN_PLANE_RUN_TARGET 4096
/// ...and planes shorter than CBN_SHORT_PLANE (7x7, 14x14) this many: the
/// longer an item's contiguous stretch per image, the better the caches'
/// prefetchers follow it (32x2048x7x7 forward 1.2-1.5x faster than with
/// 4096, 56x56 slower with more than one channel per run).
#define CBN_SHORT_PLANE 256
#define CBN_SHORT_PLANE_RUN_TARGET 16384
/// ...but no fewer than this many when that lets the block be fused.
#define CBN_PLANE_RUN_MIN 1024
/// The most channels one planes item handles (each has a vector accumulator
/// on the stack).
#define CBN_PLANE_MAX_CHANNELS 256
/// Channels per columns item: rows of 4 KiB (float) stream well; items that
/// read parts of rows (a few hundred bytes each, far apart in time) do not.
#define CBN_COLUMN_CHANNELS 1024
/// The most channels one item of either walk handles.
#define CBN_MAX_BLOCK_CHANNELS CBN_COLUMN_CHANNELS
/// Bytes of one tensor an unfused item covers, about.
#define CBN_ITEM_BYTES (128 * 1024)
/// ...and an item of an elementwise phase: long enough that each worker
/// streams, short enough that the workers share a channel block.
#define CBN_ELEMENTWISE_BYTES (1024 * 1024)
/// Outputs of at least this size are written with non-temporal stores: they
/// will not be read again before they leave the cache anyway.
#define CBN_STREAMING_BYTES (48 * 1024 * 1024)
/// Float columns walks whose elementwise items hold part of each row (rows
/// of more than CBN_COLUMN_CHANNELS), over tensors of at most this size,
/// take their rows in blocks in the elementwise passes: each row's piece is
/// otherwise a run of its own that loads every coefficient vector again,
/// and in blocks one load serves several rows (kernels_template.h,
/// CBN_WRITE_ROWS). 2 threads, medians of 5 interleaved A/B runs, warm and
/// cold: 32x2048x7x7 channels last 1.04-1.47x (warm inference 1.47x),
/// 1024x4096 1.03-1.23x (inference 1.22-1.23x). Where they were
/// slower or gained nothing they are not used: larger tensors, whose inputs
/// and outputs outgrow the last-level cache (32x512x28x28 binary16
/// inference 0.8x); items of whole rows, which are one run across rows
/// (8x256x28x28 float 0.56-0.91x but for warm inference); double
/// (0.82-1.06x); the half formats (Float16 backward 0.82-0.90x, warm
/// 1024x4096 inference 0.90-0.94x; faster only in some inference figures,
/// 1.1-1.2x; 3 interleaved A/B runs).
#define CBN_ROW_BLOCK_BYTES (16 * 1024 * 1024)
/// Channels per item of a finalize phase.
#define CBN_FINALIZE_CHANNELS 64
/// A channel block's slice (all tensors the pass reads) up to this size is fused.
#define CBN_FUSE_BYTES (1024 * 1024)
/// Fewer channel blocks than this are split into parts so that many
/// threads share them, unless a block fits in one item anyway.
#define CBN_MIN_FUSED_BLOCKS 8

typedef enum cbn_walk {
    CBN_WALK_PLANES = 0,
    CBN_WALK_COLUMNS = 1,
} cbn_walk;

typedef struct cbn_plan {
    cbn_shape shape;            ///< as given, but one channel is always channels first (the same memory)
    int64_t m;                  ///< values per channel: n * spatial

    /* the reduction order */
    int64_t block_length;       ///< values per statistics block
    int64_t part_length;        ///< values per part, a multiple of block_length
    int64_t parts;              ///< partial results per channel: ceil(m / part_length)

    /* the walk */
    cbn_walk walk;
    int64_t channel_block;      ///< channels per item, at most CBN_MAX_BLOCK_CHANNELS
    int64_t channel_blocks;     ///< ceil(channels / channel_block)
    int64_t item_parts;         ///< parts per item (all of them when fused)
    int64_t part_ranges;        ///< items per channel block: ceil(parts / item_parts)
    int64_t items;              ///< channel_blocks * part_ranges
    /* Elementwise phases (normalize, dx without sums) have no partials and
     * no accumulators, so their items need not be whole parts nor fit a
     * fused slice: about CBN_ELEMENTWISE_BYTES each, of channel blocks that
     * make long contiguous stretches (planes walk). */
    int64_t elementwise_channel_block;  ///< channels per elementwise item
    int64_t elementwise_channel_blocks; ///< ceil(channels / elementwise_channel_block)
    int64_t elementwise_length; ///< values per channel of an elementwise item
    int64_t elementwise_ranges; ///< ceil(m / elementwise_length)
    int64_t elementwise_items;  ///< elementwise_channel_blocks * elementwise_ranges
    int streaming;              ///< write outputs with non-temporal stores
    int row_blocks;             ///< elementwise rows in blocks (CBN_ROW_BLOCK_BYTES says when)
} cbn_plan;

/// The extent of one item: channels [c0, c1) and values [begin, end) of
/// each, which are parts part, part + 1, ... of the reduction order.
typedef struct cbn_item {
    int64_t c0, c1;
    int64_t begin, end;
    int64_t part;
} cbn_item;

/// `tensors_per_pass`: how many input tensors a fused item keeps in cache
/// (1 for forward, 2 for backward). Requires a valid shape.
cbn_plan cbn_make_plan(cbn_shape shape, size_t element_size, int tensors_per_pass);

static inline int cbn_plan_is_fused(const cbn_plan *plan) { return plan->item_parts == plan->parts; }

/// Whether the columns walk keeps sixteen lane accumulators per channel
/// (runs of at least CBN_LANES values): they live in per-worker scratch.
static inline int cbn_plan_has_column_lanes(const cbn_plan *plan) {
    return plan->walk == CBN_WALK_COLUMNS && plan->shape.spatial >= CBN_LANES;
}

static inline int64_t cbn_min64(int64_t a, int64_t b) { return a < b ? a : b; }

/// Channel block `block` of `width` channels and values [begin, begin + length), cut at m.
static inline cbn_item cbn_plan_block_range(const cbn_plan *plan, int64_t width, int64_t block, int64_t begin,
                                            int64_t length, int64_t part) {
    cbn_item item;
    item.part = part;
    item.c0 = block * width;
    item.c1 = cbn_min64(item.c0 + width, plan->shape.channels);
    item.begin = begin;
    item.end = cbn_min64(begin + length, plan->m);
    return item;
}

/// Item `index` of a phase that takes partials: a channel block and a range
/// of whole parts.
static inline cbn_item cbn_plan_item(const cbn_plan *plan, int64_t index) {
    const int64_t part = index % plan->part_ranges * plan->item_parts;
    return cbn_plan_block_range(plan, plan->channel_block, index / plan->part_ranges, part * plan->part_length,
                                plan->item_parts * plan->part_length, part);
}

/// Item `index` of an elementwise phase: values [begin, end) of a channel
/// block, `part` unused.
static inline cbn_item cbn_plan_elementwise_item(const cbn_plan *plan, int64_t index) {
    return cbn_plan_block_range(plan, plan->elementwise_channel_block, index / plan->elementwise_ranges,
                                index % plan->elementwise_ranges * plan->elementwise_length,
                                plan->elementwise_length, -1);
}

/// Iterates the segments of values [begin, end) of one channel: the pieces
/// that share an image, at most `spatial` values each.
typedef struct cbn_segments {
    int64_t next, end, spatial;
} cbn_segments;

static inline cbn_segments cbn_segments_make(const cbn_plan *plan, int64_t begin, int64_t end) {
    cbn_segments segments = { begin, end, plan->shape.spatial };
    return segments;
}

/// The next segment's first value and length; 0 when there is none.
static inline int cbn_segments_next(cbn_segments *segments, int64_t *first, int64_t *length) {
    if (segments->next >= segments->end) return 0;
    const int64_t spatial = segments->spatial;
    *first = segments->next;
    *length = cbn_min64(spatial - segments->next % spatial, segments->end - segments->next);
    segments->next += *length;
    return 1;
}

/// Planes walk: where value `value` of a channel lies, relative to the
/// channel's first value: `channels * spatial` apart per image.
static inline int64_t cbn_plane_offset(const cbn_plan *plan, int64_t value) {
    const int64_t spatial = plan->shape.spatial;
    return value / spatial * (plan->shape.channels * spatial) + value % spatial;
}

#endif /* CBN_PLAN_H */
