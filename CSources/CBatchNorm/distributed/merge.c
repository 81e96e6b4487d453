/*
 * The rank-ordered merge of batch norm across processes: every rank merges
 * the same gathered partials in the same order, so every rank gets bitwise
 * the same whole-batch statistics and sums (see CBatchNorm.h).
 */
#include "CBatchNorm.h"
#include "../microkernels/moments.h"

void cbn_merge_moments(int64_t channels, int64_t sets, const double *partials, double *out) {
    for (int64_t c = 0; c < channels; c++) {
        cbn_moments acc = {0, 0, 0};
        for (int64_t r = 0; r < sets; r++) {
            const double *p = partials + (r * channels + c) * 3;
            cbn_moments_merge(&acc, p[0], p[1], p[2]);
        }
        out[3 * c] = acc.count;
        out[3 * c + 1] = acc.mean;
        out[3 * c + 2] = acc.m2;
    }
}

void cbn_merge_sums(int64_t channels, int64_t sets, const double *partials, double *out) {
    for (int64_t c = 0; c < channels; c++) {
        double count = 0, sum_dy = 0, sum_dy_d = 0;
        for (int64_t r = 0; r < sets; r++) {
            const double *p = partials + (r * channels + c) * 3;
            count += p[0];
            sum_dy += p[1];
            sum_dy_d += p[2];
        }
        out[3 * c] = count;
        out[3 * c + 1] = sum_dy;
        out[3 * c + 2] = sum_dy_d;
    }
}
