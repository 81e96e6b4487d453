/*
 * CBatchNorm: the C core of swift-batchnorm.
 *
 * Batch normalization over tensors folded to (n, channels, spatial), in
 * either memory layout (channels first, NCHW, or channels last, NHWC), float
 * and double. Every exported symbol is prefixed `cbn_`.
 *
 * How a call runs:
 *   1. The caller fills a `cbn_forward_desc` or `cbn_backward_desc` and
 *      creates a job (`cbn_job_create_*`). The job holds the plan (a pure
 *      function of the shape), per-channel parameters and scratch space for
 *      partial results. Nothing is written to the caller's buffers yet.
 *   2. `cbn_job_run` hands `cbn_job_work` to an executor (`cbn_parallel_fn`)
 *      once; the executor calls it from any number of workers at once. The
 *      workers walk the job's phases together, taking items of each phase
 *      from a shared counter until none are left and waiting, before the
 *      next phase, for the items other workers still hold. A channel split
 *      into parts is finalized in a phase of its own, one item per 64
 *      channels, merging the parts' partial results in the plan's order.
 *   3. `cbn_job_destroy` frees the job.
 *
 * Results depend only on the shape and the data: never on the executor, the
 * number of workers, or which worker ran which item.
 *
 * This header is the contract with the Swift module, which validates every
 * argument before calling in; the C side re-checks shapes and returns a
 * `cbn_status` but does not check buffer sizes (it cannot see them).
 */
#ifndef CBATCHNORM_H
#define CBATCHNORM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Element type of the tensors (x, y, dy, dx, the residual and its
/// gradient). gamma, beta, the running statistics and their gradients have
/// the same type for float and double, and are float for the two half
/// formats (mixed precision). Saved batch statistics (mean, inverse standard
/// deviation) are always double. Half-format tensors are widened on load,
/// reduced in double, computed on elementwise in float where a per-value
/// error bound shows that float gives the value to within one unit in the
/// last place of the format (in double elsewhere), and rounded to nearest
/// even on store.
typedef enum cbn_dtype {
    CBN_FLOAT32 = 0,
    CBN_FLOAT64 = 1,
    CBN_FLOAT16 = 2,     ///< IEEE binary16
    CBN_BFLOAT16 = 3,    ///< bfloat16: a float's upper 16 bits
} cbn_dtype;

/// Bytes of one tensor element of `dtype`; 0 for a value that names no type.
int64_t cbn_element_size(cbn_dtype dtype);

/// Outcome of job creation.
typedef enum cbn_status {
    CBN_OK = 0,
    CBN_INVALID_SHAPE = 1,           ///< a dimension below 1, n*channels*spatial overflows int64, or an unknown layout
    CBN_TOO_FEW_VALUES = 2,          ///< training with one value per channel, or given moments counting fewer than 2 (sums 1)
    CBN_INVALID_ARGUMENT = 3,        ///< a required pointer is NULL, or eps/momentum out of range
    CBN_OUT_OF_MEMORY = 4,
} cbn_status;

/// Where the channel index lies in memory.
typedef enum cbn_memory_layout {
    CBN_CHANNELS_FIRST = 0,    ///< (N, C, S1…Sk): x[i][c][s] at (i*channels + c)*spatial + s
    CBN_CHANNELS_LAST = 1,     ///< (N, S1…Sk, C): x[i][s][c] at (i*spatial + s)*channels + c
} cbn_memory_layout;

/// Shape folded to three extents and a memory layout. Channel c's m =
/// n*spatial values are taken in the order (i, s) in either layout, and the
/// results of a channels-last call equal, bit for bit, those of the
/// channels-first call on the transposed tensor.
typedef struct cbn_shape {
    int64_t n;
    int64_t channels;
    int64_t spatial;
    cbn_memory_layout layout;
} cbn_shape;

/// An activation applied after batch normalization (and the residual).
typedef enum cbn_activation {
    CBN_ACTIVATION_IDENTITY = 0,
    /// relu(v) = v where v > 0 or v is NaN, +0 elsewhere (-0 included).
    CBN_ACTIVATION_RELU = 1,
} cbn_activation;

