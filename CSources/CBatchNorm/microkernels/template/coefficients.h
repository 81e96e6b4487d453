/*
 * The per-channel coefficients (job.h): how the finalize steps set them and
 * how the elementwise microkernels read them, sixteen lanes or one value at
 * a time. The check rows exist only for checked types (CBN_CHECK_RATIO);
 * elsewhere they read as zero, and only here is that decided. Part of
 * kernels_template.h.
 */

/// The coefficient rows of a channel block, from its first channel (both
/// walks): in T, with the check rows (slack, bk1 = |k1|/R, bk2 = |k2|/R),
/// and in double for the checked recomputation (w*; NULL where unchecked);
/// m*: the mask rows, the forward formula's k1, k3, slack and bk1.
typedef struct FN(cbn_block_coefficients) {
    const T *hi, *k1, *k2, *k3, *slack, *bk1, *bk2, *mk1, *mk3, *mslack, *mbk1;
    const double *wm, *wk1, *wk2, *wk3, *wmk1, *wmk3;
} FN(cbn_block_coefficients);

/// One channel's coefficients, for values taken one at a time.
typedef struct FN(cbn_scalars) {
    T hi, k1, k2, k3, slack, bk1, bk2, mk1, mk3, mslack, mbk1;
    double wm, wk1, wk2, wk3, wmk1, wmk3;
} FN(cbn_scalars);

/// The coefficients of sixteen values: each lane its own channel's (a run
/// of rows, channels last), every lane the same channel's (a channel's run),
/// or, in a run of whole planes, every lane channel `channel`'s but those
/// from `split` on, which are the next channel's (plane_lanes). The double
/// ones, which only a value that fails its check reads, are loaded then
/// (cbn_wide_lanes): from `rows` at `channel` (with `planes`, splatted as
/// the other coefficients are), or `one`'s; the mask rows' where `mask`
/// (mask_lanes).
typedef struct FN(cbn_lanes) {
    VT hi, k1, k2, k3, slack, bk1, bk2, mk1, mk3, mslack, mbk1;
    const FN(cbn_block_coefficients) *rows;
    int64_t channel, split;
    const FN(cbn_scalars) *one;
    int planes, mask;
} FN(cbn_lanes);

/// The double coefficients of sixteen values.
typedef struct FN(cbn_wide_lanes) {
    cbn_vd m, k1, k2, k3;
} FN(cbn_wide_lanes);

/// Loads the double coefficients of `l` (checked types only; the compiler
/// drops the loads a formula does not use).
CBN_INLINE void FN(wide_lanes)(const FN(cbn_lanes) *l, FN(cbn_wide_lanes) *w) {
    if (l->rows && l->planes) {
        const cbn_vd_lanes mine = CBN_LANES_BEFORE(cbn_vd_lanes, l->split);
#define CBN_PLANE_WIDE(row)                                                                      \
    (l->split < 16 ? CBN_SELECT(cbn_vd_lanes, mine, CBN_SPLAT(cbn_vd, (row)[l->channel]),        \
                                CBN_SPLAT(cbn_vd, (row)[l->channel + 1]))                        \
                   : CBN_SPLAT(cbn_vd, (row)[l->channel]))
        w->m = CBN_PLANE_WIDE(l->rows->wm);
        w->k1 = CBN_PLANE_WIDE(l->mask ? l->rows->wmk1 : l->rows->wk1);
        w->k2 = CBN_PLANE_WIDE(l->rows->wk2);
        w->k3 = CBN_PLANE_WIDE(l->mask ? l->rows->wmk3 : l->rows->wk3);
#undef CBN_PLANE_WIDE
    } else if (l->rows) {
        w->m = cbn_vd_load(l->rows->wm + l->channel);
        w->k1 = cbn_vd_load((l->mask ? l->rows->wmk1 : l->rows->wk1) + l->channel);
        w->k2 = cbn_vd_load(l->rows->wk2 + l->channel);
        w->k3 = cbn_vd_load((l->mask ? l->rows->wmk3 : l->rows->wk3) + l->channel);
    } else {
        w->m = CBN_SPLAT(cbn_vd, l->one->wm);
        w->k1 = CBN_SPLAT(cbn_vd, l->mask ? l->one->wmk1 : l->one->wk1);
        w->k2 = CBN_SPLAT(cbn_vd, l->one->wk2);
        w->k3 = CBN_SPLAT(cbn_vd, l->mask ? l->one->wmk3 : l->one->wk3);
    }
}

