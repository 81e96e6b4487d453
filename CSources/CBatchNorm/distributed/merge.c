/*
 * The merge of the partials of batch norm across processes, set by set in
 * set order: the reducer's tree calls it on two sets at a time (the lower
 * ranks' first), so every rank gets bitwise the same whole-batch statistics
 * and sums (see CBatchNorm.h). Sets are walked one after another, each in
 * channel order, so that they stream through once while the C running
 * results stay in cache.
 */
#include <string.h>
#include "CBatchNorm.h"
#include "moments.h"

void cbn_merge_moments(int64_t channels, int64_t sets, const double *partials, double *out) {
    /* out holds the running (count, mean, M2) of each channel: a cbn_moments */
    memset(out, 0, (size_t)channels * 3 * sizeof(double));
    for (int64_t r = 0; r < sets; r++) {
        const double *set = partials + r * channels * 3;
        for (int64_t c = 0; c < channels; c++) {
            cbn_moments acc = {out[3 * c], out[3 * c + 1], out[3 * c + 2]};
            cbn_moments_merge(&acc, set[3 * c], set[3 * c + 1], set[3 * c + 2]);
            out[3 * c] = acc.count;
            out[3 * c + 1] = acc.mean;
            out[3 * c + 2] = acc.m2;
        }
    }
}

void cbn_merge_sums(int64_t channels, int64_t sets, const double *partials, double *out) {
    memset(out, 0, (size_t)channels * 3 * sizeof(double));
    for (int64_t r = 0; r < sets; r++) {
        const double *set = partials + r * channels * 3;
        for (int64_t i = 0; i < channels * 3; i++) out[i] += set[i];
    }
}
