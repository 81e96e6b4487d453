/*
 * The C executors. Each runs `work(job)` from some workers and returns when
 * all are done; the items themselves come from the job's shared counter, so
 * an executor decides only how many threads there are, never the numerics.
 * The Dispatch executor lives in Swift and has the same contract; its
 * helpers' lingering (below) is here, beside the job's reference count.
 */
#define _GNU_SOURCE
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>
#include "job.h"

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

/*
 * Dispatch helpers that linger. A Dispatch thread takes from tens of
 * microseconds to a millisecond to start; on a short job the caller has done
 * most of the work by then. So a helper that has finished a job keeps its
 * thread for a while (CBN_HELPER_LINGER_NS), waiting for the next, as
 * OpenMP's threads wait between parallel regions; a caller hands its job to
 * the helpers there are first, and starts new ones only for the rest.
 *
 * The board, under one lock, counts the helpers `alive` (started and not
 * yet gone: waking, working or lingering) and the jobs `posted` for them,
 * each holding a reference. Every helper comes back to the board after each
 * job, and leaves only at its deadline with no job posted; so each posted
 * job is taken, as long as no more are posted than there are helpers alive
 * and not already promised one (alive - posted).
 */
enum { CBN_MAX_HELPERS = 64 };
#define CBN_HELPER_LINGER_NS (20 * 1000 * 1000)

typedef struct posted_job {
    cbn_job *job;
    void (*work)(cbn_job *job);
} posted_job;

static struct {
    pthread_mutex_t lock;
    int64_t alive;
    int64_t most_alive;   /* the most ever alive at once, for the tests */
    int64_t posted;
    posted_job jobs[CBN_MAX_HELPERS];
} board = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* board.posted, for a lingering helper to poll without the lock. */
static _Atomic int64_t posted_hint;

int64_t cbn_helpers_offer(cbn_job *job, void (*work)(cbn_job *job), int64_t helpers) {
    if (helpers < 1) return 0;
    pthread_mutex_lock(&board.lock);
    int64_t given = 0;
    for (; given < helpers && board.posted < board.alive; given++) {
        cbn_job_retain(job);
        board.jobs[board.posted++] = (posted_job){job, work};
    }
    atomic_store_explicit(&posted_hint, board.posted, memory_order_relaxed);
    int64_t started = helpers - given;
    if (started > CBN_MAX_HELPERS - board.alive) started = CBN_MAX_HELPERS - board.alive;
    board.alive += started;
    if (board.alive > board.most_alive) board.most_alive = board.alive;
    pthread_mutex_unlock(&board.lock);
    return started;
}

int64_t cbn_test_most_helpers_alive(void) {
    pthread_mutex_lock(&board.lock);
    const int64_t most = board.most_alive;
    pthread_mutex_unlock(&board.lock);
    return most;
}

static int64_t monotonic_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

/// Waits for a posted job until the deadline. Returns 1 with the job (and
/// its reference) in `next`, or 0 having left the board.
static int wait_for_posted_job(posted_job *next) {
    const int64_t deadline = monotonic_ns() + CBN_HELPER_LINGER_NS;
    for (int64_t spins = 0;; spins++) {
        const int expired = spins % 64 == 0 && monotonic_ns() >= deadline;
        if (expired || atomic_load_explicit(&posted_hint, memory_order_relaxed) > 0) {
            pthread_mutex_lock(&board.lock);
            const int taken = board.posted > 0;
            if (taken)
                *next = board.jobs[--board.posted];
            else if (expired)
                board.alive--;
            atomic_store_explicit(&posted_hint, board.posted, memory_order_relaxed);
            pthread_mutex_unlock(&board.lock);
            if (taken || expired) return taken;
        }
        cbn_wait_step(spins);
    }
}

void cbn_helper_run(cbn_job *job, void (*work)(cbn_job *job)) {
    posted_job next = {job, work};
    do {
        next.work(next.job);
        cbn_job_release(next.job);
    } while (wait_for_posted_job(&next));
}

