#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
#include "plan/plan.h"

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

static int64_t last_level_cache;
static int64_t cache_share;    /* a quarter of each processor's share of it */
static pthread_once_t last_level_cache_once = PTHREAD_ONCE_INIT;

/// Reads the size of each cache of CPU 0 from sysfs, e.g. "32768K", and
/// keeps the largest (32 MiB where none is reported) and the fuse budget's
/// share of it.
static void read_last_level_cache(void) {
    int64_t largest = 0;
    for (int index = 0; index < 8; index++) {
        char path[64];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", index);
        FILE *file = fopen(path, "r");
        if (!file) continue;
        long long value = 0;
        char unit = 0;
        const int fields = fscanf(file, "%lld%c", &value, &unit);
        fclose(file);
        if (fields < 1 || value <= 0 || value > (1LL << 40)) continue;
        const int64_t bytes = value * (unit == 'K' ? 1024 : unit == 'M' ? 1024 * 1024 : 1);
        if (bytes > largest) largest = bytes;
    }
    last_level_cache = largest > 0 ? largest : 32 * 1024 * 1024;
    const long processors = sysconf(_SC_NPROCESSORS_ONLN);
    cache_share = last_level_cache / (4 * (processors > 0 ? processors : 1));
}

int64_t cbn_last_level_cache_bytes(void) {
    pthread_once(&last_level_cache_once, read_last_level_cache);
    return last_level_cache;
}

/// The bytes a fused slice may hold: the tuning's budget (L2), or a quarter
/// of each processor's share of the last-level cache where that is larger, so
/// that the slices every thread has in flight, and the outputs written beside
/// them, stay in that cache for the second pass. Read once, like the cache.
static int64_t fuse_budget(const cbn_tuning *tuning) {
    pthread_once(&last_level_cache_once, read_last_level_cache);
    return cache_share > tuning->fuse_bytes ? cache_share : tuning->fuse_bytes;
}

/// The reduction order: a function of spatial and m alone.
static void plan_reduction(cbn_plan *plan) {
    const int64_t spatial = plan->shape.spatial;
    if (spatial >= CBN_BLOCK_VALUES)
        plan->block_length = CBN_BLOCK_VALUES;
    else if (spatial >= CBN_LANES)
        plan->block_length = CBN_BLOCK_VALUES / spatial * spatial;
    else
        plan->block_length = CBN_SHORT_BLOCK_VALUES / spatial * spatial;
    const int64_t target = spatial >= CBN_LANES ? CBN_PART_VALUES : CBN_SHORT_PART_VALUES;
    const int64_t blocks = target / plan->block_length;
    plan->part_length = (blocks > 1 ? blocks : 1) * plan->block_length;
    plan->parts = ceil_div(plan->m, plan->part_length);
}

/// Adjacent channels whose runs for one image make about `target` values,
/// at most all of them.
static int64_t plane_run_channels(const cbn_plan *plan, int64_t target) {
    const int64_t spatial = plan->shape.spatial;
    const int64_t block = spatial >= target ? 1 : target / spatial;
    return block < plan->shape.channels ? block : plan->shape.channels;
}

/// Channels per planes item: runs of about the tuning's run target (its
/// short-plane target for short planes), at most CBN_PLANE_MAX_CHANNELS,
/// and fewer when that lets the block be fused.
static int64_t plane_channel_block(const cbn_plan *plan, int64_t fuse_limit) {
    const cbn_tuning *t = plan->tuning;
    const int64_t spatial = plan->shape.spatial;
    int64_t block = plane_run_channels(plan, spatial < t->short_plane ? t->short_plane_run_target : t->plane_run_target);
    if (block > CBN_PLANE_MAX_CHANNELS) block = CBN_PLANE_MAX_CHANNELS;
    const int64_t fusable = fuse_limit / plan->m;
    const int64_t run_min = plan->tuning->plane_run_min;
    const int64_t shortest = spatial >= run_min ? 1 : run_min / spatial;
    if (block > fusable && fusable >= shortest) block = fusable;
    return block;
}

