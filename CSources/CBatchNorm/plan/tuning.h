/*
 * The tuning: how large the pieces of work are, one table per element type.
 * The plan and the microkernels read it; results never depend on it (the
 * reduction order is fixed apart, plan.h), only speed does. Each entry says
 * what it sets and why; the measurements behind the values are in
 * Benchmarks/results/tuning.md.
 */
#ifndef CBN_TUNING_H
#define CBN_TUNING_H

#include <stddef.h>
#include <stdint.h>

typedef struct cbn_tuning {
    /// Bytes of one stored value.
    int64_t element_bytes;
    /// Planes: values of adjacent channels one item's run takes per image,
    /// so that short planes still make long contiguous stretches to stream.
    int64_t plane_run_target;
    /// Planes shorter than this (7x7, 14x14) take `short_plane_run_target`
    /// values instead: the longer the stretch, the better the prefetchers follow.
    int64_t short_plane;
    int64_t short_plane_run_target;
    /// ...but no fewer than this when fewer channels let the block be fused.
    int64_t plane_run_min;
    /// Planes: values of adjacent channels an elementwise item's run takes
    /// per image (inference, and normalize and dx where they are not fused).
    /// These items hold no accumulators, and their passes streamed faster in
    /// longer stretches than the statistics' runs.
    int64_t elementwise_run_target;
    /// Bytes of one tensor an unfused item covers: enough to stream, few
    /// enough that many items share the work.
    int64_t item_bytes;
    /// Bytes of one tensor an elementwise item covers: long enough that each
    /// worker streams, short enough that the workers share a channel block.
    int64_t elementwise_bytes;
    /// A channel block whose slice (every tensor the pass reads) fits in
    /// this many bytes is fused: read once, it is still in L2 for the second
    /// pass. Where a quarter of each processor's share of the last-level cache
    /// is larger, the plan takes that instead (the slice stays in that cache).
    int64_t fuse_bytes;
    /// Fewer fused channel blocks than this are split into parts instead, so
    /// that every thread gets work.
    int64_t min_fused_blocks;
    /// Columns walks of up to this many channels take whole rows in their
    /// elementwise items (one contiguous stream each); wider rows keep the
    /// statistics' channel blocks, whose coefficient rows stay in L1.
    int64_t row_channels;
    /// Outputs are written with non-temporal stores where the tensors of a
    /// pass (what its reduction reads, and its output) fill this percentage
    /// of the last-level cache or more: they do not stay there from call
    /// to call, so a cached store would first read its destination line from
    /// memory, and the evicted lines would be written back within the call.
    int64_t streaming_cache_percent;
    /// Streamed, channels first, planes shorter than this many values are
    /// written a whole segment of planes at a time, across an item's channels
    /// (stream_planes); longer ones a channel's run at a time, whose ends are
    /// then few and whose loop costs fewer instructions a vector.
    int64_t whole_planes_below;
    /// Columns walks whose elementwise items hold part of each row take their
    /// rows in blocks (one load of a coefficient vector serves several rows)
    /// over tensors of up to this many bytes, where outputs are not streamed
    /// (blocks store through the cache); 0: never (where it did not pay).
    int64_t row_block_bytes;
    /// The vector loops ask for their inputs this many bytes ahead; 0: not
    /// at all (the processor's own prefetchers keep up)...
    int64_t prefetch_bytes;
    /// ...only in calls whose tensors (x and y, or x, dy and dx) fill half
    /// the last-level cache or more (cbn_last_level_cache_bytes), when set:
    /// smaller ones stay in the cache from call to call, where asking ahead
    /// costs more than it brings.
    int large_calls_only;
    /// When set, the planes walk's reductions (the statistics, the backward
    /// sums) ask for their inputs into L2 alone, not L1, where those inputs
    /// (x, or x and dy) fill the last-level cache or more: they come from
    /// memory, and these loops read them faster that way. The elementwise
    /// passes, which also write, keep asking into L1.
    int reduction_prefetch_to_l2;
    /// When set, where a call's fused items read their inputs from memory
    /// (they fill the last-level cache), a worker takes its next item before
    /// it runs the one it holds, and that item's second pass asks for the
    /// next one's x instead of its own (cbn_item.next): the memory reads
    /// while the pass writes, and the next first pass finds x in the cache.
    int prefetch_next_item;
    /// Where a call's fused items read their inputs from memory, forward
    /// training's fused items on planes of at least this many values run
    /// the joint loop (plan.h, cbn_plan_can_join): a worker sums its next
    /// item's x in the loops that write the y of the item it holds, so that
    /// the memory reads the one while the other is written, and the sums'
    /// arithmetic hides under both. 0: never; only types whose microkernels
    /// compile the loop (CBN_JOINT_LOOP, kernels_template.h) may set it.
    int64_t joint_planes_from;
    /// The same for backward's fused items: a worker's backward sums of its
    /// next item in the loops that write the dx of the item it holds.
    int64_t joint_sums_planes_from;
    /// Columns walk: images a lane's call of the statistics takes where each
    /// lane gets three of an image's rows (7x7), so that the lane
    /// accumulators are loaded once for more rows; 1: one image a call.
    int64_t statistics_three_row_images;
    /// Channels per item of a finalize phase.
    int64_t finalize_channels;
} cbn_tuning;