/// Forward pass, training or inference.
///
/// Training (`training != 0`): per channel c over its m = n*spatial values,
///   mean_c = (1/m) sum x,  var_c = (1/m) sum (x - mean_c)^2,
///   invstd_c = 1 / sqrt(var_c + eps),
///   y = weight_c * (x - mean_c) * invstd_c + bias_c,
///   running_mean <- (1 - momentum) running_mean + momentum mean_c,
///   running_var  <- (1 - momentum) running_var  + momentum var_c m/(m-1).
/// Inference: the same y with mean = running_mean, var = running_var.
/// Where var + eps = 0, invstd is +inf and x̂ is taken as 0 (y = bias).
/// Epilogue: y = activation(BN(x) + residual), the residual z when given;
/// the saved and running statistics are BN(x)'s, whatever the epilogue.
typedef struct cbn_forward_desc {
    cbn_dtype dtype;
    cbn_shape shape;
    int training;
    const void *x;             ///< required
    void *y;                   ///< required; may equal x (in place), must not otherwise overlap anything
    const void *weight;        ///< gamma, length channels; NULL means 1
    const void *bias;          ///< beta, length channels; NULL means 0
    void *running_mean;        ///< length channels; read in inference, updated in training (NULL: no update)
    void *running_var;         ///< length channels; as running_mean (both or neither in training)
    double *saved_mean;        ///< training: mean_c out (NULL: not wanted); ignored in inference
    double *saved_invstd;      ///< training: invstd_c out (NULL: not wanted); ignored in inference
    double eps;                ///< >= 0 and finite
    double momentum;           ///< weight of this batch in the running update, in [0, 1]
    const void *residual;      ///< z, like x; NULL: none. y may equal z exactly
    cbn_activation activation;
    /* Batch norm across processes, training only, at most one of the two
     * (see cbn_merge_moments): */
    double *moments_out;       ///< this slice's moments, count_c, mean_c, M2_c at 3c..3c+2;
                               ///< the job writes nothing else (y may be NULL)
    const double *moments;     ///< the whole batch's moments, laid out as moments_out, used
                               ///< instead of this slice's: saved statistics, running statistics
                               ///< (unbiased with the whole count) and y; x is read once.
                               ///< Read by cbn_job_run, not at creation (counts checked then)
} cbn_forward_desc;

/// Backward pass. With xhat = (x - mean) * invstd:
///   dbias_c   = sum dy
///   dweight_c = sum dy * xhat
/// Training (`training != 0`, back-propagates through mean and invstd):
///   dx = weight_c * invstd_c / m * (m dy - dbias_c - xhat dweight_c)
/// Inference (mean and invstd are constants):
///   dx = weight_c * invstd_c * dy
/// mean and invstd are the saved batch statistics (training) or those of the
/// running statistics (inference; see `cbn_inference_statistics`). Where
/// invstd is +inf (var + eps = 0), x̂ is 0: dx = 0, dweight = 0.
typedef struct cbn_backward_desc {
    cbn_dtype dtype;
    cbn_shape shape;
    int training;
    const void *x;             ///< required when dweight or (training and dx) is wanted
    const void *dy;            ///< required
    const void *weight;        ///< gamma; NULL means 1
    const double *mean;        ///< required, length channels
    const double *invstd;      ///< required, length channels
    void *dx;                  ///< NULL: not wanted; may equal dy or x exactly
    void *dweight;             ///< NULL: not wanted
    void *dbias;               ///< NULL: not wanted
    cbn_activation activation; ///< the forward epilogue's activation
    const void *y;             ///< the forward output, whose y <= 0 masks dy with CBN_ACTIVATION_RELU;
                               ///< NULL there: the mask is recomputed from x (required then), the y
                               ///< of a forward without residual, bit for bit, from x, weight,
                               ///< bias, mean and invstd; dresidual must then be NULL
    const void *bias;          ///< beta of that forward, for the recomputed mask; NULL means 0
    void *dresidual;           ///< dz = g; NULL: not wanted; may equal dy exactly
    /* Batch norm across processes, either mode, at most one of the two (see
     * cbn_merge_sums); mean and invstd are then the whole batch's: */
    double *sums_out;          ///< this slice's count_c, sum g, sum g*(x - mean_c) at 3c..3c+2;
                               ///< dx, dweight, dbias and dresidual must be NULL
    const double *sums;        ///< the whole batch's sums, laid out as sums_out (counts >= 1), used
                               ///< instead of this slice's: m is their count, dweight and dbias theirs.
                               ///< Read by cbn_job_run, not at creation (counts checked then)
} cbn_backward_desc;