CBN_INLINE void FN(load_block_coefficients)(const cbn_job *job, cbn_item item,
                                            FN(cbn_block_coefficients) *bc) {
    const T *all = (const T *)job->coefficients;
    const double *wide = job->wide_coefficients;
    const int64_t stride = cbn_coefficient_stride(job->plan.shape.channels);
    all += job->coefficient_shift;
    wide = wide ? wide + job->coefficient_shift : NULL;
    bc->hi = all + CBN_MEAN_HI * stride + item.c0;
    bc->k1 = all + CBN_K1 * stride + item.c0;
    bc->k2 = all + CBN_K2 * stride + item.c0;
    bc->k3 = all + CBN_K3 * stride + item.c0;
    bc->mk1 = all + CBN_MASK_K1 * stride + item.c0;
    bc->mk3 = all + CBN_MASK_K3 * stride + item.c0;
#ifdef CBN_CHECK_RATIO
    bc->slack = all + CBN_SLACK * stride + item.c0;
    bc->bk1 = all + CBN_BOUND_K1 * stride + item.c0;
    bc->bk2 = all + CBN_BOUND_K2 * stride + item.c0;
    bc->mslack = all + CBN_MASK_SLACK * stride + item.c0;
    bc->mbk1 = all + CBN_MASK_BOUND_K1 * stride + item.c0;
    bc->wm = wide + CBN_WIDE_MEAN * stride + item.c0;
    bc->wk1 = wide + CBN_WIDE_K1 * stride + item.c0;
    bc->wk2 = wide + CBN_WIDE_K2 * stride + item.c0;
    bc->wk3 = wide + CBN_WIDE_K3 * stride + item.c0;
    bc->wmk1 = wide + CBN_WIDE_MASK_K1 * stride + item.c0;
    bc->wmk3 = wide + CBN_WIDE_MASK_K3 * stride + item.c0;
#else
    (void)wide;
    bc->slack = bc->bk1 = bc->bk2 = bc->mslack = bc->mbk1 = NULL;
    bc->wm = bc->wk1 = bc->wk2 = bc->wk3 = bc->wmk1 = bc->wmk3 = NULL;
#endif
}

/// The coefficient rows of `bc` from its channel k on, as a block of their own.
CBN_INLINE void FN(block_coefficients_from)(const FN(cbn_block_coefficients) *bc, int64_t k,
                                            FN(cbn_block_coefficients) *from) {
#define CBN_FROM(row) from->row = bc->row ? bc->row + k : NULL
    CBN_FROM(hi); CBN_FROM(k1); CBN_FROM(k2); CBN_FROM(k3); CBN_FROM(slack); CBN_FROM(bk1); CBN_FROM(bk2);
    CBN_FROM(mk1); CBN_FROM(mk3); CBN_FROM(mslack); CBN_FROM(mbk1);
    CBN_FROM(wm); CBN_FROM(wk1); CBN_FROM(wk2); CBN_FROM(wk3); CBN_FROM(wmk1); CBN_FROM(wmk3);
#undef CBN_FROM
}

/// The coefficients of channels c, c + 1, ... c + 15 of the block (the rows
/// wrap around past the last channel, job.h). A pass loads them all; the
/// compiler drops the loads of those it does not use.
CBN_INLINE void FN(lanes_at)(const FN(cbn_block_coefficients) *bc, int64_t c, FN(cbn_lanes) *l) {
    l->hi = LOAD(bc->hi + c);
    l->k1 = LOAD(bc->k1 + c);
    l->k2 = LOAD(bc->k2 + c);
    l->k3 = LOAD(bc->k3 + c);
    l->mk1 = LOAD(bc->mk1 + c);
    l->mk3 = LOAD(bc->mk3 + c);
#ifdef CBN_CHECK_RATIO
    l->slack = LOAD(bc->slack + c);
    l->bk1 = LOAD(bc->bk1 + c);
    l->bk2 = LOAD(bc->bk2 + c);
    l->mslack = LOAD(bc->mslack + c);
    l->mbk1 = LOAD(bc->mbk1 + c);
#else
    l->slack = l->bk1 = l->bk2 = l->mslack = l->mbk1 = (VT){0};
#endif
    l->rows = bc;
    l->channel = c;
    l->split = 16;
    l->one = NULL;
    l->planes = l->mask = 0;
}

