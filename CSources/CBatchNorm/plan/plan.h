/*
 * The plan: how a shape is cut into work. A pure function of the shape (its
 * memory layout included), of the element size and of this machine's caches
 * (which items fuse, whether loops prefetch), never of the thread count. The
 * reduction order depends on the shape and the element size alone, so that
 * partial results merge in the same order whatever runs them.
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
 * An item is "fused" when it holds every part of its channels and their
 * slice fits the tuning's fuse budget: it computes the statistics (or
 * backward sums), finalizes them and then normalizes (or writes dx) while the
 * slice is still in cache. Fused or not, the partial results and their merge
 * are the same.
 */
#ifndef CBN_PLAN_H
#define CBN_PLAN_H

#include "CBatchNorm.h"
#include "plan/tuning.h"

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
/// The most channels one planes item handles (each has a vector accumulator
/// on the stack).
#define CBN_PLANE_MAX_CHANNELS 256
/// Channels per columns item: rows of 4 KiB (float) stream well; items that
/// read parts of rows (a few hundred bytes each, far apart in time) do not.
/// The most channels one item of either walk handles (stack arrays).
#define CBN_COLUMN_CHANNELS 1024
#define CBN_MAX_BLOCK_CHANNELS CBN_COLUMN_CHANNELS

typedef enum cbn_walk {
    CBN_WALK_PLANES = 0,
    CBN_WALK_COLUMNS = 1,
} cbn_walk;

typedef struct cbn_plan {
    cbn_shape shape;            ///< as given, but one channel is always channels first (the same memory)
    const cbn_tuning *tuning;   ///< the element type's (plan/tuning.h)
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
    int fused;                  ///< items hold every part, and the slice fits the fuse budget (plan.c)
    /* Elementwise phases (normalize, dx without sums) have no partials and
     * no accumulators, so their items need not be whole parts nor fit a
     * fused slice: about tuning.elementwise_bytes each, of channel blocks that
     * make long contiguous stretches (planes walk). */
    int64_t elementwise_channel_block;  ///< channels per elementwise item
    int64_t elementwise_channel_blocks; ///< ceil(channels / elementwise_channel_block)
    int64_t elementwise_length; ///< values per channel of an elementwise item
    int64_t elementwise_ranges; ///< ceil(m / elementwise_length)
    int64_t elementwise_items;  ///< elementwise_channel_blocks * elementwise_ranges
    int streaming;              ///< write outputs with non-temporal stores
    int row_blocks;             ///< elementwise rows in blocks (tuning.row_block_bytes says when; never streamed)
    int prefetch;               ///< the vector loops ask for their inputs ahead (tuning.prefetch_bytes)
    int prefetch_to_l2;         ///< ...and the planes walk's reductions into L2 (tuning.reduction_prefetch_to_l2)
    int prefetch_next_item;     ///< a fused item's second pass asks for the next item's x (tuning.prefetch_next_item)
    int joint_loop;             ///< a fused item's first pass writes the second-pass output of its worker's item before (tuning.joint_planes_from, joint_sums_planes_from)
} cbn_plan;

/// The extent of one item: channels [c0, c1) and values [begin, end) of
/// each, which are parts part, part + 1, ... of the reduction order.
typedef struct cbn_item {
    int64_t c0, c1;
    int64_t begin, end;
    int64_t part;
    /// A fused item's second pass asks for x of the item its worker takes
    /// next, this many values past each value it reads (the two items'
    /// origins apart), so that it comes from memory while the pass writes;
    /// 0: x the tuning's distance ahead, as every other pass.
    int64_t next;
} cbn_item;

/// `tensors_per_pass`: how many input tensors a fused item keeps in cache
/// (1 for forward, 2 for backward). Requires a valid shape.
cbn_plan cbn_make_plan(cbn_shape shape, const cbn_tuning *tuning, int tensors_per_pass);

static inline int cbn_plan_is_fused(const cbn_plan *plan) { return plan->fused; }

/// Whether a plan's fused items can run the joint loop: a fused item's
/// first pass (the statistics, or the backward sums) adds up its inputs in
/// the loops that write the output (y, or dx) of the item its worker ran
/// before (planes of CBN_LANES values or more, whose runs the two items
/// share; the sums' order stays the same). The plan does where its
/// tuning's joint_planes_from (forward) or joint_sums_planes_from
/// (backward) says so (plan.c).
static inline int cbn_plan_can_join(const cbn_plan *plan) {
    return plan->fused && plan->walk == CBN_WALK_PLANES && plan->shape.spatial >= CBN_LANES;
}

/// The test hook's rule (cbn_test_stream_outputs_from): whether a shape's
/// outputs of `element_bytes` a value fill `streaming_bytes` or more. The
/// plan's own rule is its tuning's streaming_cache_percent.
static inline int cbn_plan_streams(cbn_shape shape, int64_t element_bytes, int64_t streaming_bytes) {
    return shape.n * shape.channels * shape.spatial * element_bytes >= streaming_bytes;
}

/// Channels per item of a finalize phase.
static inline int64_t cbn_plan_finalize_channels(const cbn_plan *plan) { return plan->tuning->finalize_channels; }

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
    item.next = 0;
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

/// Where an elementwise item's tensors start: its first channel's first
/// value (the planes walk reaches the item's values from there by
/// cbn_plane_offset), or its first row's first channel (columns).
static inline int64_t cbn_plan_item_origin(const cbn_plan *plan, cbn_item item) {
    return plan->walk == CBN_WALK_PLANES ? item.c0 * plan->shape.spatial : item.begin * plan->shape.channels + item.c0;
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
