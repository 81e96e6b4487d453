/*
 * The job: everything one forward or backward call needs while it runs.
 * Internal to the C core; Swift sees only the opaque `cbn_job`.
 */
#ifndef CBN_JOB_H
#define CBN_JOB_H

#include <sched.h>
#include <stdatomic.h>
#include "CBatchNorm.h"
#include "plan/plan.h"
#include "moments.h"

/// What the items of a phase do.
typedef enum cbn_step {
    CBN_STEP_STATISTICS,          ///< forward: per-part moments
    CBN_STEP_NORMALIZE,           ///< forward: y from the channel coefficients
    CBN_STEP_STATISTICS_FUSED,    ///< forward: moments, finalize, normalize
    CBN_STEP_SUMS,                ///< backward: per-part sums of dy and dy*(x - mean)
    CBN_STEP_SUMS_AND_SCALE,      ///< backward inference: sums, and dx = k1*dy in the same pass
    CBN_STEP_INPUT_GRADIENT,      ///< backward: dx from the channel coefficients
    CBN_STEP_SUMS_FUSED,          ///< backward training: sums, finalize, dx
    CBN_STEP_FINALIZE_FORWARD,    ///< per channel block: merge moments in part order, coefficients
    CBN_STEP_FINALIZE_BACKWARD,   ///< per channel block: add sums in part order, gradients, coefficients
} cbn_step;

#define CBN_MAX_PHASES 3

/// The epilogue of the elementwise passes, a set of flags:
///  forward:  y = relu(BN(x) + z) with CBN_EPILOGUE_RELU and CBN_EPILOGUE_RESIDUAL;
///  backward: g = dy masked by y (CBN_EPILOGUE_RELU) or by the y that the
///            forward formula gives from x (CBN_EPILOGUE_RELU_FROM_X, with the
///            mask coefficient rows: the forward of a call without residual),
///            and dz = g written (CBN_EPILOGUE_RESIDUAL).
enum {
    CBN_EPILOGUE_RELU = 1,
    CBN_EPILOGUE_RESIDUAL = 2,
    CBN_EPILOGUE_RELU_FROM_X = 4,
};

/// Per-channel coefficients, in the arithmetic type, that every normalize or
/// dx item reads:
///  forward:  y  = (x - mean_hi) * k1 + k3
///  backward: dx = k1*dy + (k2*(x - mean_hi) + k3)
/// mean_hi is the mean rounded to the arithmetic type; k3 carries the rest
/// of the mean, k3 - (mean - mean_hi)*k1 (forward) or *k2 (backward), formed
/// in double, so that x - mean keeps its low bits on data far from zero at
/// the cost of one subtraction per value. The check rows
/// (written for the checked half formats only) hold the terms of a checked
/// element's error bound (kernels_template.h), divided by its ratio R and
/// rounded up: slack, the part that does not depend on the element,
/// (|k3| + 2^-22 |mean| |k1 (forward) or k2 (backward)|)/R, k3 as stored,
/// and at least 2^-126; bound_k1 |k1|/R and bound_k2 |k2|/R, of k1 and k2
/// as rounded. A backward job whose relu mask is recomputed from x
/// (CBN_EPILOGUE_RELU_FROM_X) also holds the forward formula's k1, k3 and
/// check rows for it, the mask rows (mean_hi is the same mean's).
/// Stored as eleven rows, in this order, of
/// cbn_coefficient_stride(channels) values: the job's coefficient_shift
/// values unused, `channels` values, then sixteen that go on from channel 0
/// again (value c + j*channels repeats channel c), so that sixteen
/// consecutive channels of channels-last rows, wrapping from one row's last
/// channel to the next row's first, load in one piece.
typedef enum cbn_coefficient {
    CBN_MEAN_HI = 0, CBN_K1, CBN_K2, CBN_K3, CBN_SLACK, CBN_BOUND_K1, CBN_BOUND_K2,
    CBN_MASK_K1, CBN_MASK_K3, CBN_MASK_SLACK, CBN_MASK_BOUND_K1, CBN_COEFFICIENTS
} cbn_coefficient;

