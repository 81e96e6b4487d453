/*
 * The phase driver: running a job's phases with an executor's workers, the
 * worker loop that takes items from the shared counters, and the job's
 * reference count. Type-agnostic, like job.c.
 */
#include <sched.h>
#include <stdlib.h>
#include "job.h"

static int is_finalize(cbn_step step) {
    return step == CBN_STEP_FINALIZE_FORWARD || step == CBN_STEP_FINALIZE_BACKWARD;
}

/// Finalize phases have one item per cbn_plan_finalize_channels channels,
/// elementwise phases the plan's elementwise items, the others its items.
static int is_elementwise(cbn_step step) {
    return step == CBN_STEP_NORMALIZE || step == CBN_STEP_INPUT_GRADIENT;
}

static int64_t items_in_step(const cbn_plan *plan, cbn_step step) {
    const int64_t finalize = cbn_plan_finalize_channels(plan);
    if (is_finalize(step)) return (plan->shape.channels + finalize - 1) / finalize;
    return is_elementwise(step) ? plan->elementwise_items : plan->items;
}

static int is_fused(cbn_step step) {
    return step == CBN_STEP_STATISTICS_FUSED || step == CBN_STEP_SUMS_FUSED;
}

/// Runs item `index` of the phase; a fused one's second pass asks for item
/// `next`'s x as it goes (-1: none).
static void run_item(cbn_job *job, const cbn_kernels *k, cbn_step step, int64_t index, int64_t next,
                     double *scratch) {
    cbn_item item = is_finalize(step)      ? (cbn_item){0, 0, 0, 0, 0, 0}
                    : is_elementwise(step) ? cbn_plan_elementwise_item(&job->plan, index)
                                           : cbn_plan_item(&job->plan, index);
    if (next >= 0)
        item.next = cbn_plan_item_origin(&job->plan, cbn_plan_item(&job->plan, next)) -
                    cbn_plan_item_origin(&job->plan, item);
    switch (step) {
    case CBN_STEP_STATISTICS:
        k->statistics(job, item, scratch);
        break;
    case CBN_STEP_NORMALIZE:
        k->normalize(job, item);
        break;
    case CBN_STEP_STATISTICS_FUSED:
        k->statistics(job, item, scratch);
        k->finalize_forward(job, item.c0, item.c1);
        if (job->out) k->normalize(job, item);   /* no y: the moments alone (moments_out) */
        break;
    case CBN_STEP_SUMS:
        k->sums(job, item, 0, scratch);
        break;
    case CBN_STEP_SUMS_AND_SCALE:
        k->sums(job, item, 1, scratch);
        break;
    case CBN_STEP_INPUT_GRADIENT:
        k->input_gradient(job, item);
        break;
    case CBN_STEP_SUMS_FUSED:
        k->sums(job, item, 0, scratch);
        k->finalize_backward(job, item.c0, item.c1);
        if (job->out) k->input_gradient(job, item);
        break;
    case CBN_STEP_FINALIZE_FORWARD:
    case CBN_STEP_FINALIZE_BACKWARD: {
        const int64_t c0 = index * cbn_plan_finalize_channels(&job->plan);
        const int64_t c1 = cbn_min64(c0 + cbn_plan_finalize_channels(&job->plan), job->plan.shape.channels);
        if (step == CBN_STEP_FINALIZE_FORWARD)
            k->finalize_forward(job, c0, c1);
        else
            k->finalize_backward(job, c0, c1);
        break;
    }
    }
}

/// Spins until done_items[phase] reaches the phase's item count: the items
/// other workers hold are short, but a worker may be descheduled, so after a
/// while the spinning thread yields its core (cbn_wait_step).
static void wait_for_phase(cbn_job *job, int phase) {
    const int64_t items = job->phase_items[phase];
    for (int64_t spins = 0;
         atomic_load_explicit(&job->done_items[phase], memory_order_acquire) < items; spins++)
        cbn_wait_step(spins);
}

/// A fused item's first pass (the statistics or the backward sums) and its
/// finalize, alone (`beside` NULL) or with the second pass of the fused
/// item `beside` in the same loops (the joint loop).
static void first_pass(cbn_job *job, const cbn_kernels *k, cbn_step step, cbn_item item, const cbn_item *beside,
                       double *scratch) {
    if (step == CBN_STEP_STATISTICS_FUSED) {
        if (beside) k->statistics_beside(job, item, *beside, scratch);
        else k->statistics(job, item, scratch);
        k->finalize_forward(job, item.c0, item.c1);
    } else {
        if (beside) k->sums_beside(job, item, *beside, scratch);
        else k->sums(job, item, 0, scratch);
        k->finalize_backward(job, item.c0, item.c1);
    }
}

/// A fused phase in the joint loop (plan.h, joint_loop): the worker's
/// first item gets its first pass alone; each next one's first pass writes
/// the output (y or dx) of the item before in the same loops; the last item
/// gets its second pass alone. An item counts as done once its output is
/// written.
static void run_joint_phase(cbn_job *job, const cbn_kernels *k, cbn_step step, int phase, double *scratch) {
    const int64_t items = job->phase_items[phase];
    int64_t index = atomic_fetch_add_explicit(&job->next_item[phase], 1, memory_order_relaxed);
    if (index >= items) return;
    cbn_item held = cbn_plan_item(&job->plan, index);
    first_pass(job, k, step, held, NULL, scratch);
    while ((index = atomic_fetch_add_explicit(&job->next_item[phase], 1, memory_order_relaxed)) < items) {
        const cbn_item item = cbn_plan_item(&job->plan, index);
        first_pass(job, k, step, item, &held, scratch);
        atomic_fetch_add_explicit(&job->done_items[phase], 1, memory_order_release);
        held = item;
    }
    if (step == CBN_STEP_STATISTICS_FUSED) k->normalize(job, held);
    else k->input_gradient(job, held);
    atomic_fetch_add_explicit(&job->done_items[phase], 1, memory_order_release);
}

