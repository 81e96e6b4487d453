#include "plan.h"

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

cbn_plan cbn_make_plan(cbn_shape shape, size_t element_size, int tensors_per_pass) {
    cbn_plan plan;
    plan.shape = shape;
    plan.m = shape.n * shape.spatial;
    const int64_t bytes = (int64_t)element_size;
    const int64_t fuse_limit = CBN_FUSE_BYTES / (bytes * tensors_per_pass);

    if (shape.spatial == 1 && shape.channels > 1) {
        plan.layout = CBN_LAYOUT_COLUMNS;
        plan.channel_block = shape.channels < CBN_COLUMN_CHANNELS ? shape.channels
                                                                  : CBN_COLUMN_CHANNELS;
        plan.channel_blocks = ceil_div(shape.channels, plan.channel_block);
        plan.block_length = CBN_COLUMN_ROWS;
        /* rows per part: a multiple of the statistics block */
        int64_t rows = CBN_PART_BYTES / (bytes * plan.channel_block);
        rows = rows / CBN_COLUMN_ROWS * CBN_COLUMN_ROWS;
        if (rows < CBN_COLUMN_ROWS) rows = CBN_COLUMN_ROWS;
        const int64_t slice = shape.n * plan.channel_block;
        const int fused = slice <= fuse_limit &&
                          (plan.channel_blocks >= CBN_MIN_FUSED_BLOCKS || shape.n <= rows);
        plan.part_length = fused ? shape.n : rows;
    } else {
        plan.layout = CBN_LAYOUT_PLANES;
        const int64_t spatial = shape.spatial;
        /* statistics blocks hold whole runs when runs are short */
        plan.block_length = spatial <= CBN_PLANE_BLOCK ? CBN_PLANE_BLOCK / spatial * spatial
                                                       : CBN_PLANE_BLOCK;
        int64_t block = spatial >= CBN_PLANE_RUN_TARGET ? 1 : CBN_PLANE_RUN_TARGET / spatial;
        if (block > CBN_PLANE_MAX_CHANNELS) block = CBN_PLANE_MAX_CHANNELS;
        if (block > shape.channels) block = shape.channels;
        /* A fused block beats a longer run, down to runs of CBN_PLANE_RUN_MIN values. */
        const int64_t fusable = fuse_limit / plan.m;
        const int64_t shortest = spatial >= CBN_PLANE_RUN_MIN ? 1 : CBN_PLANE_RUN_MIN / spatial;
        if (block > fusable && fusable >= shortest) block = fusable;
        plan.channel_block = block;
        plan.channel_blocks = ceil_div(shape.channels, block);
        int64_t values = CBN_PART_BYTES / (bytes * block);
        values = values / plan.block_length * plan.block_length;
        if (values < plan.block_length) values = plan.block_length;
        const int fused = plan.m * block <= fuse_limit &&
                          (plan.channel_blocks >= CBN_MIN_FUSED_BLOCKS || plan.m <= values);
        plan.part_length = fused ? plan.m : values;
    }
    const int64_t extent = plan.layout == CBN_LAYOUT_PLANES ? plan.m : shape.n;
    plan.parts = ceil_div(extent, plan.part_length);
    plan.items = plan.channel_blocks * plan.parts;
    plan.streaming = shape.n * shape.channels * shape.spatial >= CBN_STREAMING_BYTES / bytes;
    return plan;
}
