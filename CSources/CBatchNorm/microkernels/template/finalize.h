/*
 * The per-channel steps: merging the parts' partials in part order, the
 * statistics, running statistics and parameter gradients they give, and
 * the coefficients the elementwise passes read. Part of kernels_template.h.
 */

/// Statistics, running statistics and coefficients of channel c from its
/// moments (this slice's, or the whole batch's across processes).
static void FN(finish_forward)(cbn_job *job, int64_t c, cbn_moments acc) {
    const PARAM *weight = (const PARAM *)job->weight, *bias = (const PARAM *)job->bias;
    PARAM *running_mean = (PARAM *)job->running_mean, *running_var = (PARAM *)job->running_var;
    const double m = acc.count, momentum = job->momentum;
    const double variance = acc.m2 / m;
    const double mean = job->mutant == CBN_MUTANT_WRONG_MEAN ? acc.mean + 1e-3 * (sqrt(variance) + fabs(acc.mean))
                                                             : acc.mean;
    const double invstd = cbn_inverse_std(variance, job->eps);
    if (job->saved_mean) job->saved_mean[c] = mean;
    if (job->saved_invstd) job->saved_invstd[c] = invstd;
    if (running_mean) {
        const double unbiased = acc.m2 / (m - 1);
        running_mean[c] = (PARAM)((1 - momentum) * (double)running_mean[c] + momentum * mean);
        running_var[c] = (PARAM)((1 - momentum) * (double)running_var[c] + momentum * unbiased);
    }
    const double gamma = weight ? (double)weight[c] : 1.0;
    FN(set_coefficients)(job, c, mean, gamma * cbn_normalizing_scale(invstd), 0, bias ? (double)bias[c] : 0.0);
}

static void FN(finalize_forward)(cbn_job *job, int64_t c0, int64_t c1) {
    const int64_t parts = job->plan.parts;
    for (int64_t c = c0; c < c1; c++) {
        if (job->moments_in) {
            const double *given = job->moments_in + 3 * c;
            FN(finish_forward)(job, c, (cbn_moments){given[0], given[1], given[2]});
            continue;
        }
        cbn_moments acc = {0, 0, 0};
        for (int64_t p = 0; p < parts; p++) {
            const cbn_moments *part = &job->partials[c * parts + p].moments;
            cbn_moments_merge(&acc, part->count, part->mean, part->m2);
        }
        if (job->moments_out) {
            double *out = job->moments_out + 3 * c;
            out[0] = acc.count; out[1] = acc.mean; out[2] = acc.m2;
        } else {
            FN(finish_forward)(job, c, acc);
        }
    }
}

/// dweight, dbias and the dx coefficients of channel c from the sums of its
/// m values (this slice's, or the whole batch's across processes).
static void FN(finish_backward)(cbn_job *job, int64_t c, double m, double sum_dy, double sum_dy_d) {
    const PARAM *weight = (const PARAM *)job->weight;
    PARAM *dweight = (PARAM *)job->dweight, *dbias = (PARAM *)job->dbias;
    const double invstd = cbn_normalizing_scale(job->invstd_in[c]);
    const double gamma = weight ? (double)weight[c] : 1.0;
    const double grad_bias = sum_dy, grad_weight = sum_dy_d * invstd;
    if (dweight) dweight[c] = (PARAM)grad_weight;
    if (dbias) dbias[c] = (PARAM)grad_bias;
    if (job->training)
        FN(set_coefficients)(job, c, job->mean_in[c], gamma * invstd, -gamma * invstd * invstd * grad_weight / m,
                             -gamma * invstd * grad_bias / m);
}

static void FN(finalize_backward)(cbn_job *job, int64_t c0, int64_t c1) {
    const int64_t parts = job->plan.parts;
    for (int64_t c = c0; c < c1; c++) {
        if (job->sums_in) {
            const double *given = job->sums_in + 3 * c;
            FN(finish_backward)(job, c, given[0], given[1], given[2]);
            continue;
        }
        double sum_dy = 0, sum_dy_d = 0;
        for (int64_t p = 0; p < parts; p++) {
            sum_dy += job->partials[c * parts + p].sums.dy;
            sum_dy_d += job->partials[c * parts + p].sums.dy_deviation;
        }
#ifndef CBN_CHECK_RATIO
        /* The passes summed g*(x - mean_hi) (deviation_v): take the rest of
         * the mean off here, in double, once (not 0 * an infinite sum). */
        const double rest = FN(mean_rest)(job->mean_in[c]);
        if (rest != 0) sum_dy_d -= rest * sum_dy;
#endif
        if (job->sums_out) {
            double *out = job->sums_out + 3 * c;
            out[0] = (double)job->plan.m; out[1] = sum_dy; out[2] = sum_dy_d;
        } else {
            FN(finish_backward)(job, c, (double)job->plan.m, sum_dy, sum_dy_d);
        }
    }
}

/// Coefficients known before any pass: inference forward (from the running
/// statistics) and backward (from the given mean and invstd).
static void FN(prepare)(cbn_job *job) {
    const PARAM *weight = (const PARAM *)job->weight, *bias = (const PARAM *)job->bias;
    for (int64_t c = 0; c < job->plan.shape.channels; c++) {
        const double gamma = weight ? (double)weight[c] : 1.0;
        if (job->backward) {
            const double scale = gamma * cbn_normalizing_scale(job->invstd_in[c]);
            FN(set_coefficients)(job, c, job->mean_in[c], scale, 0, 0);
            /* the relu mask's forward formula, as finish_forward sets it */
            const PARAM *mask_bias = (const PARAM *)job->mask_bias;
            if (job->epilogue & CBN_EPILOGUE_RELU_FROM_X)
                FN(set_formula)(job, c, 1, job->mean_in[c], scale, 0, mask_bias ? (double)mask_bias[c] : 0.0);
        } else if (!job->training) {
            const double variance = (double)((const PARAM *)job->running_var)[c];
            FN(set_coefficients)(job, c, (double)((const PARAM *)job->running_mean)[c],
                                 gamma * cbn_normalizing_scale(cbn_inverse_std(variance, job->eps)), 0,
                                 bias ? (double)bias[c] : 0.0);
        }
    }
}

static void FN(inference_statistics)(int64_t channels, const void *running_mean,
                                     const void *running_var, double eps,
                                     double *mean_out, double *invstd_out) {
    for (int64_t c = 0; c < channels; c++) {
        mean_out[c] = (double)((const PARAM *)running_mean)[c];
        invstd_out[c] = cbn_inverse_std((double)((const PARAM *)running_var)[c], eps);
    }
}
