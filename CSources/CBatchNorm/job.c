/*
 * Job creation: the checks of a descriptor, the plan, the job's own memory
 * and its phases; and the test hooks that make a creation fail or a job's
 * results wrong on purpose. Type-agnostic: the element-type-specific work
 * is in the kernel tables (microkernels/). The driver is in driver.c.
 */
#include <math.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "job.h"

/// The kernel table of an element type (microkernels/float32.c, ...), which also holds its
/// sizes and tuning; NULL for a value that names no type.
const cbn_kernels *cbn_kernels_for(cbn_dtype dtype) {
    switch (dtype) {
    case CBN_FLOAT32: return &cbn_kernels_f32;
    case CBN_FLOAT64: return &cbn_kernels_f64;
    case CBN_FLOAT16: return &cbn_kernels_f16;
    case CBN_BFLOAT16: return cbn_bfloat16_kernels();
    }
    return NULL;
}

static int valid_dtype(cbn_dtype dtype) { return cbn_kernels_for(dtype) != NULL; }

int64_t cbn_element_size(cbn_dtype dtype) {
    const cbn_kernels *kernels = cbn_kernels_for(dtype);
    return kernels ? kernels->tuning->element_bytes : 0;
}

static int valid_activation(cbn_activation activation) {
    return activation == CBN_ACTIVATION_IDENTITY || activation == CBN_ACTIVATION_RELU;
}

/// Every extent at least 1, a known layout, and n*channels*spatial elements
/// addressable in int64 and in bytes.
static cbn_status check_shape(cbn_shape shape, cbn_dtype dtype) {
    if (shape.n < 1 || shape.channels < 1 || shape.spatial < 1) return CBN_INVALID_SHAPE;
    if (shape.layout != CBN_CHANNELS_FIRST && shape.layout != CBN_CHANNELS_LAST) return CBN_INVALID_SHAPE;
    int64_t count;
    if (__builtin_mul_overflow(shape.n, shape.channels, &count)) return CBN_INVALID_SHAPE;
    if (__builtin_mul_overflow(count, shape.spatial, &count)) return CBN_INVALID_SHAPE;
    if (__builtin_mul_overflow(count, cbn_element_size(dtype), &count)) return CBN_INVALID_SHAPE;
    return CBN_OK;
}

/* Job creations on this thread until an injected failure; -1: none. */
static _Thread_local int64_t creations_until_failure = -1;

void cbn_test_fail_job_creation(int64_t after) { creations_until_failure = after; }

/* The fault jobs created on this thread carry. */
static _Thread_local cbn_test_mutant next_mutant = CBN_MUTANT_NONE;

void cbn_test_mutate_jobs(cbn_test_mutant mutant) { next_mutant = mutant; }

/* The output size from which jobs created on this thread stream; -1: the tuning's. */
static _Thread_local int64_t streaming_bytes_override = -1;

void cbn_test_stream_outputs_from(int64_t bytes) { streaming_bytes_override = bytes; }

/* 1: jobs created on this thread ask for the next item's x in every fused item, and run the joint loop
 * wherever it can run; -1: the plan's rule. */
static _Thread_local int prefetch_next_override = -1;

void cbn_test_prefetch_next_items(int every) { prefetch_next_override = every; }

/// Applies the job's output mutant (cbn_test_mutate_jobs) to a tensor it wrote.
static void mutate_output(const cbn_job *job, void *tensor) {
    if (!tensor) return;
    const size_t size = (size_t)cbn_element_size(job->dtype);
    const cbn_shape s = job->plan.shape;
    unsigned char *values = tensor;
    if (job->mutant == CBN_MUTANT_NAN_OUTPUT) {
        static const float nan_f = __builtin_nanf("");
        static const double nan_d = __builtin_nan("");
        static const uint16_t nan_f16 = 0x7E00, nan_bf16 = 0x7FC0;
        const void *nan = job->dtype == CBN_FLOAT64   ? (const void *)&nan_d
                          : job->dtype == CBN_FLOAT16 ? (const void *)&nan_f16
                          : job->dtype == CBN_BFLOAT16 ? (const void *)&nan_bf16
                                                       : (const void *)&nan_f;
        memcpy(values, nan, size);
    } else if (job->mutant == CBN_MUTANT_FLIP_LOW_BIT) {
        values[(size_t)(s.n * s.channels * s.spatial - 1) * size] ^= 1;   /* little-endian: the low byte first */
    }
}