cbn_plan cbn_make_plan(cbn_shape shape, const cbn_tuning *tuning, int tensors_per_pass) {
    cbn_plan plan;
    if (shape.channels == 1) shape.layout = CBN_CHANNELS_FIRST;
    plan.shape = shape;
    plan.tuning = tuning;
    plan.m = shape.n * shape.spatial;
    plan_reduction(&plan);

    const int64_t bytes = tuning->element_bytes;
    const int64_t fuse_limit = fuse_budget(tuning) / (bytes * tensors_per_pass);
    if (shape.channels > 1 && (shape.spatial == 1 || shape.layout == CBN_CHANNELS_LAST)) {
        plan.walk = CBN_WALK_COLUMNS;
        plan.channel_block = shape.channels < CBN_COLUMN_CHANNELS ? shape.channels : CBN_COLUMN_CHANNELS;
    } else {
        plan.walk = CBN_WALK_PLANES;
        plan.channel_block = plane_channel_block(&plan, fuse_limit);
    }
    plan.channel_blocks = ceil_div(shape.channels, plan.channel_block);

    /* Unfused items cover about tuning->item_bytes of a tensor, in whole parts. */
    int64_t item_parts = tuning->item_bytes / (bytes * plan.channel_block * plan.part_length);
    if (item_parts < 1) item_parts = 1;
    /* Fused: the slice fits the budget (fuse_budget), and there are blocks enough to share
     * (or one item's bytes hold every part anyway). Items that hold every part
     * of a slice that does not fit are not fused: their second pass would read
     * x from beyond the budget's cache all the same, and the elementwise items cut it better. */
    plan.fused = plan.m * plan.channel_block <= fuse_limit &&
                 (plan.channel_blocks >= tuning->min_fused_blocks || item_parts >= plan.parts);
    plan.item_parts = plan.fused || item_parts > plan.parts ? plan.parts : item_parts;
    plan.part_ranges = ceil_div(plan.parts, plan.item_parts);
    plan.items = plan.channel_blocks * plan.part_ranges;
    /* Elementwise items: planes take runs of the tuning's elementwise target,
     * without the fused slice's limit. Columns take whole rows of up to the
     * tuning's row_channels, and keep the statistics' blocks past it
     * (plan/tuning.h). */
    if (plan.walk == CBN_WALK_PLANES)
        plan.elementwise_channel_block = plane_run_channels(&plan, tuning->elementwise_run_target);
    else
        plan.elementwise_channel_block = shape.channels <= tuning->row_channels ? shape.channels : plan.channel_block;
    plan.elementwise_channel_blocks = ceil_div(shape.channels, plan.elementwise_channel_block);
    const int64_t elementwise = tuning->elementwise_bytes / (bytes * plan.elementwise_channel_block);
    plan.elementwise_length = elementwise > CBN_LANES ? elementwise : CBN_LANES;
    /* Planes: whole planes where a plane is shorter, so that each image's
     * part of an item is whole planes (elementwise_planes writes them as one run). */
    if (plan.walk == CBN_WALK_PLANES && shape.spatial < plan.elementwise_length)
        plan.elementwise_length -= plan.elementwise_length % shape.spatial;
    plan.elementwise_ranges = ceil_div(plan.m, plan.elementwise_length);
    plan.elementwise_items = plan.elementwise_channel_blocks * plan.elementwise_ranges;
    const int64_t count = shape.n * shape.channels * shape.spatial;
    /* The bytes a call touches: the tensors its reduction reads, and its output.
     * Planes of fewer than 16 values are written value by value, unstreamed. */
    const int64_t touched = count * bytes * (tensors_per_pass + 1);
    plan.streaming = touched * 100 >= cbn_last_level_cache_bytes() * tuning->streaming_cache_percent &&
                     (plan.walk == CBN_WALK_COLUMNS || shape.spatial >= CBN_LANES);
    plan.prefetch = tuning->prefetch_bytes > 0 &&
                    (!tuning->large_calls_only || 2 * touched >= cbn_last_level_cache_bytes());
    /* The reductions' inputs come from memory: they fill the last-level cache. */
    const int from_memory = count * bytes * tensors_per_pass >= cbn_last_level_cache_bytes();
    plan.prefetch_to_l2 = plan.prefetch && tuning->reduction_prefetch_to_l2 && plan.walk == CBN_WALK_PLANES &&
                          from_memory;
    /* Where x stays in the cache, asking for the next item's x costs more than it brings. */
    plan.prefetch_next_item = tuning->prefetch_next_item && plan.fused && from_memory;
    /* Forward plans keep one tensor per pass, backward ones two (x and dy). */
    const int64_t joint_from = tensors_per_pass == 1 ? tuning->joint_planes_from : tuning->joint_sums_planes_from;
    plan.joint_loop = joint_from > 0 && shape.spatial >= joint_from && cbn_plan_can_join(&plan) && from_memory;
    plan.row_blocks = plan.walk == CBN_WALK_COLUMNS && count <= tuning->row_block_bytes / bytes && !plan.streaming;
    return plan;
}