/// An opaque job: plan, per-channel parameters, partial results.
typedef struct cbn_job cbn_job;

/// An executor: runs `work(job)` from up to `workers` workers. It returns
/// once the job is complete, in one of two ways:
///  - when every call of `work` has returned (OpenMP, serial); or
///  - when the calling thread, having called `work(job)` itself, returns from
///    `cbn_job_wait(job)`: every item is done, though helpers started for
///    the job may not have run yet (Dispatch, whose threads can wake late).
///    Each such helper holds a reference, `cbn_job_retain` before it is
///    started and `cbn_job_release` after its `work(job)` returns, so that
///    the job outlives it; a helper that comes late finds no items and
///    touches none of the caller's buffers.
/// The workers may run concurrently or one after another: the job completes
/// either way. `workers` >= 2 is already capped at the number of items in the
/// largest phase.
typedef void (*cbn_parallel_fn)(void *executor_context,
                                void (*work)(cbn_job *job),
                                cbn_job *job,
                                int64_t workers);

cbn_status cbn_job_create_forward(const cbn_forward_desc *desc, cbn_job **job_out);
cbn_status cbn_job_create_backward(const cbn_backward_desc *desc, cbn_job **job_out);

/// Runs every phase of the job in one call of `parallel`. `max_workers` >= 1
/// bounds the workers asked of the executor. Returns, having written nothing,
/// CBN_TOO_FEW_VALUES when given moments or sums count too few values, and
/// CBN_OUT_OF_MEMORY when the workers' scratch space cannot be allocated
/// (never for a job with given moments or sums: it makes no reduction pass,
/// so a caller that creates it before an exchange has nothing left to fail
/// after the exchange).
cbn_status cbn_job_run(cbn_job *job, cbn_parallel_fn parallel, void *executor_context,
                       int64_t max_workers);

/// Works through every phase of the job, taking items until none are left.
/// Thread-safe; up to the `workers` concurrent calls the executor was given.
void cbn_job_work(cbn_job *job);

/// Waits until every item of every phase of a running job is done (the
/// items other workers hold included), so that its outputs are complete.
void cbn_job_wait(cbn_job *job);

/// Reference counting: a job starts with one reference, its creator's.
/// `cbn_job_release` frees the job when the last reference goes.
void cbn_job_retain(cbn_job *job);
void cbn_job_release(cbn_job *job);

/// The creator's release: the same as `cbn_job_release`.
void cbn_job_destroy(cbn_job *job);

/// The serial executor: one worker, on the calling thread.
void cbn_parallel_serial(void *executor_context, void (*work)(cbn_job *job),
                         cbn_job *job, int64_t workers);

/// The OpenMP executor; `executor_context` points to an int64_t thread count.
/// Without OpenMP compiled in it runs serially.
void cbn_parallel_openmp(void *executor_context, void (*work)(cbn_job *job),
                         cbn_job *job, int64_t workers);

/// The Dispatch executor's helpers, which linger. A helper runs
/// `cbn_helper_run(job, work)`: `work(job)`, then `cbn_job_release(job)`;
/// then, for up to 20 ms, it waits for a job that `cbn_helpers_offer` posts
/// and runs that one the same way, and so on, before it returns and gives its
/// thread back.
void cbn_helper_run(cbn_job *job, void (*work)(cbn_job *job));

/// Asks for `helpers` helpers for `job`: posts it, with a reference each
/// (`cbn_job_retain`), for as many of the helpers already started as are not
/// promised a job, and returns how many more the caller must start, each
/// after a `cbn_job_retain`, on a thread that runs `cbn_helper_run(job, work)`
/// (fewer than asked when 64 helpers are alive).
int64_t cbn_helpers_offer(cbn_job *job, void (*work)(cbn_job *job), int64_t helpers);

