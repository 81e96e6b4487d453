/*
 * ab_calls: times two builds of the C core call by call, in one process.
 *
 * Each build is a shared library of CSources/CBatchNorm (ab-calls.sh makes
 * them). The program loads both, then runs the same job with A and B in
 * turn, A B B A A B ..., and reports each build's median time and the
 * median of the per-pair ratios A/B (above 1, B is faster) with their
 * quartiles. Neighbouring calls share the machine's state of the moment, so
 * the ratio holds still where whole-process comparisons drift with other
 * tenants' load (ab-compare.sh).
 *
 *   ab_calls LIB_A LIB_B SHAPE LAYOUT MODE DTYPE PAIRS THREADS CACHE [OFFSET [ACTIVATION]]
 *
 * SHAPE NxCxHxW (or NxC); LAYOUT channels-first or channels-last; MODE
 * forward-training, forward-inference or backward (training), or two of
 * them as MODE_A/MODE_B, A's and B's (with LIB_A = LIB_B: what one mode
 * costs over another in one build, forward-training/forward-inference say);
 * DTYPE float,
 * double, float16 or bfloat16; CACHE warm (tensors as the last call left
 * them) or cold (64 MiB written over before each call, outside the timing);
 * OFFSET the bytes past a 4 KiB boundary where every tensor starts, or
 * OFFSET_A/OFFSET_B, each build's (with LIB_A = LIB_B, 48/0 say: what a
 * Swift array's placement costs over a page-aligned one); ACTIVATION none
 * (the default), relu or add-relu, the fused epilogues as bench-threads
 * --activation runs them: add-relu adds a residual z forward, and its
 * backward reads y for the mask and writes dz; relu's backward recomputes
 * the mask from x.
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "CBatchNorm.h"

/// The entry points of one build.
typedef struct build {
    cbn_status (*create_forward)(const cbn_forward_desc *, cbn_job **);
    cbn_status (*create_backward)(const cbn_backward_desc *, cbn_job **);
    cbn_status (*run)(cbn_job *, cbn_parallel_fn, void *, int64_t);
    void (*destroy)(cbn_job *);
    cbn_parallel_fn openmp;
} build;

static void *symbol(void *library, const char *path, const char *name) {
    void *s = dlsym(library, name);
    if (!s) {
        fprintf(stderr, "ab_calls: %s has no %s\n", path, name);
        exit(2);
    }
    return s;
}

static build load(const char *path) {
    void *library = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!library) {
        fprintf(stderr, "ab_calls: %s\n", dlerror());
        exit(2);
    }
    build b;
    b.create_forward = (cbn_status (*)(const cbn_forward_desc *, cbn_job **))symbol(library, path, "cbn_job_create_forward");
    b.create_backward = (cbn_status (*)(const cbn_backward_desc *, cbn_job **))symbol(library, path, "cbn_job_create_backward");
    b.run = (cbn_status (*)(cbn_job *, cbn_parallel_fn, void *, int64_t))symbol(library, path, "cbn_job_run");
    b.destroy = (void (*)(cbn_job *))symbol(library, path, "cbn_job_destroy");
    b.openmp = (cbn_parallel_fn)symbol(library, path, "cbn_parallel_openmp");
    return b;
}

/// The tensors and parameters of one job, shared by both builds.
typedef struct tensors {
    void *x, *y, *dy, *dx, *z, *dz, *weight, *bias, *running_mean, *running_var, *dweight, *dbias;
    double *mean, *invstd;
} tensors;

/// Bytes past a 4 KiB boundary where each build's tensors start (argv[10],
/// OFFSET or OFFSET_A/OFFSET_B; 0 by default). Both builds' tensors lie in
/// the same memory, B's (offset[1] - offset[0]) bytes past A's, so that a
/// warm call of either finds the other's lines in the cache.
static size_t tensor_offset[2];

/// Memory for a tensor of `bytes` at each build's offset (view[0], view[1]),
/// zeroed; returns where the memory starts, on a 4 KiB boundary, which the
/// views lie within.
static unsigned char *allocate(size_t bytes, void *view[2]) {
    const size_t most = tensor_offset[0] > tensor_offset[1] ? tensor_offset[0] : tensor_offset[1];
    const size_t total = (bytes + most + 4095) / 4096 * 4096;
    unsigned char *p = aligned_alloc(4096, total);
    if (!p) {
        fprintf(stderr, "ab_calls: out of memory\n");
        exit(2);
    }
    memset(p, 0, total);
    view[0] = p + tensor_offset[0];
    view[1] = p + tensor_offset[1];
    return p;
}

/// Memory for a tensor of `bytes` (allocate), its two builds' views in *a
/// and *b; returns where the memory starts.
static unsigned char *views_of(size_t bytes, void **a, void **b) {
    void *view[2];
    unsigned char *p = allocate(bytes, view);
    *a = view[0];
    *b = view[1];
    return p;
}

/// Stores v as element i of a tensor of `dtype`.
static void put(void *tensor, cbn_dtype dtype, size_t i, double v) {
    switch (dtype) {
    case CBN_FLOAT32: ((float *)tensor)[i] = (float)v; break;
    case CBN_FLOAT64: ((double *)tensor)[i] = v; break;
    case CBN_FLOAT16: ((_Float16 *)tensor)[i] = (_Float16)v; break;
    default: {    /* bfloat16: a float's upper half */
        const float f = (float)v;
        uint32_t bits;
        memcpy(&bits, &f, sizeof bits);
        ((uint16_t *)tensor)[i] = (uint16_t)(bits >> 16);
    }
    }
}

