/*
 * bench-threads' C loops: the memory-bandwidth probe (STREAM-like loops over
 * one slice of a large array, called by each worker on its own slice), the
 * separate elementwise passes, and the next layer's read of an output.
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

/// The sum of the 64-bit words in src[0..<bytes] (a multiple of 8, src
/// 8-byte aligned): a read of any element type at full speed, whose result
/// keeps the reads from being optimized away.
uint64_t cbench_read_words(const void *src, int64_t bytes);
/// cbench_read_words over src[0..<bytes] by an OpenMP team of `threads`,
/// each thread its own contiguous slice; one thread where the support
/// library was built without OpenMP.
uint64_t cbench_read_words_openmp(const void *src, int64_t bytes, int threads);

/// The elementwise passes a user would run around a batch norm without a
/// fused epilogue, on one slice: y = max(0, y + z) (z may be NULL: max(0, y)),
/// and the relu mask g = (y > 0 ? dy : 0). Float and double.
void cbench_relu_f32(float *y, const float *z, int64_t n);
void cbench_relu_f64(double *y, const double *z, int64_t n);
void cbench_relu_mask_f32(float *g, const float *dy, const float *y, int64_t n);
void cbench_relu_mask_f64(double *g, const double *dy, const double *y, int64_t n);

#endif
