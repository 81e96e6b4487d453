/*
 * Moments of a set of values, (count, mean, M2 = sum of squared deviations),
 * in double, and Chan's merge of two such sets:
 *   n = na + nb,  d = mean_b - mean_a,  mean = mean_a + d*nb/n,
 *   M2 = M2_a + M2_b + d^2 * na*nb/n.
 * One division per merge, so per block of values, never per value.
 */
#ifndef CBN_MOMENTS_H
#define CBN_MOMENTS_H

#include <math.h>
#include <stdint.h>

typedef struct cbn_moments {
    double count, mean, m2;
} cbn_moments;

static inline void cbn_moments_merge(cbn_moments *into, double count, double mean, double m2) {
    if (count == 0) return;
    if (into->count == 0) {
        into->count = count;
        into->mean = mean;
        into->m2 = m2;
        return;
    }
    const double n = into->count + count;
    const double delta = mean - into->mean;
    const double weight = count / n;
    into->mean += delta * weight;
    into->m2 += m2 + delta * delta * into->count * weight;
    into->count = n;
}

/// The moments of w channels whose sets all hold `count` values (an item's
/// channels over the same parts), as a row per field, so that merging a
/// block into every channel is a loop of vector operations.
typedef struct cbn_moments_rows {
    double count;
    double *mean, *m2;    /* w values each */
} cbn_moments_rows;

/// Merges into each channel k < w of `rows` a block of `count` values given
/// as sums about a pivot: with d = x - pivot[k], sum_d[k] = Σ d and
/// sum_d2[k] = Σ d², the block's mean is pivot + sum_d/count and its M2 is
/// sum_d2 - sum_d²/count. The subtraction loses little when the pivot is one
/// of the block's values: then (pivot - mean)² ≤ M2, so sum_d2 ≤ (1 + count)·M2
/// and the relative error of M2 is at most about count·ε (double ε), whatever
/// the offset of the data.
static inline void cbn_moments_rows_merge_shifted(cbn_moments_rows *rows, int64_t w, double count,
                                                  const double *pivot, const double *sum_d,
                                                  const double *sum_d2) {
    for (int64_t k = 0; k < w; k++) {
        const double mean_d = sum_d[k] / count;
        const double m2 = sum_d2[k] - sum_d[k] * mean_d;
        cbn_moments into = {rows->count, rows->mean[k], rows->m2[k]};
        cbn_moments_merge(&into, count, pivot[k] + mean_d, m2 > 0 ? m2 : 0);
        rows->mean[k] = into.mean;
        rows->m2[k] = into.m2;
    }
    if (count != 0) rows->count += count;
}

/// 1 / sqrt(variance + eps), the inverse standard deviation used everywhere.
static inline double cbn_inverse_std(double variance, double eps) {
    return 1.0 / sqrt(variance + eps);
}

/// The factor x - mean is multiplied by to give x̂: the inverse standard
/// deviation, except where σ² + ε = 0 (a constant channel with ε = 0), where
/// it is +∞ and the package defines x̂ = 0 (y = β, dx = 0, dγ = 0) instead of
/// the 0·∞ = NaN the formula would give.
static inline double cbn_normalizing_scale(double invstd) {
    return isinf(invstd) ? 0.0 : invstd;
}

#endif /* CBN_MOMENTS_H */