/// What every type shares; the tables below differ where a type's own
/// measurements said so.
#define CBN_TUNING_COMMON                                                                        \
    .plane_run_target = 4096, .short_plane = 256, .short_plane_run_target = 16384,              \
    .plane_run_min = 1024, .item_bytes = 128 * 1024, .elementwise_bytes = 1024 * 1024,         \
    .fuse_bytes = 1024 * 1024, .min_fused_blocks = 8, .finalize_channels = 64

/// float: rows in blocks paid on tensors that fit the last-level cache.
/// Asking 4 KiB ahead paid where a call's tensors fill half the last-level
/// cache or more, on processors whose own prefetchers lose the stream at
/// each jump between a planes item's images; it cost on smaller calls.
/// Asking into L2 paid in the planes walk's reductions from memory, and
/// 7x7's statistics calls of four images a lane. A fused item asking for
/// the next one's x paid in forward training (backward gained less). The
/// joint loop paid in forward training on planes of 2048 values or more
/// (items of one channel), and cost on smaller ones (items of several
/// channels); in backward it paid on none.
static const cbn_tuning cbn_tuning_f32 = {
    .element_bytes = 4, CBN_TUNING_COMMON, .streaming_cache_percent = 100, .whole_planes_below = INT64_MAX, .elementwise_run_target = 32768, .row_channels = 2048, .row_block_bytes = 16 * 1024 * 1024, .prefetch_bytes = 4096,
    .large_calls_only = 1, .reduction_prefetch_to_l2 = 1, .statistics_three_row_images = 4, .prefetch_next_item = 1,
    .joint_planes_from = 2048};
/// double: rows in blocks did not pay; elementwise runs of 256 KiB (not 512).
/// Fused items asking for the next one's x did not pay; the joint loop did,
/// forward and backward, on planes of 2048 values or more.
static const cbn_tuning cbn_tuning_f64 = {
    .element_bytes = 8, CBN_TUNING_COMMON, .streaming_cache_percent = 100, .whole_planes_below = INT64_MAX, .elementwise_run_target = 32768, .row_channels = 1024, .row_block_bytes = 0, .prefetch_bytes = 0, .large_calls_only = 0,
    .statistics_three_row_images = 4, .joint_planes_from = 2048, .joint_sums_planes_from = 2048};
/// The half formats compute more per byte than float, and the processor's
/// prefetchers fell behind them: they ask 4 KiB ahead, on every tensor.
/// Rows in blocks did not pay. Elementwise runs of 128 KiB, as float's.
/// Streaming from three times the last-level cache: from once, 28x28 and
/// 14x14 (backward) took 1.2 to 2.7 times as long. Asking into L2 in the
/// reductions gained nothing, and so did grouping 7x7's statistics calls
/// and fused items asking for the next one's x. The joint loop cost them
/// time (their check's arithmetic leaves the loop no stores to hide under),
/// and their microkernels do not compile it.
static const cbn_tuning cbn_tuning_f16 = {
    .element_bytes = 2, CBN_TUNING_COMMON, .streaming_cache_percent = 300, .whole_planes_below = 1024, .elementwise_run_target = 65536, .row_channels = 1024, .row_block_bytes = 0, .prefetch_bytes = 4096, .large_calls_only = 0,
    .statistics_three_row_images = 1};
static const cbn_tuning cbn_tuning_bf16 = {
    .element_bytes = 2, CBN_TUNING_COMMON, .streaming_cache_percent = 300, .whole_planes_below = 1024, .elementwise_run_target = 65536, .row_channels = 1024, .row_block_bytes = 0, .prefetch_bytes = 4096, .large_calls_only = 0,
    .statistics_three_row_images = 1};

#endif /* CBN_TUNING_H */
