/*
 * libFuzzer target over the C core's entry points.
 *
 * The input decodes into a call: element type (float, double, binary16,
 * bfloat16), mode, shape (sometimes hundreds of channels of short planes)
 * and memory layout (sometimes invalid), the epilogue (relu, a residual z and its
 * gradient dz, the forward output y that backward masks with), the
 * partials of batch norm across processes (moments_out/moments,
 * sums_out/sums, fuzzed or both at once), which optional buffers are present
 * and whether outputs alias inputs, epsilon and momentum (sometimes
 * invalid), the executor, and data
 * drawn from classes that include NaN, ±Inf, zeros, subnormals, huge and
 * tiny values. Each call is checked for:
 *   - no crash and no out-of-bounds access (ASan, UBSan);
 *   - no write outside any output's extent (guard values around each buffer);
 *   - no write at all when the call is rejected;
 *   - finite outputs when every input is finite and moderate and eps >= 1e-5;
 *   - agreement with a float64 reference on moderate data (y, and dx, dγ,
 *     dβ and dz from the given mean and invstd);
 *   - bitwise agreement between the serial executor, OpenMP and the Dispatch
 *     executor's lingering helpers (here on threads of their own), with 1 to
 *     4 workers and every buffer placed 24 bytes further past a cache line
 *     (the input sets the first run's placement), the latter two sometimes with every output streamed
 *     (non-temporal stores, through the test hook; a NaN may then differ in
 *     sign and payload), the helpers with every fused item asking for the
 *     next item's x (another test hook);
 *   - a call split as one rank of batch norm across processes (this slice's
 *     partials, then the call with them as the whole batch's: forward
 *     training, backward in both modes) writes the same bits as the plain
 *     call (a NaN may differ in sign and payload), and its first half writes
 *     nothing but them;
 *   - backward with relu and no y (the mask recomputed from x) writes the
 *     same bits as the call given the y that a forward writes with the same
 *     statistics (those of the running statistics, so that a forward call
 *     can take them), a NaN's sign and payload aside.
 * Build and run: Hardening/run-fuzzer.sh [seconds].
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "CBatchNorm.h"

#define GUARD 8
#define SENTINEL 12345.0

typedef struct { const uint8_t *p; size_t n; } reader;

static uint8_t next_byte(reader *r) {
    if (r->n == 0) return 0x5a;
    r->n--;
    return *r->p++;
}

/* A value of one of eight classes; `moderate` is cleared by the extreme ones. */
static double next_value(reader *r, int *moderate) {
    const uint8_t cls = next_byte(r), v = next_byte(r);
    switch (cls % 16) {
    case 0: *moderate = 0; return NAN;
    case 1: *moderate = 0; return (v & 1) ? INFINITY : -INFINITY;
    case 2: return 0.0;
    case 3: *moderate = 0; return (v + 1) * 1e-42;             /* float subnormals */
    case 4: *moderate = 0; return ((int)v - 128) * 1e28;       /* near ±1e30 */
    case 5: return ((int)v - 128) * 1e-30;                     /* tiny, but normal */
    case 6: return 1e4 + ((int)v - 128) / 128.0;               /* shifted */
    default: return ((int)v - 128) / 32.0;                     /* ordinary */
    }
}

/* Element kinds: the dtypes' storage (f32, f64, binary16, bfloat16). */
enum { KIND_F32, KIND_F64, KIND_F16, KIND_BF16 };

static size_t kind_size(int kind) { return kind == KIND_F64 ? 8 : kind == KIND_F32 ? 4 : 2; }

static uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if (f != f) return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}
static float from_bf16(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

typedef struct {
    unsigned char *data;   /* GUARD + count + GUARD elements of `kind` */
    size_t count;
    int kind;
    unsigned char *allocation;   /* on a cache line; data lies `placement` bytes past it */
} buffer;

static void store(unsigned char *at, int kind, double v) {
    switch (kind) {
    case KIND_F64: memcpy(at, &v, 8); break;
    case KIND_F32: { float f = (float)v; memcpy(at, &f, 4); break; }
    case KIND_F16: { _Float16 h = (_Float16)(float)v; memcpy(at, &h, 2); break; }
    default: { uint16_t b = to_bf16((float)v); memcpy(at, &b, 2); break; }
    }
}
static double load(const unsigned char *at, int kind) {
    switch (kind) {
    case KIND_F64: { double v; memcpy(&v, at, 8); return v; }
    case KIND_F32: { float f; memcpy(&f, at, 4); return f; }
    case KIND_F16: { _Float16 h; memcpy(&h, at, 2); return (double)(float)h; }
    default: { uint16_t b; memcpy(&b, at, 2); return from_bf16(b); }
    }
}
/* What SENTINEL becomes in `kind`. */
static double sentinel(int kind) {
    unsigned char at[8];
    store(at, kind, SENTINEL);
    return load(at, kind);
}

/* `placement` bytes past a cache line (a multiple of 8 below 64): how the
 * buffer's rows fall on lines, which sets where the kernels' vectors start
 * (and a columns job's coefficient shift), never what they compute. */
static buffer make_buffer(size_t count, int kind, size_t placement) {
    const size_t bytes = placement + (count + 2 * GUARD) * kind_size(kind);
    buffer b = { NULL, count, kind, aligned_alloc(64, (bytes + 63) / 64 * 64) };
    b.data = b.allocation + placement;
    for (size_t i = 0; i < count + 2 * GUARD; i++) store(b.data + i * kind_size(kind), kind, SENTINEL);
    return b;
}
static void release(buffer *b) { free(b->allocation); }
static void *base(buffer *b) { return b->data + GUARD * kind_size(b->kind); }
static double get(const buffer *b, size_t i) { return load(b->data + (GUARD + i) * kind_size(b->kind), b->kind); }
static void set(buffer *b, size_t i, double v) { store(b->data + (GUARD + i) * kind_size(b->kind), b->kind, v); }
static int guards_intact(const buffer *b) {
    const double guard = sentinel(b->kind);
    for (size_t i = 0; i < GUARD; i++) {
        const double lo = load(b->data + i * kind_size(b->kind), b->kind);
        const double hi = load(b->data + (GUARD + b->count + i) * kind_size(b->kind), b->kind);
        if (lo != guard || hi != guard) return 0;
    }
    return 1;
}
static int same_bits(const buffer *a, const buffer *b) {
    return memcmp(a->data, b->data, (a->count + 2 * GUARD) * kind_size(a->kind)) == 0;
}
/* The same bits, except that a NaN matches any NaN. IEEE 754 leaves open
 * which operand's NaN a product of two NaNs returns, and the compiler may
 * order a product's operands differently in two code paths (the split call's
 * dx pass and the plain call's sums pass multiply k1 = -inf * 0 and a NaN dy
 * in opposite orders): the sign and payload of a NaN output are not part of
 * what two different paths promise. */
static int same_values(const buffer *a, const buffer *b) {
    const size_t size = kind_size(a->kind);
    for (size_t i = 0; i < a->count + 2 * GUARD; i++) {
        const unsigned char *p = a->data + i * size, *q = b->data + i * size;
        if (memcmp(p, q, size) != 0 && !(isnan(load(p, a->kind)) && isnan(load(q, b->kind)))) return 0;
    }
    return 1;
}
static buffer copy_buffer(const buffer *b, size_t placement) {
    buffer c = make_buffer(b->count, b->kind, placement);
    memcpy(c.data, b->data, (b->count + 2 * GUARD) * kind_size(b->kind));
    return c;
}

#define CHECK(cond, what)                                                        \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "fuzz_batchnorm: invariant failed: %s\n", what);     \
            abort();                                                             \
        }                                                                        \
    } while (0)

enum { X, DY, Y, DX, WEIGHT, BIAS, RMEAN, RVAR, DWEIGHT, DBIAS, SMEAN, SINVSTD, Z, DZ, POUT, PIN, BUFFERS };

/* Partials across processes: none, this slice's out, the whole batch's in, both (invalid). */
enum { PARTIALS_NONE, PARTIALS_OUT, PARTIALS_IN, PARTIALS_BOTH };

typedef struct {
    int kind, training, backward, in_place, dx_aliases_dy, relu, partials, streamed;
    int has[BUFFERS];
    cbn_shape shape;
    double eps, momentum;
} call;

static cbn_dtype dtype_of(int kind) {
    return kind == KIND_F64 ? CBN_FLOAT64 : kind == KIND_F16 ? CBN_FLOAT16 : kind == KIND_BF16 ? CBN_BFLOAT16 : CBN_FLOAT32;
}

/* The Dispatch executor's scheme on plain threads: the lingering helpers
 * (cbn_helpers_offer, cbn_helper_run), and a new thread for each helper
 * still wanted. */
typedef struct { cbn_job *job; void (*work)(cbn_job *job); } helper_start;

static void *helper_thread(void *argument) {
    helper_start start = *(helper_start *)argument;
    free(argument);
    cbn_helper_run(start.job, start.work);
    return NULL;
}