/// Channel c's coefficients, one value each.
CBN_INLINE void FN(scalars_at)(const FN(cbn_block_coefficients) *bc, int64_t c, FN(cbn_scalars) *s) {
    s->hi = bc->hi[c];
    s->k1 = bc->k1[c];
    s->k2 = bc->k2[c];
    s->k3 = bc->k3[c];
    s->mk1 = bc->mk1[c];
    s->mk3 = bc->mk3[c];
#ifdef CBN_CHECK_RATIO
    s->slack = bc->slack[c];
    s->bk1 = bc->bk1[c];
    s->bk2 = bc->bk2[c];
    s->mslack = bc->mslack[c];
    s->mbk1 = bc->mbk1[c];
    s->wm = bc->wm[c];
    s->wk1 = bc->wk1[c];
    s->wk2 = bc->wk2[c];
    s->wk3 = bc->wk3[c];
    s->wmk1 = bc->wmk1[c];
    s->wmk3 = bc->wmk3[c];
#else
    s->slack = s->bk1 = s->bk2 = s->mslack = s->mbk1 = 0;
    s->wm = s->wk1 = s->wk2 = s->wk3 = s->wmk1 = s->wmk3 = 0;
#endif
}

/// Channel c's coefficients in every lane, for a run of that channel alone.
CBN_INLINE void FN(lanes_of)(const FN(cbn_scalars) *s, FN(cbn_lanes) *l) {
    l->hi = SPLAT(s->hi);
    l->k1 = SPLAT(s->k1);
    l->k2 = SPLAT(s->k2);
    l->k3 = SPLAT(s->k3);
    l->slack = SPLAT(s->slack);
    l->bk1 = SPLAT(s->bk1);
    l->bk2 = SPLAT(s->bk2);
    l->mk1 = SPLAT(s->mk1);
    l->mk3 = SPLAT(s->mk3);
    l->mslack = SPLAT(s->mslack);
    l->mbk1 = SPLAT(s->mbk1);
    l->rows = NULL;
    l->channel = 0;
    l->split = 16;
    l->one = s;
    l->planes = l->mask = 0;
}

/// The coefficients of a vector of a run of whole planes of the block's
/// channels (each plane one channel's) whose first `split` values are of
/// channel k and the rest of channel k + 1 (every value channel k's where
/// split >= 16). Each lane holds its own value's channel, so the vector's
/// values are those that each channel's own lanes give. The coefficients
/// are loaded one value at a time and splatted, and the double ones read
/// from the rows, so that nothing here needs memory of its own.
CBN_INLINE void FN(plane_lanes)(const FN(cbn_block_coefficients) *bc, int64_t k, int64_t split,
                                FN(cbn_lanes) *l) {
    FN(cbn_scalars) s;
    FN(scalars_at)(bc, k, &s);
    FN(lanes_of)(&s, l);
    if (split < 16) {
        FN(cbn_scalars) t;
        FN(cbn_lanes) next;
        FN(scalars_at)(bc, k + 1, &t);
        FN(lanes_of)(&t, &next);
        const FN(cbn_lane_mask) mine = CBN_LANES_BEFORE(FN(cbn_lane_mask), split);
#define CBN_ACROSS(f) l->f = CBN_SELECT(FN(cbn_lane_mask), mine, l->f, next.f)
        CBN_ACROSS(hi); CBN_ACROSS(k1); CBN_ACROSS(k2); CBN_ACROSS(k3); CBN_ACROSS(slack); CBN_ACROSS(bk1);
        CBN_ACROSS(bk2); CBN_ACROSS(mk1); CBN_ACROSS(mk3); CBN_ACROSS(mslack); CBN_ACROSS(mbk1);
#undef CBN_ACROSS
    }
    l->rows = bc;
    l->channel = k;
    l->split = split;
    l->one = NULL;
    l->planes = 1;
}

/// The forward formula's coefficients among `l`'s, the mask rows
/// (CBN_EPILOGUE_RELU_FROM_X): what forward_v reads as k1, k3 and the check.
CBN_INLINE void FN(mask_lanes)(const FN(cbn_lanes) *l, FN(cbn_lanes) *m) {
    *m = *l;
    m->k1 = l->mk1;
    m->k3 = l->mk3;
    m->slack = l->mslack;
    m->bk1 = l->mbk1;
    m->mask = 1;
}

/// The same for one channel's coefficients.
CBN_INLINE void FN(mask_scalars)(const FN(cbn_scalars) *s, FN(cbn_scalars) *m) {
    *m = *s;
    m->k1 = s->mk1;
    m->k3 = s->mk3;
    m->slack = s->mslack;
    m->bk1 = s->mbk1;
    m->wk1 = s->wmk1;
    m->wk3 = s->wmk3;
}

/// Stores channel c's value of one coefficient row, and its copies among
/// the sixteen values past the row's channels (job.h). Each copy belongs to
/// one channel, so the finalize items of different channels never write
/// the same place.
#define CBN_SET_COEFFICIENT(rows, row, c, value)                                                 \
    do {                                                                                         \
        const int64_t C_ = job->plan.shape.channels;                                             \
        __typeof__(rows) row_ = (rows) + (row) * cbn_coefficient_stride(C_) + job->coefficient_shift; \
        row_[c] = (value);                                                                       \
        if ((c) < 16) /* copies exist: a test that spares the common case a division */          \
            for (int64_t p_ = (c) + C_; p_ < C_ + 16; p_ += C_) row_[p_] = (value);              \
    } while (0)