void *cbn_line_aligned(size_t count, size_t size) {
    size_t bytes;
    if (__builtin_mul_overflow(count, size, &bytes) || bytes > SIZE_MAX - 63) return NULL;
    return aligned_alloc(64, (bytes + 63) & ~(size_t)63);
}

/// Values before channel 0 in each coefficient row (job.h), so that where a
/// columns walk's rows all fall alike on cache lines, the coefficient vector
/// of the channels at a line of the output `out` starts a line too: the
/// elementwise passes start their vectors at the output's lines (write_run)
/// and load coefficients for each, so that neither tensors nor coefficients
/// then straddle two lines. A vector of sixteen stored values is aligned at
/// a line, or at its own size where that is shorter; a coefficient vector
/// of sixteen T at `compute_bytes` * 16 bytes, a line or two.
static int64_t coefficient_shift(const cbn_plan *plan, int64_t compute_bytes, const void *out) {
    const int64_t element = plan->tuning->element_bytes, unit = 16 * element < 64 ? 16 * element : 64;
    const int64_t past = (int64_t)((uintptr_t)out % (uintptr_t)unit);
    if (!out || plan->walk != CBN_WALK_COLUMNS || plan->shape.channels * element % unit != 0 || past % element != 0)
        return 0;
    const int64_t before = (unit - past) % unit / element;    /* out's values before its first aligned vector */
    const int64_t per_line = 64 / compute_bytes;
    return (per_line - before % per_line) % per_line;
}

/// A job for `plan`, its coefficient rows shifted for the output `out` (the
/// elementwise passes' first: y, dx or dz; NULL where there is none).
static cbn_status allocate_job(cbn_plan plan, cbn_dtype dtype, const void *out, cbn_job **job_out) {
    if (creations_until_failure >= 0 && creations_until_failure-- == 0) return CBN_OUT_OF_MEMORY;
    cbn_job *job = calloc(1, sizeof *job);
    if (!job) return CBN_OUT_OF_MEMORY;
    atomic_init(&job->references, 1);
    size_t partial_count;
    if (__builtin_mul_overflow((size_t)plan.shape.channels, (size_t)plan.parts, &partial_count)) {
        free(job);
        return CBN_OUT_OF_MEMORY;
    }
    /* Not zeroed: every coefficient and every partial result is written by
     * its own step before any step reads it (and zeroing megabytes of
     * partials on each call would cost page faults and a pass of stores). */
    const size_t stride = (size_t)cbn_coefficient_stride(plan.shape.channels);
    const cbn_kernels *kernels = cbn_kernels_for(dtype);
    job->coefficient_shift = coefficient_shift(&plan, kernels->compute_bytes, out);
    const int checked = kernels->checked;
    job->coefficients = cbn_line_aligned(stride * CBN_COEFFICIENTS, kernels->compute_bytes);
    job->wide_coefficients = checked ? cbn_line_aligned(stride * CBN_WIDE_COEFFICIENTS, sizeof(double)) : NULL;
    job->partials = cbn_line_aligned(partial_count, sizeof *job->partials);
    if (!job->coefficients || (checked && !job->wide_coefficients) || !job->partials) {
        cbn_job_destroy(job);
        return CBN_OUT_OF_MEMORY;
    }
    job->plan = plan;
    if (streaming_bytes_override >= 0)
        job->plan.streaming = cbn_plan_streams(plan.shape, plan.tuning->element_bytes, streaming_bytes_override);
    if (prefetch_next_override == 1) {
        job->plan.prefetch_next_item = plan.fused;
        job->plan.joint_loop = cbn_plan_can_join(&plan) && kernels->statistics_beside && kernels->sums_beside;
    }
    job->dtype = dtype;
    job->mutant = next_mutant;
    *job_out = job;
    return CBN_OK;
}

/// Given moments or sums (3 doubles per channel, the count first) count at
/// least `least` values in every channel.
static cbn_status check_given_counts(const double *given, int64_t channels, double least) {
    for (int64_t c = 0; c < channels; c++)
        if (!(given[3 * c] >= least)) return CBN_TOO_FEW_VALUES;
    return CBN_OK;
}

