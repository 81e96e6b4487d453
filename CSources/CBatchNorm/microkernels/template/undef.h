/*
 * The end of one instantiation of kernels_template.h: every macro the
 * template and its parameters defined, so that the next type defines its own.
 */
#undef CBN_CAT2
#undef CBN_CAT
#undef FN
#undef T
#undef ELEM
#undef PARAM
#undef VT
#undef VE
#undef LOAD
#undef LOADX
#undef STOREX
#undef GET
#undef PUT
#undef WIDEN
#undef ABS
#undef SPLAT
#undef PREFETCH
#undef PREFETCH_TO
#undef CBN_REDUCTION_PREFETCH_SWITCH
#undef CBN_AHEAD_ROWS
#undef CBN_PREFETCH_VALUES
#undef CBN_AHEAD
#undef CBN_PREFETCH_SWITCH
#undef CBN_CHECK_LIMIT
#undef CBN_INVERSE_RATIO
#undef CBN_CHECKED
#undef CBN_LINE_BYTES
#undef CBN_ROW_BLOCK
#undef CBN_SHORT_PLANE_CHANNELS
#undef CBN_SET_COEFFICIENT
/* the instantiation's parameters */
#undef CBN_T
#undef CBN_ELEM
#undef CBN_PARAM
#undef CBN_SUFFIX
#undef CBN_WIDEN_V
#undef CBN_NARROW_V
#undef CBN_NARROW_NUMBERS_V
#undef CBN_WIDEN_S
#undef CBN_NARROW_S
#undef CBN_CHECK_RATIO
#undef CBN_JOINT_LOOP
#undef CBN_TUNING