/// The same in double, for the elements of the half formats that their
/// float arithmetic cannot give to within one unit in the last place
/// (kernels_template.h, CBN_CHECK_RATIO): the mean, k1, k2 and k3 unrounded,
/// and the mask rows' k1 and k3.
typedef enum cbn_wide_coefficient {
    CBN_WIDE_MEAN = 0, CBN_WIDE_K1, CBN_WIDE_K2, CBN_WIDE_K3, CBN_WIDE_MASK_K1, CBN_WIDE_MASK_K3,
    CBN_WIDE_COEFFICIENTS
} cbn_wide_coefficient;

/// `count` values of `size` bytes on whole cache lines of their own: rows
/// that the microkernels load in vectors, and memory that one worker writes
/// without sharing a line with another's. NULL when the size overflows or
/// memory is short. Released with free().
void *cbn_line_aligned(size_t count, size_t size);

/// Values per coefficient row: up to fifteen before channel 0 (the job's
/// coefficient_shift), the channels and sixteen wrapped around, rounded up
/// to a multiple of sixteen, so that every row starts on a cache line (the
/// rows are line-aligned, job.c).
static inline int64_t cbn_coefficient_stride(int64_t channels) { return (15 + channels + 16 + 15) / 16 * 16; }

/// A partial result for one (channel, part): what the statistics pass or
/// the backward sums pass found in the part's values.
typedef union cbn_partial {
    cbn_moments moments;          ///< forward: count, mean and M2 (sum of squared deviations)
    struct {
        double dy;                ///< backward: Σ g, g the masked dy
        double dy_deviation;      ///< backward: Σ g·(x − mean)
    } sums;
} cbn_partial;

struct cbn_job {
    cbn_plan plan;
    cbn_dtype dtype;
    int backward;
    int training;

    /* caller's buffers (element type per dtype) */
    const void *x;
    const void *dy;
    void *out;                      /* y (forward) or dx (backward); may be NULL in backward */
    const void *weight, *bias;
    void *running_mean, *running_var;
    double *saved_mean, *saved_invstd;
    void *dweight, *dbias;
    const double *mean_in, *invstd_in;   /* backward */
    double eps, momentum;
    int epilogue;                        /* CBN_EPILOGUE_* flags */
    int gradient_epilogue;               /* backward: the flags of the dx pass (dz only once) */
    const void *gradient_dy;             /* backward: what the dx pass reads as dy: dy, or dz = g (masked
                                            already) where the sums pass wrote it */
    const void *residual;                /* forward: z */
    const void *y;                       /* backward: the forward output, for the mask */
    const void *mask_bias;               /* backward, CBN_EPILOGUE_RELU_FROM_X: the forward's beta */
    void *dresidual;                     /* backward: dz */
    double *moments_out, *sums_out;      /* across processes: this slice's partials out, 3 per channel */
    const double *moments_in, *sums_in;  /* across processes: the whole batch's, used instead */

    /* job-owned */
    void *coefficients;                  /* CBN_COEFFICIENTS rows (cbn_coefficient_stride) */
    int64_t coefficient_shift;           /* values before channel 0 in each row, wide ones too (job.c) */
    double *wide_coefficients;           /* CBN_WIDE_COEFFICIENTS rows of doubles, the same stride;
                                            only for checked kernels, the half formats (else NULL) */
    cbn_partial *partials;               /* channels * parts, index c*parts + part */

    /* The phases run inside one parallel region: each worker takes items of
     * phase p from next_item[p]; before phase p+1 it waits until done_items[p]
     * reaches phase_items[p]. A worker only ever waits for items that other
     * running workers hold, so the job finishes whatever the number of
     * workers, even if the executor runs them one after another. */
    cbn_step steps[CBN_MAX_PHASES];
    int phase_count;
    int64_t phase_items[CBN_MAX_PHASES];
    _Atomic int64_t next_item[CBN_MAX_PHASES];
    _Atomic int64_t done_items[CBN_MAX_PHASES];

    /* Per-worker scratch (the columns walk's lane accumulators), allocated by
     * cbn_job_run for the workers it asks for; each worker takes a slot when
     * it starts. NULL when the plan needs none. */
    double *scratch;
    int64_t scratch_doubles;             /* per worker */
    int64_t scratch_slots;
    _Atomic int64_t next_slot;

