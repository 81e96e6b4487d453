/*
 * The backward elementwise pass: dx = k1*g + (k2*(x - mean_hi) + k3), or
 * dx = k1*g in inference mode, and dz = g where no sums pass has written
 * it; g is dy masked by y under relu. Part of kernels_template.h.
 */

/// dx (and dz) over one item, for the constant epilogue `epi`.
CBN_INLINE void FN(input_gradient_item)(const cbn_job *job, cbn_item item, const int epi) {
    if (epi & CBN_EPILOGUE_RESIDUAL) FN(elementwise_item)(CBN_OP_RESIDUAL_GRADIENT, epi, job, item, job->dresidual);
    if (!job->out) return;
    if (job->training)
        FN(elementwise_item)(CBN_OP_INPUT_GRADIENT, epi, job, item, job->out);
    else
        FN(elementwise_item)(CBN_OP_SCALE, epi, job, item, job->out);
}

/// The same, a function of its own for each epilogue e (as normalize's).
#define CBN_INPUT_GRADIENT_WITH(e)                                                               \
    CBN_MULTIVERSIONED static void FN(input_gradient_with_##e)(const cbn_job *job, cbn_item item) { \
        FN(input_gradient_item)(job, item, e);                                                   \
    }
CBN_INPUT_GRADIENT_WITH(0)
CBN_INPUT_GRADIENT_WITH(1)
CBN_INPUT_GRADIENT_WITH(2)
CBN_INPUT_GRADIENT_WITH(3)
CBN_INPUT_GRADIENT_WITH(CBN_EPILOGUE_RELU_FROM_X)
#undef CBN_INPUT_GRADIENT_WITH

static void FN(input_gradient)(const cbn_job *job, cbn_item item) {
#define CALL(e) FN(input_gradient_with_##e)(job, item)
    CBN_GRADIENT_EPILOGUE_SWITCH(job->gradient_epilogue, CALL)
#undef CALL
}