void cbn_job_work(cbn_job *job) {
    const cbn_kernels *k = cbn_kernels_for(job->dtype);
    const int64_t slot = atomic_fetch_add_explicit(&job->next_slot, 1, memory_order_relaxed);
    /* More calls than workers asked for: the others finish the job without this one. */
    if (job->scratch && slot >= job->scratch_slots) return;
    double *scratch = job->scratch ? job->scratch + slot * job->scratch_doubles : NULL;
    for (int phase = 0; phase < job->phase_count; phase++) {
        const cbn_step step = job->steps[phase];
        const int64_t items = job->phase_items[phase];
        if (is_fused(step) && job->out && job->plan.joint_loop) {
            run_joint_phase(job, k, step, phase, scratch);
        } else {
            /* Where the plan says so, a fused phase's worker takes its next item
             * before it runs the one it holds, whose second pass then asks for the
             * next one's x: the memory reads it while that pass writes, and the
             * next first pass finds it in the cache. */
            int64_t index = atomic_fetch_add_explicit(&job->next_item[phase], 1, memory_order_relaxed);
            while (index < items) {
                const int64_t next = is_fused(step) && job->plan.prefetch_next_item
                                         ? atomic_fetch_add_explicit(&job->next_item[phase], 1, memory_order_relaxed)
                                         : -1;
                run_item(job, k, step, index, next < items ? next : -1, scratch);
                atomic_fetch_add_explicit(&job->done_items[phase], 1, memory_order_release);
                index = next >= 0 ? next : atomic_fetch_add_explicit(&job->next_item[phase], 1, memory_order_relaxed);
            }
        }
        /* The next phase reads what every item of this one wrote. */
        if (phase + 1 < job->phase_count) wait_for_phase(job, phase);
    }
}

void cbn_job_wait(cbn_job *job) {
    if (job->phase_count > 0) wait_for_phase(job, job->phase_count - 1);
}

/// Whether any phase of the job runs the statistics or the backward sums.
static int job_reduces(const cbn_job *job) {
    for (int phase = 0; phase < job->phase_count; phase++) {
        const cbn_step step = job->steps[phase];
        if (!is_elementwise(step) && !is_finalize(step)) return 1;
    }
    return 0;
}

/// Scratch for `workers` workers, when the plan needs it.
static cbn_status prepare_scratch(cbn_job *job, int64_t workers) {
    atomic_store_explicit(&job->next_slot, 0, memory_order_relaxed);
    if (!cbn_plan_has_column_lanes(&job->plan) || !job_reduces(job)) return CBN_OK;
    const int64_t doubles = 2 * CBN_LANES * job->plan.channel_block;
    if (job->scratch && job->scratch_slots >= workers) return CBN_OK;
    free(job->scratch);
    job->scratch = cbn_line_aligned((size_t)(workers * doubles), sizeof(double));
    job->scratch_doubles = doubles;
    job->scratch_slots = job->scratch ? workers : 0;
    return job->scratch ? CBN_OK : CBN_OUT_OF_MEMORY;
}

cbn_status cbn_job_run(cbn_job *job, cbn_parallel_fn parallel, void *executor_context,
                       int64_t max_workers) {
    /* Given moments and sums are read now, not at creation: a caller may
     * create the job first and fill them in afterwards. */
    cbn_status status = cbn_job_check_given(job);
    if (status != CBN_OK) return status;
    int64_t most_items = 0;
    for (int phase = 0; phase < job->phase_count; phase++) {
        job->phase_items[phase] = items_in_step(&job->plan, job->steps[phase]);
        atomic_store_explicit(&job->next_item[phase], 0, memory_order_relaxed);
        atomic_store_explicit(&job->done_items[phase], 0, memory_order_relaxed);
        if (job->phase_items[phase] > most_items) most_items = job->phase_items[phase];
    }
    int64_t workers = max_workers < most_items ? max_workers : most_items;
    if (workers < 1) workers = 1;
    if ((status = prepare_scratch(job, workers)) != CBN_OK) return status;
    if (workers == 1)
        cbn_job_work(job);
    else
        parallel(executor_context, cbn_job_work, job, workers);
    if (job->mutant != CBN_MUTANT_NONE) cbn_job_apply_mutant(job);
    return CBN_OK;
}

void cbn_job_retain(cbn_job *job) {
    atomic_fetch_add_explicit(&job->references, 1, memory_order_relaxed);
}

void cbn_job_release(cbn_job *job) {
    if (!job) return;
    /* acq_rel: whoever frees the job sees every other holder's last access. */
    if (atomic_fetch_sub_explicit(&job->references, 1, memory_order_acq_rel) != 1) return;
    free(job->coefficients);
    free(job->wide_coefficients);
    free(job->partials);
    free(job->scratch);
    free(job);
}

void cbn_job_destroy(cbn_job *job) { cbn_job_release(job); }

