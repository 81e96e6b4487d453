/*
 * The float microkernels: the template (kernels_template.h) for float,
 * stored as computed (no CBN_WIDEN_*, CBN_NARROW_*), parameters of the same
 * type. Each element type is a translation unit of its own, so that a build
 * compiles them side by side.
 */
#include "common.h"

#define CBN_T float
#define CBN_ELEM float
#define CBN_PARAM float
#define CBN_SUFFIX f32
#define CBN_TUNING cbn_tuning_f32
#define CBN_JOINT_LOOP 1
#include "kernels_template.h"