cbn_status cbn_job_create_forward(const cbn_forward_desc *d, cbn_job **job_out) {
    *job_out = NULL;
    const int moments_only = d->moments_out != NULL;
    if (!valid_dtype(d->dtype) || !d->x || (!d->y && !moments_only) || !valid_activation(d->activation))
        return CBN_INVALID_ARGUMENT;
    cbn_status status = check_shape(d->shape, d->dtype);
    if (status != CBN_OK) return status;
    if (!(d->eps >= 0) || !isfinite(d->eps)) return CBN_INVALID_ARGUMENT;
    if (!(d->momentum >= 0 && d->momentum <= 1)) return CBN_INVALID_ARGUMENT;
    if ((d->running_mean == NULL) != (d->running_var == NULL)) return CBN_INVALID_ARGUMENT;
    if ((d->moments_out || d->moments) && (!d->training || (d->moments_out && d->moments)))
        return CBN_INVALID_ARGUMENT;
    /* a slice's moments may count one value: the whole batch's are checked when given */
    if (d->training && !d->moments && !moments_only && d->shape.n * d->shape.spatial < 2)
        return CBN_TOO_FEW_VALUES;
    if (!d->training && !d->running_mean) return CBN_INVALID_ARGUMENT;

    cbn_plan plan = cbn_make_plan(d->shape, cbn_kernels_for(d->dtype)->tuning, 1);
    cbn_job *job;
    if ((status = allocate_job(plan, d->dtype, moments_only ? NULL : d->y, &job)) != CBN_OK) return status;
    job->training = d->training != 0;
    job->x = d->x;
    job->out = d->y;
    job->weight = d->weight;
    job->bias = d->bias;
    job->running_mean = d->running_mean;
    job->running_var = d->running_var;
    job->saved_mean = d->saved_mean;
    job->saved_invstd = d->saved_invstd;
    job->eps = d->eps;
    job->momentum = d->momentum;
    job->residual = d->residual;
    job->epilogue = (d->activation == CBN_ACTIVATION_RELU ? CBN_EPILOGUE_RELU : 0) |
                    (d->residual ? CBN_EPILOGUE_RESIDUAL : 0);
    job->moments_out = d->moments_out;
    job->moments_in = d->moments;

    if (moments_only) {
        /* the statistics pass and the merge of its parts, no y */
        job->out = NULL;
        if (cbn_plan_is_fused(&plan)) {
            job->steps[job->phase_count++] = CBN_STEP_STATISTICS_FUSED;
        } else {
            job->steps[job->phase_count++] = CBN_STEP_STATISTICS;
            job->steps[job->phase_count++] = CBN_STEP_FINALIZE_FORWARD;
        }
    } else if (d->moments) {
        job->steps[job->phase_count++] = CBN_STEP_FINALIZE_FORWARD;
        job->steps[job->phase_count++] = CBN_STEP_NORMALIZE;
    } else if (job->training) {
        if (cbn_plan_is_fused(&plan)) {
            job->steps[job->phase_count++] = CBN_STEP_STATISTICS_FUSED;
        } else {
            job->steps[job->phase_count++] = CBN_STEP_STATISTICS;
            job->steps[job->phase_count++] = CBN_STEP_FINALIZE_FORWARD;
            job->steps[job->phase_count++] = CBN_STEP_NORMALIZE;
        }
    } else {
        cbn_kernels_for(d->dtype)->prepare(job);
        job->steps[job->phase_count++] = CBN_STEP_NORMALIZE;
    }
    *job_out = job;
    return CBN_OK;
}