/// For tests: the most helpers that have been alive at once in this process.
int64_t cbn_test_most_helpers_alive(void);

/// 1 when the core was compiled with OpenMP, else 0.
int cbn_openmp_available(void);

/// Fault injection, for tests: on the calling thread, the job created
/// `after` job creations from now (0: the next one) fails with
/// CBN_OUT_OF_MEMORY, as if its scratch space could not be allocated, having
/// allocated nothing; -1 (the default) injects nothing.
void cbn_test_fail_job_creation(int64_t after);

/// Deliberate faults, for the tests that prove the suite catches them.
typedef enum cbn_test_mutant {
    CBN_MUTANT_NONE = 0,
    CBN_MUTANT_NAN_OUTPUT = 1,      ///< the first value of y (or dx) becomes a NaN
    CBN_MUTANT_FLIP_LOW_BIT = 2,    ///< the lowest bit of the last value of y, dx and dz flips
    CBN_MUTANT_WRONG_MEAN = 3,      ///< every channel's batch mean is off by 1e-3 (σ + |mean|)
} cbn_test_mutant;

/// Every job created on the calling thread from now on carries `mutant`
/// (CBN_MUTANT_NONE, the default, for none).
void cbn_test_mutate_jobs(cbn_test_mutant mutant);

/// For tests: jobs created on the calling thread from now on write outputs
/// of `bytes` or more with non-temporal stores (0: every output), so that
/// small tensors reach the streaming path; -1 (the default) restores the
/// plan's rule (plan/tuning.h, streaming_cache_percent).
void cbn_test_stream_outputs_from(int64_t bytes);

/// Test hook: jobs created on the calling thread from now on, with `every`
/// 1, have every fused item's second pass ask for the next item's x (so that
/// small tensors reach that path); -1 (the default) restores the plan's rule
/// (plan/tuning.h, prefetch_next_item).
void cbn_test_prefetch_next_items(int every);

/// The largest cache CPU 0 reports (sysfs), in bytes, read once; 32 MiB
/// where none is reported. The plan asks for prefetches by it.
int64_t cbn_last_level_cache_bytes(void);

/// The number of CPUs this process may run on (its affinity mask, as
/// `taskset` or `mpirun --bind-to` set it), or 0 when it cannot be read.
int64_t cbn_affinity_cpu_count(void);

/// Batch norm across processes (data-parallel ranks) in three steps per pass:
///  1. each rank runs a job with `moments_out` (forward) or `sums_out`
///     (backward) over its own slice of the batch;
///  2. the ranks combine these `3*channels` doubles over a fixed tree of
///     pairwise exchanges (the Swift reducer's `allReduce`), each pair merged
///     with the functions below, the lower ranks' set first: every rank gets
///     bitwise the same result;
///  3. each rank runs the job again with `moments` or `sums` set to the merge
///     (a job it may create before step 2, its allocations made, and fill
///     the merge into afterwards).
/// `partials` holds `sets` arrays of `3*channels` doubles, one after another;
/// `out` gets `3*channels`. Moments merge with Chan's formula, set 0 first
/// (a set of count 0 changes nothing); sums add in set order, counts too.
void cbn_merge_moments(int64_t channels, int64_t sets, const double *partials, double *out);
void cbn_merge_sums(int64_t channels, int64_t sets, const double *partials, double *out);

/// mean_c = running_mean_c, invstd_c = 1 / sqrt(running_var_c + eps), in double.
void cbn_inference_statistics(cbn_dtype dtype, int64_t channels,
                              const void *running_mean, const void *running_var,
                              double eps, double *mean_out, double *invstd_out);

/// The instruction set the microkernels run with on this CPU, e.g.
/// "x86-64-v4 (AVX-512)": the same choice the dynamic loader made (and
/// whether bfloat16 narrows with AVX-512 BF16).
const char *cbn_isa_name(void);

#ifdef __cplusplus
}
#endif

#endif /* CBATCHNORM_H */
