/*
 * The plan: how a shape is cut into work items. A pure function of the
 * shape and element size, never of the thread count, so that partial
 * results merge in the same order whatever runs them.
 *
 * Two layouts:
 *  - planes: a channel's m = n*spatial values lie in n runs of `spatial`
 *    contiguous values. An item is a block of channels and a range of their
 *    m values (a "part"), walked run by run and, within a run index, channel
 *    by channel: the block's runs for one image are adjacent in memory, so
 *    small planes (7x7) still stream. Statistics are taken in blocks of
 *    about CBN_PLANE_BLOCK values, whole runs when a run is shorter.
 *  - columns (spatial == 1, channels > 1): x is an (n, channels) matrix
 *    whose channels are contiguous. An item is a block of up to
 *    CBN_COLUMN_CHANNELS channels and a range of rows; microkernels vector
 *    across channels. Statistics are taken in blocks of CBN_COLUMN_ROWS rows.
 *
 * A plan is "fused" when every channel (block) is a single part: its item
 * computes the statistics (or backward sums), finalizes them and then
 * normalizes (or writes dx) while the slice is still in cache.
 */
#ifndef CBN_PLAN_H
#define CBN_PLAN_H

#include "CBatchNorm.h"

/// Values of each channel per statistics block (planes). Each block is summed
/// about its own first value and merged with Chan's formula.
#define CBN_PLANE_BLOCK 2048
/// Planes with shorter runs put this many values of adjacent channels in one item's run.
#define CBN_PLANE_RUN_TARGET 4096
/// ...but no fewer than this many when that lets the block be fused.
#define CBN_PLANE_RUN_MIN 1024
/// The most channels one planes item handles (each has a vector accumulator).
#define CBN_PLANE_MAX_CHANNELS 128
/// Channels per item in the columns layout: rows of 4 KiB (float) stream well.
#define CBN_COLUMN_CHANNELS 1024
/// The most channels one item of either layout handles.
#define CBN_MAX_BLOCK_CHANNELS CBN_COLUMN_CHANNELS
/// Rows per statistics block in the columns layout.
#define CBN_COLUMN_ROWS 128
/// Bytes of one tensor per part of a split channel.
#define CBN_PART_BYTES (128 * 1024)
/// Outputs of at least this size are written with non-temporal stores: they
/// will not be read again before they leave the cache anyway.
#define CBN_STREAMING_BYTES (48 * 1024 * 1024)
/// Channels per item of a finalize phase.
#define CBN_FINALIZE_CHANNELS 64
/// A channel's slice (all tensors the pass reads) up to this size is fused.
#define CBN_FUSE_BYTES (1024 * 1024)
/// Fewer channel blocks than this are split into parts so that many
/// threads share them, unless a block fits in one part anyway.
#define CBN_MIN_FUSED_BLOCKS 8

typedef enum cbn_layout {
    CBN_LAYOUT_PLANES = 0,
    CBN_LAYOUT_COLUMNS = 1,
} cbn_layout;

typedef struct cbn_plan {
    cbn_shape shape;
    int64_t m;                  ///< values per channel: n * spatial
    cbn_layout layout;
    int64_t channel_block;      ///< channels per item, at most CBN_MAX_BLOCK_CHANNELS
    int64_t channel_blocks;     ///< ceil(channels / channel_block)
    int64_t block_length;       ///< statistics block: values (planes) or rows (columns)
    int64_t part_length;        ///< planes: values per part; columns: rows per part
    int64_t parts;              ///< parts per channel block
    int64_t items;              ///< channel_blocks * parts
    int streaming;              ///< write outputs with non-temporal stores
} cbn_plan;

/// The extent of one item: channels [c0, c1) and range [begin, end) of
/// values (planes) or rows (columns). `part` indexes the partial results.
typedef struct cbn_item {
    int64_t c0, c1;
    int64_t begin, end;
    int64_t part;
} cbn_item;

/// `tensors_per_pass`: how many input tensors a fused item keeps in cache
/// (1 for forward, 2 for backward). Requires a valid shape.
cbn_plan cbn_make_plan(cbn_shape shape, size_t element_size, int tensors_per_pass);

static inline int cbn_plan_is_fused(const cbn_plan *plan) { return plan->parts == 1; }

static inline cbn_item cbn_plan_item(const cbn_plan *plan, int64_t index) {
    cbn_item item;
    int64_t block = index / plan->parts;
    item.part = index % plan->parts;
    item.c0 = block * plan->channel_block;
    item.c1 = item.c0 + plan->channel_block;
    if (item.c1 > plan->shape.channels) item.c1 = plan->shape.channels;
    int64_t extent = plan->layout == CBN_LAYOUT_PLANES ? plan->m : plan->shape.n;
    item.begin = item.part * plan->part_length;
    item.end = item.begin + plan->part_length;
    if (item.end > extent) item.end = extent;
    return item;
}

/// Iterates the contiguous runs that make up values [begin, end) of one
/// channel in the planes layout. Offsets are relative to the channel's
/// first value, x + c*spatial.
typedef struct cbn_runs {
    int64_t next, end, spatial, stride;
} cbn_runs;

static inline cbn_runs cbn_runs_make(const cbn_plan *plan, int64_t begin, int64_t end) {
    cbn_runs runs = { begin, end, plan->shape.spatial,
                      plan->shape.channels * plan->shape.spatial };
    return runs;
}

/// Where value `value` of a channel lies, relative to the channel's first
/// value: `stride` apart per image, `spatial` values per image.
static inline int64_t cbn_plane_offset(int64_t value, int64_t spatial, int64_t stride) {
    return value / spatial * stride + value % spatial;
}

static inline int cbn_runs_next(cbn_runs *runs, int64_t *offset, int64_t *length) {
    if (runs->next >= runs->end) return 0;
    int64_t len = runs->spatial - runs->next % runs->spatial;
    if (len > runs->end - runs->next) len = runs->end - runs->next;
    *offset = cbn_plane_offset(runs->next, runs->spatial, runs->stride);
    *length = len;
    runs->next += len;
    return 1;
}

#endif /* CBN_PLAN_H */