/// Both builds' tensors (t[0] A's, t[1] B's), in shared memory (allocate).
/// x, dy, z and y hold patterns from the memory's start, so that each build's
/// view sees the same kind of values, shifted by its offset.
static void make_tensors(cbn_dtype dtype, size_t count, size_t channels, tensors t[2]) {
    const size_t size = dtype == CBN_FLOAT64 ? 8 : dtype == CBN_FLOAT32 ? 4 : 2;
    const cbn_dtype param = dtype == CBN_FLOAT64 ? CBN_FLOAT64 : CBN_FLOAT32;
    const size_t param_size = param == CBN_FLOAT64 ? 8 : 4;
    const size_t most = tensor_offset[0] > tensor_offset[1] ? tensor_offset[0] : tensor_offset[1];
    const size_t filled = count + most / size;
    /* A tensor of `bytes` for both builds: its field in t[0] and t[1], and where its memory starts. */
#define CBN_TENSOR(field, bytes) views_of(bytes, (void **)&t[0].field, (void **)&t[1].field)
    unsigned char *x = CBN_TENSOR(x, count * size), *dy = CBN_TENSOR(dy, count * size);
    unsigned char *y = CBN_TENSOR(y, count * size), *z = CBN_TENSOR(z, count * size);
    CBN_TENSOR(dx, count * size);
    CBN_TENSOR(dz, count * size);
    CBN_TENSOR(weight, channels * param_size);
    CBN_TENSOR(bias, channels * param_size);
    CBN_TENSOR(running_mean, channels * param_size);
    CBN_TENSOR(running_var, channels * param_size);
    CBN_TENSOR(dweight, channels * param_size);
    CBN_TENSOR(dbias, channels * param_size);
    CBN_TENSOR(mean, channels * sizeof(double));
    CBN_TENSOR(invstd, channels * sizeof(double));
#undef CBN_TENSOR
    /* z takes dy's pattern; y, which add-relu's backward reads for its mask, one of both signs */
    for (size_t i = 0; i < filled; i++) {
        put(x, dtype, i, (double)((i * 7919) % 1009) / 300.0);
        put(dy, dtype, i, (double)((i * 104729) % 1013) / 500.0 - 1.0);
        put(z, dtype, i, (double)((i * 104729) % 1013) / 500.0 - 1.0);
        put(y, dtype, i, (double)((i * 7919) % 1013) / 500.0 - 1.0);
    }
    for (int which = 0; which < 2; which++) {
        for (size_t c = 0; c < channels; c++) {
            put(t[which].weight, param, c, 1.0 + (double)(c % 7) / 8.0);
            put(t[which].bias, param, c, (double)(c % 5) / 4.0);
            put(t[which].running_var, param, c, 1.0);
            t[which].mean[c] = 1.6;
            t[which].invstd[c] = 3.4;
        }
    }
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/// The fused epilogue of every call (argv[11]).
typedef enum epilogue { EPILOGUE_NONE, EPILOGUE_RELU, EPILOGUE_ADD_RELU } epilogue;

/// Runs one job of `mode` with build b and returns its time in ms.
static double time_call(const build *b, const char *mode, cbn_dtype dtype, cbn_shape shape, const tensors *t,
                        epilogue e, int64_t threads) {
    const cbn_activation activation = e == EPILOGUE_NONE ? CBN_ACTIVATION_IDENTITY : CBN_ACTIVATION_RELU;
    const int residual = e == EPILOGUE_ADD_RELU;
    const double start = now_ms();
    cbn_job *job = NULL;
    cbn_status status;
    if (strcmp(mode, "backward") == 0) {
        const cbn_backward_desc d = {.dtype = dtype, .shape = shape, .training = 1, .x = t->x, .dy = t->dy,
                                     .weight = t->weight, .mean = t->mean, .invstd = t->invstd, .dx = t->dx,
                                     .dweight = t->dweight, .dbias = t->dbias, .activation = activation,
                                     .y = residual ? t->y : NULL, .bias = t->bias,
                                     .dresidual = residual ? t->dz : NULL};
        status = b->create_backward(&d, &job);
    } else {
        const int training = strcmp(mode, "forward-training") == 0;
        const cbn_forward_desc d = {.dtype = dtype, .shape = shape, .training = training, .x = t->x, .y = t->y,
                                    .weight = t->weight, .bias = t->bias, .running_mean = t->running_mean,
                                    .running_var = t->running_var, .saved_mean = training ? t->mean : NULL,
                                    .saved_invstd = training ? t->invstd : NULL, .eps = 1e-5, .momentum = 0.1,
                                    .residual = residual ? t->z : NULL, .activation = activation};
        status = b->create_forward(&d, &job);
    }
    if (status == CBN_OK) status = b->run(job, b->openmp, &threads, threads);
    if (status != CBN_OK) {
        fprintf(stderr, "ab_calls: the job failed with status %d\n", (int)status);
        exit(1);
    }
    b->destroy(job);
    return now_ms() - start;
}

static int compare(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/// The q-quantile (0 <= q <= 1) of v[0, n), sorted in place: the nearest rank.
static double quantile(double *v, int n, double q) {
    qsort(v, (size_t)n, sizeof *v, compare);
    return v[(int)(q * (n - 1) + 0.5)];
}

int main(int argc, char **argv) {
    if (argc < 10 || argc > 12) {
        fprintf(stderr, "usage: ab_calls LIB_A LIB_B SHAPE LAYOUT MODE DTYPE PAIRS THREADS CACHE [OFFSET[/OFFSET_B] "
                        "[none|relu|add-relu]]\n");
        return 2;
    }
    epilogue e = EPILOGUE_NONE;
    if (argc == 12) {
        if (strcmp(argv[11], "relu") == 0) e = EPILOGUE_RELU;
        else if (strcmp(argv[11], "add-relu") == 0) e = EPILOGUE_ADD_RELU;
        else if (strcmp(argv[11], "none") != 0) {
            fprintf(stderr, "ab_calls: unknown activation %s (none, relu or add-relu)\n", argv[11]);
            return 2;
        }
    }
    if (argc >= 11) {
        long long a = 0, b = 0;
        const int given = sscanf(argv[10], "%lld/%lld", &a, &b);
        if (given == 1) b = a;
        if (given < 1 || a < 0 || b < 0 || a >= 4096 || b >= 4096 || a % 8 != 0 || b % 8 != 0) {
            fprintf(stderr, "ab_calls: each tensor offset must be a multiple of 8 below 4096\n");
            return 2;
        }
        tensor_offset[0] = (size_t)a;
        tensor_offset[1] = (size_t)b;
    }
    const build builds[2] = {load(argv[1]), load(argv[2])};
    long long dims[4] = {1, 1, 1, 1};
    const int rank = sscanf(argv[3], "%lldx%lldx%lldx%lld", &dims[0], &dims[1], &dims[2], &dims[3]);
    const cbn_shape shape = {dims[0], dims[1], dims[2] * dims[3],
                             strcmp(argv[4], "channels-last") == 0 ? CBN_CHANNELS_LAST : CBN_CHANNELS_FIRST};
    char modes[2][32];
    if (sscanf(argv[5], "%31[^/]/%31s", modes[0], modes[1]) != 2) {
        snprintf(modes[0], sizeof modes[0], "%s", argv[5]);
        snprintf(modes[1], sizeof modes[1], "%s", argv[5]);
    }
    const cbn_dtype dtype = strcmp(argv[6], "double") == 0     ? CBN_FLOAT64
                            : strcmp(argv[6], "float16") == 0  ? CBN_FLOAT16
                            : strcmp(argv[6], "bfloat16") == 0 ? CBN_BFLOAT16
                                                                : CBN_FLOAT32;
    for (int which = 0; which < 2; which++) {
        if (strcmp(modes[which], "forward-training") != 0 && strcmp(modes[which], "forward-inference") != 0 &&
            strcmp(modes[which], "backward") != 0) {
            fprintf(stderr, "ab_calls: unknown mode %s\n", modes[which]);
            return 2;
        }
    }
    const int pairs = atoi(argv[7]);
    const int64_t threads = atoll(argv[8]);
    const int cold = strcmp(argv[9], "cold") == 0;
    if (rank < 2 || shape.n < 1 || shape.channels < 1 || shape.spatial < 1 || pairs < 4 || threads < 1) {
        fprintf(stderr, "ab_calls: bad shape, pair count (at least 4) or thread count\n");
        return 2;
    }
    const size_t count = (size_t)(shape.n * shape.channels * shape.spatial);
    tensors t[2];
    make_tensors(dtype, count, (size_t)shape.channels, t);
    const size_t flush_bytes = (size_t)64 << 20;
    void *unused[2];
    unsigned char *flush = cold ? allocate(flush_bytes, unused) : NULL;

    double *times[2] = {malloc(sizeof(double) * (size_t)pairs), malloc(sizeof(double) * (size_t)pairs)};
    double *ratios = malloc(sizeof(double) * (size_t)pairs);
    /* Two pairs of warm-up, then A B, B A, A B, ... */
    for (int pair = -2; pair < pairs; pair++) {
        double ms[2];
        for (int turn = 0; turn < 2; turn++) {
            const int which = (pair & 1) ? 1 - turn : turn;
            if (flush) memset(flush, pair * 2 + turn, flush_bytes);
            ms[which] = time_call(&builds[which], modes[which], dtype, shape, &t[which], e, threads);
        }
        if (pair < 0) continue;
        times[0][pair] = ms[0];
        times[1][pair] = ms[1];
        ratios[pair] = ms[0] / ms[1];
    }
    const char *activation = e == EPILOGUE_NONE ? "" : e == EPILOGUE_RELU ? " relu" : " add-relu";
    printf("%s %s %s %s %s%s  A %.3f ms  B %.3f ms  A/B %.3f (quartiles %.3f-%.3f)\n", argv[3], argv[4], argv[6],
           argv[9], argv[5], activation, quantile(times[0], pairs, 0.5), quantile(times[1], pairs, 0.5),
           quantile(ratios, pairs, 0.5), quantile(ratios, pairs, 0.25), quantile(ratios, pairs, 0.75));
    return 0;
}
