/*
 * The forward elementwise pass: y = epilogue((x - mean_hi) * k1 + k3),
 * x's values in place (a planes run or rows), over one item. Part of
 * kernels_template.h.
 */

/// y over one item for the epilogue e (0 to 3): a function of its own for
/// each epilogue, so that each is a function of the size the compiler's
/// passes handle briskly (one function holding every epilogue's loops took
/// minutes to compile under the sanitizers).
#define CBN_NORMALIZE_WITH(e)                                                                    \
    CBN_MULTIVERSIONED static void FN(normalize_with_##e)(const cbn_job *job, cbn_item item) {   \
        FN(elementwise_item)(CBN_OP_NORMALIZE, e, job, item, job->out);                         \
    }
CBN_NORMALIZE_WITH(0)
CBN_NORMALIZE_WITH(1)
CBN_NORMALIZE_WITH(2)
CBN_NORMALIZE_WITH(3)
#undef CBN_NORMALIZE_WITH

/// y over one item, in loops of its own for each epilogue.
static void FN(normalize)(const cbn_job *job, cbn_item item) {
#define CALL(e) FN(normalize_with_##e)(job, item)
    CBN_EPILOGUE_SWITCH(job->epilogue, CALL)
#undef CALL
}
