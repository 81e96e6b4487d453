/*
 * The forward elementwise pass: y = epilogue((x - mean_hi) * k1 + k3),
 * x's values in place (a planes run or rows), over one item. Part of
 * kernels_template.h.
 */

/// y over one item, in loops of its own for each epilogue.
CBN_MULTIVERSIONED static void FN(normalize)(const cbn_job *job, cbn_item item) {
#define CALL(e) FN(elementwise_item)(CBN_OP_NORMALIZE, e, job, item, job->out)
    CBN_EPILOGUE_SWITCH(job->epilogue, CALL)
#undef CALL
}
