/*
 * The C executors. Each runs `work(job)` from some workers and returns when
 * all are done; the items themselves come from the job's shared counter, so
 * an executor decides only how many threads there are, never the numerics.
 * The Dispatch executor lives in Swift and has the same contract.
 */
#define _GNU_SOURCE
#include <limits.h>
#include <sched.h>
#include "CBatchNorm.h"

void cbn_parallel_serial(void *executor_context, void (*work)(cbn_job *job), cbn_job *job,
                         int64_t workers) {
    (void)executor_context;
    (void)workers;
    work(job);
}

void cbn_parallel_openmp(void *executor_context, void (*work)(cbn_job *job), cbn_job *job,
                         int64_t workers) {
    (void)executor_context;
#ifdef _OPENMP
    /* num_threads is per region: no process-wide OpenMP setting is changed. */
    const int threads = workers > INT_MAX ? INT_MAX : (int)workers;
#pragma omp parallel num_threads(threads)
    work(job);
#else
    (void)workers;
    work(job);
#endif
}

int64_t cbn_affinity_cpu_count(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 0;
    return CPU_COUNT(&set);
}

int cbn_openmp_available(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}
