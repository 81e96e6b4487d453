/*
 * A small driver that runs every kind of job through the OpenMP executor
 * with 3 threads, for valgrind's DRD (which understands OpenMP's threads
 * only through their pthreads and futexes, unlike ThreadSanitizer, which
 * needs an instrumented libomp). See .ci/run.
 */
#include <stdio.h>
#include <stdlib.h>
#include "CBatchNorm.h"

static void run_forward(cbn_shape shape, int training, float *x, float *y, double *mean, double *invstd,
                        float *rm, float *rv) {
    cbn_forward_desc d = {.dtype = CBN_FLOAT32, .shape = shape, .training = training, .x = x, .y = y,
                          .running_mean = rm, .running_var = rv, .saved_mean = training ? mean : NULL,
                          .saved_invstd = training ? invstd : NULL, .eps = 1e-5, .momentum = 0.1};
    cbn_job *job;
    if (cbn_job_create_forward(&d, &job) != CBN_OK) abort();
    int64_t threads = 3;
    if (cbn_job_run(job, cbn_parallel_openmp, &threads, threads) != CBN_OK) abort();
    cbn_job_destroy(job);
}

int main(void) {
    /* long planes split into parts, short planes in channel blocks, columns split into parts,
       channels last with lanes (two channel blocks, several parts) */
    const cbn_shape shapes[] = {{2, 2, 40000, CBN_CHANNELS_FIRST}, {8, 40, 49, CBN_CHANNELS_FIRST},
                                {3000, 70, 1, CBN_CHANNELS_FIRST}, {40, 70, 49, CBN_CHANNELS_LAST}};
    for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
        const cbn_shape s = shapes[k];
        const size_t count = (size_t)(s.n * s.channels * s.spatial), c = (size_t)s.channels;
        float *x = malloc(count * 4), *y = malloc(count * 4), *dy = malloc(count * 4), *dx = malloc(count * 4);
        float *rm = calloc(c, 4), *rv = malloc(c * 4), *dw = malloc(c * 4), *db = malloc(c * 4);
        double *mean = malloc(c * 8), *invstd = malloc(c * 8);
        for (size_t i = 0; i < count; i++) { x[i] = (float)((i * 7919) % 1009) / 300.0f; dy[i] = x[i] - 1.0f; }
        for (size_t i = 0; i < c; i++) rv[i] = 1;
        run_forward(s, 1, x, y, mean, invstd, rm, rv);
        run_forward(s, 0, x, y, mean, invstd, rm, rv);
        for (int training = 0; training < 2; training++) {
            cbn_backward_desc d = {.dtype = CBN_FLOAT32, .shape = s, .training = training, .x = x, .dy = dy,
                                   .mean = mean, .invstd = invstd, .dx = dx, .dweight = dw, .dbias = db};
            cbn_job *job;
            if (cbn_job_create_backward(&d, &job) != CBN_OK) abort();
            int64_t threads = 3;
            if (cbn_job_run(job, cbn_parallel_openmp, &threads, threads) != CBN_OK) abort();
            cbn_job_destroy(job);
        }
        printf("shape %lldx%lldx%lld: y[1] %g dx[1] %g db[0] %g\n", (long long)s.n, (long long)s.channels,
               (long long)s.spatial, y[1], dx[1], db[0]);
        free(x); free(y); free(dy); free(dx); free(rm); free(rv); free(dw); free(db); free(mean); free(invstd);
    }
    printf("openmp available: %d\n", cbn_openmp_available());
    return 0;
}