static void parallel_helpers(void *context, void (*work)(cbn_job *job), cbn_job *job, int64_t workers) {
    (void)context;
    const int64_t started = cbn_helpers_offer(job, work, workers - 1);
    for (int64_t i = 0; i < started; i++) {
        cbn_job_retain(job);
        helper_start *start = malloc(sizeof *start);
        pthread_t thread;
        if (!start) abort();
        *start = (helper_start){job, work};
        if (pthread_create(&thread, NULL, helper_thread, start) != 0) abort();
        pthread_detach(thread);
    }
    work(job);
    cbn_job_wait(job);
}

typedef enum { SERIAL, OPENMP, HELPERS } executor_kind;

/* Runs the call on copies of `in` with the given executor; returns the status. */
static cbn_status run(const call *k, buffer *b, executor_kind executor, int threads) {
    cbn_job *job = NULL;
    cbn_status status;
    double *saved_mean = k->has[SMEAN] ? base(&b[SMEAN]) : NULL;
    double *saved_invstd = k->has[SINVSTD] ? base(&b[SINVSTD]) : NULL;
    if (!k->backward) {
        cbn_forward_desc d = {
            .dtype = dtype_of(k->kind), .shape = k->shape, .training = k->training,
            .x = base(&b[X]), .y = k->in_place ? base(&b[X]) : base(&b[Y]),
            .weight = k->has[WEIGHT] ? base(&b[WEIGHT]) : NULL, .bias = k->has[BIAS] ? base(&b[BIAS]) : NULL,
            .running_mean = k->has[RMEAN] ? base(&b[RMEAN]) : NULL,
            .running_var = k->has[RVAR] ? base(&b[RVAR]) : NULL,
            .saved_mean = saved_mean, .saved_invstd = saved_invstd, .eps = k->eps, .momentum = k->momentum,
            .residual = k->has[Z] ? base(&b[Z]) : NULL,
            .activation = k->relu ? CBN_ACTIVATION_RELU : CBN_ACTIVATION_IDENTITY,
            .moments_out = k->partials & PARTIALS_OUT ? base(&b[POUT]) : NULL,
            .moments = k->partials & PARTIALS_IN ? base(&b[PIN]) : NULL,
        };
        status = cbn_job_create_forward(&d, &job);
    } else {
        cbn_backward_desc d = {
            .dtype = dtype_of(k->kind), .shape = k->shape, .training = k->training,
            .x = base(&b[X]), .dy = base(&b[DY]), .weight = k->has[WEIGHT] ? base(&b[WEIGHT]) : NULL,
            .mean = base(&b[SMEAN]), .invstd = base(&b[SINVSTD]),
            .dx = k->has[DX] ? (k->dx_aliases_dy ? base(&b[DY]) : base(&b[DX])) : NULL,
            .dweight = k->has[DWEIGHT] ? base(&b[DWEIGHT]) : NULL,
            .dbias = k->has[DBIAS] ? base(&b[DBIAS]) : NULL,
            .activation = k->relu ? CBN_ACTIVATION_RELU : CBN_ACTIVATION_IDENTITY,
            .y = k->has[Y] ? base(&b[Y]) : NULL,
            .bias = k->has[BIAS] ? base(&b[BIAS]) : NULL,
            .dresidual = k->has[DZ] ? base(&b[DZ]) : NULL,
            .sums_out = k->partials & PARTIALS_OUT ? base(&b[POUT]) : NULL,
            .sums = k->partials & PARTIALS_IN ? base(&b[PIN]) : NULL,
        };
        if (k->partials == PARTIALS_OUT && k->has[PIN]) {
            /* the first half of a split call asks for the sums alone */
            d.dx = d.dweight = d.dbias = d.dresidual = NULL;
        }
        status = cbn_job_create_backward(&d, &job);
    }
    if (status != CBN_OK) {
        CHECK(job == NULL, "a rejected call returned a job");
        return status;
    }
    if (executor == OPENMP) status = cbn_job_run(job, cbn_parallel_openmp, NULL, threads);
    else if (executor == HELPERS) status = cbn_job_run(job, parallel_helpers, NULL, threads);
    else status = cbn_job_run(job, cbn_parallel_serial, NULL, 1);
    /* a job runs unless given moments or sums count too few values, which it reads when it runs */
    CHECK(status == CBN_OK || (status == CBN_TOO_FEW_VALUES && (k->partials & PARTIALS_IN)),
          "the job could not run");
    cbn_job_destroy(job);
    return status;
}

/* The absolute error a result may carry where it underflows, where every
 * rounding is absolute: in the half formats one unit at zero, their smallest
 * subnormal (the one-ulp guarantee: a bfloat16 y of 1e-58 is a signed zero);
 * in float four of its smallest subnormals (up to four roundings in float,
 * each of at most half of one); 1e-300 in double. The parameters' gradients
 * are float for every kind but double. */
