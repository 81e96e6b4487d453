/*
 * The memory-bandwidth probe of bench-threads: STREAM-like loops over one
 * slice of a large array, called by each worker on its own slice.
 */
#ifndef CBENCHSUPPORT_H
#define CBENCHSUPPORT_H

#include <stdint.h>

/// dst[i] = src[i] for i < n (ordinary stores).
void cbench_copy(float *dst, const float *src, int64_t n);
/// dst[i] = src[i] with non-temporal (streaming) stores where aligned.
void cbench_copy_nontemporal(float *dst, const float *src, int64_t n);
/// Sum of src[0..<n], so that the reads cannot be optimized away.
double cbench_read(const float *src, int64_t n);

#endif