/// The part of the mean that its rounding to T, mean_hi, leaves out: exact
/// in double (Sterbenz: mean_hi lies within a factor 2 of the mean), zero in
/// double itself.
static inline double FN(mean_rest)(double mean) { return mean - (double)(T)mean; }

#ifdef CBN_CHECK_RATIO
/// A check row's value (job.h): the least T at or above v/R, and at least
/// `floor`.
static T FN(check_row)(double v, double floor) {
    const double scaled = v / CBN_CHECK_RATIO;
    if (scaled <= floor) return (T)floor;
    T t = (T)scaled;
    if ((double)t < scaled) {    /* t >= 0 and finite: the next float up is the next bit pattern */
        uint32_t bits;
        memcpy(&bits, &t, sizeof bits);
        bits++;
        memcpy(&t, &bits, sizeof t);
    }
    return t;
}

/// Whether k, nonzero, rounds to a float subnormal or to zero.
static int FN(coarse_factor)(double k) { return k != 0 && fabs((double)(T)k) < 0x1p-126; }
#endif

/// Sets channel c's coefficients (job.h) of one formula: y = (x - mean)*k1
/// + k3 (a forward job's, and the mask rows') or dx = k1*g + ((x - mean)*k2
/// + k3) (a backward job's); the job's own, or with `mask` the mask rows
/// (k2 = 0, mean_hi as the job's). mean_hi is the mean rounded to T; k1, k2 and k3 rounded to T, k3
/// less the rest of the mean times the factor of x - mean (k1 forward, k2
/// backward), so that the kernels' x - mean_hi needs no second subtraction;
/// the check rows; and, for the check's recomputation, the mean and factors
/// in double. The mask rows of given statistics are thus bit for bit the
/// coefficients a forward job sets from them.
static void FN(set_formula)(cbn_job *job, int64_t c, const int mask, double mean, double k1, double k2,
                            double k3) {
    const double factor = mask || !job->backward ? k1 : k2;
    /* only where there is a rest: 0 * an infinite factor would make k3 NaN */
    const double rest = FN(mean_rest)(mean), k3_hi = rest != 0 ? k3 - rest * factor : k3;
    T *rows = (T *)job->coefficients;
    if (!mask) {
        CBN_SET_COEFFICIENT(rows, CBN_MEAN_HI, c, (T)mean);
        CBN_SET_COEFFICIENT(rows, CBN_K2, c, (T)k2);
    }
    CBN_SET_COEFFICIENT(rows, mask ? CBN_MASK_K1 : CBN_K1, c, (T)k1);
    CBN_SET_COEFFICIENT(rows, mask ? CBN_MASK_K3 : CBN_K3, c, (T)k3_hi);
#ifdef CBN_CHECK_RATIO
    double *wide = job->wide_coefficients;
    if (!mask) {
        CBN_SET_COEFFICIENT(wide, CBN_WIDE_MEAN, c, mean);
        CBN_SET_COEFFICIENT(rows, CBN_BOUND_K2, c, FN(check_row)(fabs((double)(T)k2), 0));
        CBN_SET_COEFFICIENT(wide, CBN_WIDE_K2, c, k2);
    }
    /* A factor that rounds to a float subnormal (or to zero) keeps less
     * than float's relative precision, which the bound assumes: an infinite
     * slack then sends every value of the channel to double. */
    const int coarse = FN(coarse_factor)(k1) || FN(coarse_factor)(k2);
    const double slack = coarse ? INFINITY : fabs(k3_hi) + 0x1p-22 * fabs(mean) * fabs(factor);
    CBN_SET_COEFFICIENT(rows, mask ? CBN_MASK_SLACK : CBN_SLACK, c, FN(check_row)(slack, 0x1p-126));
    CBN_SET_COEFFICIENT(rows, mask ? CBN_MASK_BOUND_K1 : CBN_BOUND_K1, c, FN(check_row)(fabs((double)(T)k1), 0));
    CBN_SET_COEFFICIENT(wide, mask ? CBN_WIDE_MASK_K1 : CBN_WIDE_K1, c, k1);
    CBN_SET_COEFFICIENT(wide, mask ? CBN_WIDE_MASK_K3 : CBN_WIDE_K3, c, k3);
#endif
}

/// Sets channel c's coefficients of the job's own formula (set_formula).
static void FN(set_coefficients)(cbn_job *job, int64_t c, double mean, double k1, double k2, double k3) {
    FN(set_formula)(job, c, 0, mean, k1, k2, k3);
}