static double underflow_floor(int kind) {
    return kind == KIND_F64 ? 1e-300 : kind == KIND_F16 ? 0x1p-24 : kind == KIND_BF16 ? 0x1p-133 : 4 * 0x1p-149;
}

/* Where x[n][c][s] lies in the call's layout. */
static size_t at(const call *k, int64_t n, int64_t c, int64_t s) {
    const int64_t C = k->shape.channels, S = k->shape.spatial;
    return (size_t)(k->shape.layout == CBN_CHANNELS_LAST ? (n * S + s) * C + c : (n * C + c) * S + s);
}

/* y against a float64 reference written from the formulas, normwise:
 * max |y - y_ref| / max(|y_ref|, |γ x̂|, |β|) <= 1e-6 (float) or 1e-12
 * (double), the bounds the Swift tests assert (the terms' size enters because
 * fuzzed γ x̂ and β may cancel). */
static void check_forward_against_reference(const call *k, buffer *before, buffer *after) {
    const int64_t N = k->shape.n, C = k->shape.channels, S = k->shape.spatial;
    const buffer *y = k->in_place ? &after[X] : &after[Y];
    double max_diff = 0, max_ref = 0;
    for (int64_t c = 0; c < C; c++) {
        double mean, var;
        if (k->training) {
            double sum = 0, sq = 0;
            for (int64_t n = 0; n < N; n++)
                for (int64_t s = 0; s < S; s++) sum += get(&before[X], at(k, n, c, s));
            mean = sum / (double)(N * S);
            for (int64_t n = 0; n < N; n++)
                for (int64_t s = 0; s < S; s++) {
                    const double d = get(&before[X], at(k, n, c, s)) - mean;
                    sq += d * d;
                }
            var = sq / (double)(N * S);
        } else {
            mean = get(&before[RMEAN], (size_t)c);
            var = get(&before[RVAR], (size_t)c);
        }
        const double r = 1.0 / sqrt(var + k->eps);
        const double gamma = k->has[WEIGHT] ? get(&before[WEIGHT], (size_t)c) : 1.0;
        const double beta = k->has[BIAS] ? get(&before[BIAS], (size_t)c) : 0.0;
        for (int64_t n = 0; n < N; n++)
            for (int64_t s = 0; s < S; s++) {
                const size_t i = at(k, n, c, s);
                const double term = gamma * (get(&before[X], i) - mean) * r;
                const double z = k->has[Z] ? get(&before[Z], i) : 0.0;
                double want = term + beta + z;
                if (k->relu && !(want > 0)) want = 0;
                /* With relu, a value within rounding of 0 may land on either side. */
                const double got = get(y, i);
                const double diff = k->relu && got == 0 ? fmin(fabs(want), fabs(term + beta + z)) : fabs(got - want);
                max_diff = fmax(max_diff, diff);
                /* normwise against the size of the terms, which may cancel */
                max_ref = fmax(max_ref, fmax(fabs(want), fmax(fabs(term), fmax(fabs(beta), fabs(z)))));
            }
    }
    /* the half formats: y is rounded once to 11 (binary16) or 8 (bfloat16)
     * significant bits, half an ulp, plus float arithmetic before it */
    const double bound = k->kind == KIND_F64 ? 1e-12 : k->kind == KIND_F32 ? 1e-6 : k->kind == KIND_F16 ? 1e-3 : 8e-3;
    CHECK(max_diff <= bound * max_ref + underflow_floor(k->kind), "y differs from the float64 reference");
}

/* The backward outputs against a float64 reference written from the
 * formulas, with the given (fuzzed) mean and invstd: g = dy, +0 where relu's
 * y <= 0; x̂ = (x - mean) invstd; dβ = Σ g, dγ = Σ g x̂; dx = γ invstd (g -
 * dβ/m - x̂ dγ/m) in training, γ invstd g in inference; dz = g. Normwise
 * against the size of the terms, which may cancel: dx within `bound` of
 * max |γ invstd| (|g| + Σ|g|/m + |x̂| Σ|g x̂|/m), dγ and dβ of Σ|g x̂| and
 * Σ|g|. The bounds are the y bounds (the Swift tests' for gradients in
 * float, 5e-6), but 1e-11 in double: this reference sums m values one by
 * one, which may err by m 2^-53 of the absolute sums (m up to 36000 here).
 * A half-format dx beyond the format's largest value must be infinite. */
/* g at element i: dy, +0 where relu's y <= 0 (a NaN y lets dy pass). */
static double masked_gradient(const call *k, const buffer *before, size_t i) {
    const double y = k->relu ? get(&before[Y], i) : 1.0;
    return y > 0 || isnan(y) ? get(&before[DY], i) : 0.0;
}