cbn_status cbn_job_create_backward(const cbn_backward_desc *d, cbn_job **job_out) {
    *job_out = NULL;
    if (!valid_dtype(d->dtype) || !d->dy || !d->mean || !d->invstd) return CBN_INVALID_ARGUMENT;
    if (!valid_activation(d->activation)) return CBN_INVALID_ARGUMENT;
    const int relu = d->activation == CBN_ACTIVATION_RELU;
    /* the mask recomputed from x is a forward's without residual */
    if (relu && !d->y && (!d->x || d->dresidual)) return CBN_INVALID_ARGUMENT;
    cbn_status status = check_shape(d->shape, d->dtype);
    if (status != CBN_OK) return status;
    const int training = d->training != 0;
    if (d->sums_out && d->sums) return CBN_INVALID_ARGUMENT;
    if (d->sums_out && (d->dx || d->dweight || d->dbias || d->dresidual)) return CBN_INVALID_ARGUMENT;
    /* the passes over this slice: given sums leave only dx (and dz) to write */
    const int wants_sums = d->sums_out || (!d->sums && (d->dweight || d->dbias || (training && d->dx)));
    if ((wants_sums || (training && d->dx)) && !d->x) return CBN_INVALID_ARGUMENT;

    /* A fused item keeps x and dy in cache. The budget does not count the
     * mask's y: a fused relu item then holds 1.5 times the bytes, which spills
     * L2 on some shapes, but fusing still won there (Benchmarks/results/tuning.md). */
    cbn_plan plan = cbn_make_plan(d->shape, cbn_kernels_for(d->dtype)->tuning, 2);
    cbn_job *job;
    if ((status = allocate_job(plan, d->dtype, d->dx ? d->dx : d->dresidual, &job)) != CBN_OK) return status;
    job->backward = 1;
    job->training = training;
    job->x = d->x;
    job->dy = d->dy;
    job->out = d->dx;
    job->weight = d->weight;
    job->mean_in = d->mean;
    job->invstd_in = d->invstd;
    job->dweight = d->dweight;
    job->dbias = d->dbias;
    job->y = d->y;
    job->mask_bias = d->bias;
    job->dresidual = d->dresidual;
    job->epilogue = (relu ? (d->y ? CBN_EPILOGUE_RELU : CBN_EPILOGUE_RELU_FROM_X) : 0) |
                    (d->dresidual ? CBN_EPILOGUE_RESIDUAL : 0);
    job->sums_out = d->sums_out;
    job->sums_in = d->sums;
    cbn_kernels_for(d->dtype)->prepare(job);

    if (d->sums) {
        if (d->dweight || d->dbias || d->dx) job->steps[job->phase_count++] = CBN_STEP_FINALIZE_BACKWARD;
        if (d->dx || d->dresidual) job->steps[job->phase_count++] = CBN_STEP_INPUT_GRADIENT;
    } else if (training) {
        if (!wants_sums) {
            /* dz alone (or nothing) asked for: the masked gradient is all there is to write */
            if (d->dresidual) job->steps[job->phase_count++] = CBN_STEP_INPUT_GRADIENT;
        } else if (cbn_plan_is_fused(&plan)) {
            job->steps[job->phase_count++] = CBN_STEP_SUMS_FUSED;
        } else {
            job->steps[job->phase_count++] = CBN_STEP_SUMS;
            job->steps[job->phase_count++] = CBN_STEP_FINALIZE_BACKWARD;
            if (d->dx) job->steps[job->phase_count++] = CBN_STEP_INPUT_GRADIENT;
        }
    } else if (wants_sums) {
        job->steps[job->phase_count++] = d->dx ? CBN_STEP_SUMS_AND_SCALE : CBN_STEP_SUMS;
        job->steps[job->phase_count++] = CBN_STEP_FINALIZE_BACKWARD;
    } else if (d->dx || d->dresidual) {
        job->steps[job->phase_count++] = CBN_STEP_INPUT_GRADIENT;
    }
    /* dz is written by the first pass over dy: the sums when there are any.
     * The dx pass then reads g back from dz, masked already: one tensor (y)
     * fewer than dy and its mask. */
    const int reads_dz = wants_sums && d->dresidual;
    job->gradient_epilogue = reads_dz ? 0 : job->epilogue;
    job->gradient_dy = reads_dz ? d->dresidual : d->dy;
    *job_out = job;
    return CBN_OK;
}

void cbn_inference_statistics(cbn_dtype dtype, int64_t channels, const void *running_mean,
                              const void *running_var, double eps, double *mean_out,
                              double *invstd_out) {
    cbn_kernels_for(dtype)->inference_statistics(channels, running_mean, running_var, eps, mean_out,
                                             invstd_out);
}

cbn_status cbn_job_check_given(const cbn_job *job) {
    const int64_t channels = job->plan.shape.channels;
    if (job->moments_in) return check_given_counts(job->moments_in, channels, 2);
    if (job->sums_in) return check_given_counts(job->sums_in, channels, 1);
    return CBN_OK;
}

void cbn_job_apply_mutant(const cbn_job *job) {
    if (job->mutant != CBN_MUTANT_NAN_OUTPUT && job->mutant != CBN_MUTANT_FLIP_LOW_BIT) return;
    mutate_output(job, job->out);
    if (job->mutant == CBN_MUTANT_FLIP_LOW_BIT) mutate_output(job, job->dresidual);
}
