/*
 * The double microkernels: the template (kernels_template.h) for double,
 * stored as computed, parameters of the same type.
 */
#include "common.h"

#define CBN_T double
#define CBN_ELEM double
#define CBN_PARAM double
#define CBN_SUFFIX f64
#define CBN_TUNING cbn_tuning_f64
#define CBN_JOINT_LOOP 1
#include "kernels_template.h"