static void check_backward_against_reference(const call *k, buffer *before, buffer *after) {
    const int64_t N = k->shape.n, C = k->shape.channels, S = k->shape.spatial;
    const double m = (double)(N * S);
    const double bound = k->kind == KIND_F64 ? 1e-11 : k->kind == KIND_F32 ? 5e-6 : k->kind == KIND_F16 ? 1e-3 : 8e-3;
    const double largest = k->kind == KIND_F16 ? 65504.0 : k->kind == KIND_BF16 ? 0x1.fep127 : INFINITY;
    const double parameter_floor = underflow_floor(k->kind == KIND_F64 ? KIND_F64 : KIND_F32);
    const buffer *dx = k->dx_aliases_dy ? &after[DY] : &after[DX];
    double dx_diff = 0, dx_scale = 0, dz_diff = 0;
    for (int64_t c = 0; c < C; c++) {
        const double mean = get(&before[SMEAN], (size_t)c), invstd = get(&before[SINVSTD], (size_t)c);
        const double gamma = k->has[WEIGHT] ? get(&before[WEIGHT], (size_t)c) : 1.0;
        double sum_g = 0, sum_gx = 0, abs_g = 0, abs_gx = 0;
        for (int64_t n = 0; n < N; n++)
            for (int64_t s = 0; s < S; s++) {
                const size_t i = at(k, n, c, s);
                const double g = masked_gradient(k, before, i), xhat = (get(&before[X], i) - mean) * invstd;
                sum_g += g; sum_gx += g * xhat; abs_g += fabs(g); abs_gx += fabs(g * xhat);
                if (k->has[DZ]) dz_diff = fmax(dz_diff, fabs(get(&after[DZ], i) - g));
            }
        if (k->has[DBIAS]) CHECK(fabs(get(&after[DBIAS], (size_t)c) - sum_g) <= bound * abs_g + parameter_floor, "dβ differs from the float64 reference");
        if (k->has[DWEIGHT]) CHECK(fabs(get(&after[DWEIGHT], (size_t)c) - sum_gx) <= bound * abs_gx + parameter_floor, "dγ differs from the float64 reference");
        if (!k->has[DX]) continue;
        for (int64_t n = 0; n < N; n++)
            for (int64_t s = 0; s < S; s++) {
                const size_t i = at(k, n, c, s);
                const double g = masked_gradient(k, before, i), xhat = (get(&before[X], i) - mean) * invstd;
                const double want = k->training ? gamma * invstd * (g - sum_g / m - xhat * sum_gx / m) : gamma * invstd * g;
                const double got = get(dx, i);
                if (fabs(want) > largest) {
                    CHECK(isinf(got), "a half-format dx beyond the format's range is not infinite");
                    continue;
                }
                dx_diff = fmax(dx_diff, fabs(got - want));
                dx_scale = fmax(dx_scale, fabs(gamma * invstd) * (fabs(g) + (k->training ? abs_g / m + fabs(xhat) * abs_gx / m : 0)));
            }
    }
    CHECK(dz_diff == 0, "dz differs from the masked gradient");
    CHECK(dx_diff <= bound * dx_scale + underflow_floor(k->kind), "dx differs from the float64 reference");
}

/* The call split as one rank of batch norm across processes: this slice's
 * partials (writing nothing else), then the call with them as the whole
 * batch's, must write what the plain call wrote (`plain`), bit for bit but
 * for the sign and payload of NaNs (see same_values). */
static void split_as_one_rank(const call *plain_call, buffer *before, buffer *plain, size_t placement) {
    call k = *plain_call;
    buffer b[BUFFERS];
    for (int i = 0; i < BUFFERS; i++) b[i] = copy_buffer(&before[i], placement);
    k.partials = PARTIALS_OUT;
    k.has[PIN] = 1;   /* marks the split, see run() */
    CHECK(run(&k, b, SERIAL, 1) == CBN_OK, "this slice's partials were rejected");
    for (int i = 0; i < BUFFERS; i++)
        if (i != POUT) CHECK(same_bits(&b[i], &before[i]), "the partials call wrote something else");
    memcpy(base(&b[PIN]), base(&b[POUT]), b[POUT].count * sizeof(double));
    k.partials = PARTIALS_IN;
    CHECK(run(&k, b, OPENMP, 2) == CBN_OK, "the call with the merged partials was rejected");
    for (int i = 0; i < BUFFERS; i++)
        if (i != POUT && i != PIN) CHECK(same_values(&b[i], &plain[i]), "a split call differs from the plain call");
    for (int i = 0; i < BUFFERS; i++) release(&b[i]);
}