    /* A deliberate fault (cbn_test_mutate_jobs), CBN_MUTANT_NONE but in tests. */
    cbn_test_mutant mutant;

    /* The creator's reference and one per executor helper still to run. */
    _Atomic int64_t references;
};

/// The element-type-specific half of the core: microkernels over one item
/// and the per-channel finalize steps. One table per dtype, generated from
/// microkernels/kernels_template.h.
typedef struct cbn_kernels {
    /// Whether the elementwise results are checked (kernels_template.h,
    /// CBN_CHECK_RATIO): the job then keeps the wide coefficient rows.
    int checked;
    /// Bytes of one value of the arithmetic type (the coefficients'): double
    /// for double, float for the others.
    int64_t compute_bytes;
    /// The element type's size and tuning (plan/tuning.h).
    const cbn_tuning *tuning;
    /// `scratch`: the worker's scratch (job->scratch_doubles), or NULL.
    void (*statistics)(const cbn_job *job, cbn_item item, double *scratch);
    /// The statistics of `item` and, in the same loops, y of the fused item
    /// `beside`, whose coefficients are set (the plan's joint_loop); NULL
    /// for the types that do not compile it (CBN_JOINT_LOOP).
    void (*statistics_beside)(const cbn_job *job, cbn_item item, cbn_item beside, double *scratch);
    void (*normalize)(const cbn_job *job, cbn_item item);
    void (*sums)(const cbn_job *job, cbn_item item, int scale_dy, double *scratch);
    /// The backward sums of `item` (scale_dy 0) and, in the same loops, dx
    /// of the fused item `beside`, whose coefficients are set (the plan's
    /// joint_loop); NULL where statistics_beside is.
    void (*sums_beside)(const cbn_job *job, cbn_item item, cbn_item beside, double *scratch);
    void (*input_gradient)(const cbn_job *job, cbn_item item);
    /// Merges the partials of channels [c0, c1) in part order (or takes the
    /// given moments_in); writes the saved and running statistics and the
    /// coefficients (or only the merged moments, to moments_out).
    void (*finalize_forward)(cbn_job *job, int64_t c0, int64_t c1);
    /// Merges backward partials (or takes the given sums_in); writes
    /// dweight, dbias and the coefficients (or only the merged sums, to
    /// sums_out).
    void (*finalize_backward)(cbn_job *job, int64_t c0, int64_t c1);
    /// Coefficients from statistics known before any pass (inference
    /// forward, and backward before any sums are known).
    void (*prepare)(cbn_job *job);
    /// mean_c = running_mean_c, invstd_c = 1/sqrt(running_var_c + eps).
    void (*inference_statistics)(int64_t channels, const void *running_mean,
                                 const void *running_var, double eps,
                                 double *mean_out, double *invstd_out);
} cbn_kernels;

/// The kernel table of an element type (microkernels/float32.c, ...), which also holds its
/// sizes and tuning; NULL for a value that names no type.
const cbn_kernels *cbn_kernels_for(cbn_dtype dtype);

/// CBN_TOO_FEW_VALUES unless the job's given moments (sums) count at least
/// 2 (1) values in every channel; CBN_OK without them. cbn_job_run checks
/// this first: they are read when the job runs, not when it is created.
cbn_status cbn_job_check_given(const cbn_job *job);

/// Writes the job's output mutant (cbn_test_mutate_jobs) into what it wrote.
void cbn_job_apply_mutant(const cbn_job *job);

extern const cbn_kernels cbn_kernels_f32;
extern const cbn_kernels cbn_kernels_f64;
extern const cbn_kernels cbn_kernels_f16;
extern const cbn_kernels cbn_kernels_bf16;
/// cbn_kernels_bf16, or its twin for AVX-512 BF16 where the processor has it
/// (the same results, bitwise).
const cbn_kernels *cbn_bfloat16_kernels(void);

/// One step of a wait that spins on shared state (`spins` steps so far): a
/// pause at first, then, since the thread awaited may be descheduled, a
/// yield of the core.
static inline void cbn_wait_step(int64_t spins) {
    if (spins < 4096) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    } else {
        sched_yield();
    }
}

#endif /* CBN_JOB_H */