/* Backward with relu and no y recomputes the mask from x: with the
 * statistics of the running ones, it must write what the same call writes
 * given the y of a forward inference call with relu (no residual) from
 * them, bit for bit but for the sign and payload of NaNs (see same_values:
 * the two calls run the dx arithmetic in loops of their own, and a channel
 * whose sums are NaN gave 0x7fc00000 in one and 0xffc00000 in the other). */
static void mask_matches_forward(const call *backward_call, buffer *before, size_t placement) {
    buffer b[BUFFERS], given[BUFFERS];
    for (int i = 0; i < BUFFERS; i++) b[i] = copy_buffer(&before[i], placement);
    cbn_inference_statistics(dtype_of(backward_call->kind), backward_call->shape.channels, base(&b[RMEAN]),
                             base(&b[RVAR]), backward_call->eps, base(&b[SMEAN]), base(&b[SINVSTD]));
    call forward = *backward_call;
    forward.backward = forward.training = forward.in_place = 0;
    forward.has[Z] = forward.has[SMEAN] = forward.has[SINVSTD] = 0;
    forward.has[RMEAN] = forward.has[RVAR] = 1;
    if (run(&forward, b, SERIAL, 1) == CBN_OK) {   /* y into b[Y]; an invalid eps is rejected */
        for (int i = 0; i < BUFFERS; i++) given[i] = copy_buffer(&b[i], placement);
        call with_y = *backward_call;
        with_y.has[Y] = 1;
        CHECK(run(backward_call, b, SERIAL, 1) == CBN_OK, "the recomputed-mask call was rejected");
        CHECK(run(&with_y, given, SERIAL, 1) == CBN_OK, "the call given y was rejected");
        for (int i = 0; i < BUFFERS; i++)
            if (i != Y) CHECK(same_values(&b[i], &given[i]), "the mask recomputed from x differs from y's");
        for (int i = 0; i < BUFFERS; i++) release(&given[i]);
    }
    for (int i = 0; i < BUFFERS; i++) release(&b[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* The partials mode is the input's last byte, so that the older seeds
     * decode as before in everything else. */
    const uint8_t flags3 = size > 0 ? data[size - 1] : 0;
    reader r = { data, size > 0 ? size - 1 : 0 };
    /* Where every buffer lies past a cache line (its top three bits): the
     * calls compared with the first (other executors, the split, the mask)
     * take their copies 24 bytes further, so that they also check that no
     * result depends on how the tensors fall on lines. */
    const size_t placement = (size_t)((flags3 >> 5) & 7) * 8, moved = (placement + 24) % 64;
    call k;
    memset(&k, 0, sizeof k);
    const uint8_t mode = next_byte(&r), flags = next_byte(&r), flags2 = next_byte(&r), shape_kind = next_byte(&r);
    /* the half formats from the last byte, which older seeds did not set */
    k.kind = (flags3 >> 2) & 3 ? 1 + ((flags3 >> 2) & 3) : mode & 1;
    if (k.kind > KIND_BF16) k.kind = mode & 1;
    k.training = (mode >> 1) & 1;
    k.backward = (mode >> 2) & 1;
    k.in_place = !k.backward && ((mode >> 3) & 1);
    k.dx_aliases_dy = k.backward && ((mode >> 4) & 1);
    k.relu = (mode >> 5) & 1;
    k.partials = flags3 & 3;
    k.streamed = (flags3 >> 4) & 1;
    k.shape.n = 1 + next_byte(&r) % 12;
    k.shape.channels = 1 + next_byte(&r) % 70;
    k.shape.spatial = 1 + ((next_byte(&r) << 8) | next_byte(&r)) % (shape_kind & 1 ? 3000 : 50);
    if (shape_kind % 16 == 15) k.shape.spatial = 0;                      /* invalid shapes */
    if (shape_kind % 16 == 14) k.shape.n = -3;
    if (shape_kind % 16 == 13) { k.shape.n = INT64_MAX / 2; k.shape.channels = 4; }
    k.shape.layout = (flags2 >> 4) & 1 ? CBN_CHANNELS_LAST : CBN_CHANNELS_FIRST;
    if (shape_kind % 16 == 12) k.shape.layout = (cbn_memory_layout)(2 + (flags2 >> 5));   /* invalid */
    if (shape_kind % 16 == 10) {
        /* rows of more than 1024 channels: fused columns items of part of
         * each row, which float's elementwise passes take in row blocks; with
         * the high bits, more than 256 rows, so unfused: elementwise items of
         * whole rows (float, up to 2048 channels) or, past 2048, of row blocks */
        const int wide = (shape_kind >> 4) & 3;
        k.shape.channels = (wide == 2 ? 2048 : 1024) + 16 * (1 + (k.shape.channels - 1) % 8);
        if (wide == 1 || wide == 2) {
            k.shape.spatial = 43 + (k.shape.spatial - 1) % 18;             /* 43 to 60 */
            k.shape.n = 6 + (k.shape.n - 1) % 3;                           /* m = 258 to 480 */
        } else {
            k.shape.spatial = 1 + (k.shape.spatial - 1) % 20;
            k.shape.n = 1 + (k.shape.n - 1) % 8;
        }
    }
    if (shape_kind % 16 == 11) {
        /* many channels of short planes: planes items of up to 256 channels,
         * elementwise items of other (ragged) channel blocks than the fused ones */
        k.shape.channels = 200 + 7 * (k.shape.channels - 1);             /* 200 to 683 */
        k.shape.spatial = 1 + (k.shape.spatial - 1) % 60;
        k.shape.n = 1 + (k.shape.n - 1) % 3;
    }
    const int64_t valid = k.shape.n > 0 && k.shape.spatial > 0 && k.shape.n < (1 << 20);
    for (int i = 0; i < BUFFERS; i++) k.has[i] = 1;
    k.has[WEIGHT] = flags & 1; k.has[BIAS] = (flags >> 1) & 1; k.has[RMEAN] = (flags >> 2) & 1;
    k.has[RVAR] = k.has[RMEAN] ^ ((flags >> 3) & 1 && (flags2 & 7) == 0);   /* rarely: only one of them */
    k.has[SMEAN] = k.backward || ((flags >> 4) & 1); k.has[SINVSTD] = k.backward || ((flags >> 5) & 1);
    k.has[DX] = (flags >> 6) & 1; k.has[DWEIGHT] = (flags >> 7) & 1; k.has[DBIAS] = (flags2 >> 3) & 1;
    k.has[Z] = !k.backward && ((mode >> 6) & 1);
    k.has[DZ] = k.backward && ((mode >> 6) & 1);
    /* backward with relu: y, or (half the time) the mask recomputed from x;
     * rarely, y without relu */
    k.has[Y] = !k.backward || (k.relu ? !((mode >> 7) & 1) : (mode >> 7) & 1 && (flags2 & 7) == 1);
    static const double eps_table[8] = {1e-5, 0, 1e-3, 1, 1e30, -1, NAN, INFINITY};
    static const double momentum_table[8] = {0.1, 0, 1, 0.5, 0.1, -0.1, 1.5, NAN};
    k.eps = eps_table[next_byte(&r) % 8];
    k.momentum = momentum_table[next_byte(&r) % 8];
    const int threads = 1 + next_byte(&r) % 4;

    const size_t count = valid ? (size_t)(k.shape.n * k.shape.channels * k.shape.spatial) : 4;
    const size_t channels = valid ? (size_t)k.shape.channels : 4;
    if (count > (shape_kind % 16 == 10 ? (1u << 20) : (1u << 18))) return 0;   /* the unfused wide rows need more */
    buffer b[BUFFERS];
    const size_t counts[BUFFERS] = {count, count, count, count, channels, channels, channels, channels,
                                    channels, channels, channels, channels, count, count,
                                    3 * channels, 3 * channels};
    int moderate = 1;
    for (int i = 0; i < BUFFERS; i++) {
        const int tensor = i == X || i == DY || i == Y || i == DX || i == Z || i == DZ;
        const int doubles = i == SMEAN || i == SINVSTD || i == POUT || i == PIN;
        /* parameters are float for the half formats */
        b[i] = make_buffer(counts[i], doubles ? KIND_F64 : tensor || k.kind < KIND_F16 ? k.kind : KIND_F32,
                           placement);
        const int is_input = i == X || i == DY || i == WEIGHT || i == BIAS || i == RMEAN || i == RVAR || i == Z ||
                             (k.backward && i == Y) ||
                             (k.backward && (i == SMEAN || i == SINVSTD)) || i == PIN;
        if (!is_input) continue;
        for (size_t j = 0; j < counts[i]; j++) {
            int ignored = 1;
            /* given partials: a count (sometimes below 2), then fuzzed values */
            double v = i == PIN && j % 3 == 0 ? (double)(next_byte(&r) % 40) : next_value(&r, i == PIN ? &ignored : &moderate);
            if (i == RVAR || i == SINVSTD || (i == PIN && !k.backward && j % 3 == 2)) v = fabs(v);   /* variances, M2 >= 0 */
            set(&b[i], j, v);
        }
    }
    moderate = moderate && k.eps >= 1e-5 && k.eps <= 1;

    if (k.partials != PARTIALS_NONE) moderate = 0;   /* fuzzed partials: no reference to compare with */
    /* a mask recomputed from x: checked against y's (mask_matches_forward), which is checked here */
    const int mask_from_x = k.backward && k.relu && !k.has[Y];
    if (mask_from_x) moderate = 0;
    buffer before[BUFFERS], serial[BUFFERS];
    for (int i = 0; i < BUFFERS; i++) before[i] = copy_buffer(&b[i], placement);
    const cbn_status status = run(&k, b, SERIAL, 1);
    for (int i = 0; i < BUFFERS; i++) CHECK(guards_intact(&b[i]), "a write outside an output's extent");
    if (status != CBN_OK) {
        for (int i = 0; i < BUFFERS; i++) CHECK(same_bits(&b[i], &before[i]), "a rejected call wrote a buffer");
    } else {
        /* The same call with OpenMP (serially again, without it), then with the
         * lingering helpers: the same bits. With the last byte's bit 4, these
         * two write every output with non-temporal stores (the test hook), which
         * the serial run did not: channels first, through other loops (whole
         * planes as one run), which give the same values, a NaN's sign and
         * payload aside (same_values). The helpers' run has every fused item
         * ask for the next item's x, or run the joint loop where it can (the
         * other test hook): the same bits. */
        for (int i = 0; i < BUFFERS; i++) serial[i] = b[i];
        const executor_kind others[] = {OPENMP, HELPERS};
        for (int e = 0; e < 2; e++) {
            for (int i = 0; i < BUFFERS; i++) b[i] = copy_buffer(&before[i], moved);
            if (k.streamed) cbn_test_stream_outputs_from(0);
            if (others[e] == HELPERS) cbn_test_prefetch_next_items(1);
            const cbn_status again = run(&k, b, others[e], threads);
            cbn_test_stream_outputs_from(-1);
            cbn_test_prefetch_next_items(-1);
            CHECK(again == CBN_OK, "a second run was rejected");
            for (int i = 0; i < BUFFERS; i++)
                CHECK(k.streamed ? same_values(&b[i], &serial[i]) : same_bits(&b[i], &serial[i]),
                      "executors disagree");
            for (int i = 0; i < BUFFERS; i++) release(&b[i]);
        }
        for (int i = 0; i < BUFFERS; i++) b[i] = serial[i];

        /* forward training, and backward in either mode (its sums exist in both) */
        if (k.partials == PARTIALS_NONE && (k.training || k.backward)) split_as_one_rank(&k, before, b, moved);
        if (k.partials == PARTIALS_NONE && mask_from_x) mask_matches_forward(&k, before, moved);

        if (moderate) {
            const int outputs[] = {Y, DX, DWEIGHT, DBIAS, RMEAN, RVAR, SMEAN, SINVSTD, DZ};
            for (size_t o = 0; o < sizeof outputs / sizeof *outputs; o++) {
                const int i = outputs[o];
                if (i == Y && k.in_place) continue;
                /* a half-format dx may overflow legitimately: its terms grow as invstd·x̂ */
                if (i == DX && k.kind >= KIND_F16) continue;
                for (size_t j = 0; j < b[i].count; j++)
                    CHECK(isfinite(get(&b[i], j)) || get(&b[i], j) == sentinel(b[i].kind) ||
                              (i == SINVSTD && isinf(get(&b[i], j))),
                          "a non-finite output from finite, moderate inputs");
            }
            if (!k.backward) check_forward_against_reference(&k, before, b);
            else check_backward_against_reference(&k, before, b);
            if (!k.backward && k.training && k.has[SMEAN] && k.shape.n * k.shape.spatial >= 2) {
                /* float64 reference for the mean of every channel */
                const int64_t S = k.shape.spatial, C = k.shape.channels;
                for (int64_t c = 0; c < C; c++) {
                    double sum = 0, scale = 0;
                    for (int64_t n = 0; n < k.shape.n; n++)
                        for (int64_t s = 0; s < S; s++) {
                            double v = get(&before[X], at(&k, n, c, s));
                            sum += v;
                            scale = fmax(scale, fabs(v));
                        }
                    const double mean = sum / (double)(k.shape.n * S);
                    CHECK(fabs(get(&b[SMEAN], (size_t)c) - mean) <= 1e-10 * scale,
                          "saved mean differs from the float64 reference");
                }
            }
        }
    }
    for (int i = 0; i < BUFFERS; i++) { release(&b[i]); release(&before[i]); }
    return 0;
}
