import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// How the array APIs reach the kernels' buffers: borrowing the arrays they
/// read (`withBuffers`), and writing either a new array (`makeArray`) or the
/// caller's own (`Array.overwrite`, `overwriting`).
///
/// A new tensor-sized array is often new memory from the operating system:
/// glibc maps blocks of 32 MiB or more afresh and unmaps them when they are
/// freed, and smaller blocks too come and go with its dynamic mmap and trim
/// thresholds. Every 4 KiB page of such memory faults on its first store,
/// and those faults can cost several times the kernel that writes the
/// tensor. `makeArray` asks for transparent huge pages over the new array
/// (where the kernel grants them: THP `always` or `madvise`), which makes
/// its first touch several times cheaper; nothing else about the process's
/// memory changes. Storage the caller reuses through the `into:` overloads
/// costs no fault at all. `BATCHNORM_HUGE_PAGES=0` turns the request off.
enum ArrayStorage {
    /// The transparent huge page size, or nil where the kernel has none
    /// (read once from sysfs) or `BATCHNORM_HUGE_PAGES` is `0`.
    static let hugePageBytes: Int? = {
        if ProcessInfo.processInfo.environment["BATCHNORM_HUGE_PAGES"] == "0" { return nil }
        let path = "/sys/kernel/mm/transparent_hugepage/hpage_pmd_size"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8),
              let size = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)),
              size > 0, size & (size - 1) == 0 else { return nil }
        return size
    }()

    /// Asks for huge pages over the whole huge pages inside `bytes` of new
    /// storage at `start`, when it spans at least two (smaller arrays hold
    /// at most one, and often none). Only the array's own pages are advised,
    /// and only as a hint: where the kernel refuses, nothing changes.
    static func adviseHugePages(_ start: UnsafeMutableRawPointer, bytes: Int) {
        #if canImport(Glibc)
        guard let huge = hugePageBytes, bytes >= 2 * huge else { return }
        let first = (Int(bitPattern: start) + huge - 1) & ~(huge - 1)
        let end = (Int(bitPattern: start) + bytes) & ~(huge - 1)
        guard end > first, let base = UnsafeMutableRawPointer(bitPattern: first) else { return }
        _ = madvise(base, end - first, MADV_HUGEPAGE)
        #endif
    }
}

/// A new array of `count` elements that `fill` initializes completely, or
/// the error `fill` threw (and no array). Large arrays get huge pages.
func makeArray<Scalar>(
    count: Int, _ fill: (UnsafeMutableBufferPointer<Scalar>) throws(BatchNormError) -> Void
) throws(BatchNormError) -> [Scalar] {
    var failure: BatchNormError?
    let array = [Scalar](unsafeUninitializedCapacity: count) { buffer, initialized in
        if let base = buffer.baseAddress {
            ArrayStorage.adviseHugePages(base, bytes: count * MemoryLayout<Scalar>.stride)
        }
        do throws(BatchNormError) {
            try fill(buffer)
            initialized = count
        } catch {
            failure = error
        }
    }
    if let failure { throw failure }
    return array
}

extension Array where Element: BatchNormElement {
    /// Calls `fill` to write all `count` elements of this array, in its own
    /// storage when its capacity holds them, and makes it `count` long.
    ///
    /// - Its own storage: copied first if it is shared, as any mutation of a
    ///   shared array is, so no other array sees the write.
    /// - Otherwise new storage (as `makeArray`), which replaces the array's.
    ///
    /// If `fill` throws, having written nothing (as every checked entry point
    /// does), the array keeps its count and values.
    mutating func overwrite(
        count: Int, _ fill: (UnsafeMutableBufferPointer<Element>) throws(BatchNormError) -> Void
    ) throws(BatchNormError) {
        let oldCount = self.count
        if oldCount >= count {
            try withUnsafeMutableBufferPointer { (all) throws(BatchNormError) in
                try fill(UnsafeMutableBufferPointer(rebasing: all[..<count]))
            }
            removeLast(oldCount - count)
        } else if capacity >= count {
            append(contentsOf: repeatElement(.zero, count: count - oldCount))
            do throws(BatchNormError) {
                try withUnsafeMutableBufferPointer { (all) throws(BatchNormError) in try fill(all) }
            } catch {
                removeLast(count - oldCount)
                throw error
            }
        } else {
            self = try makeArray(count: count, fill)
        }
    }
}

/// Overwrites three arrays at once, as `Array.overwrite` does each.
func overwriting<A: BatchNormElement, B: BatchNormElement, C: BatchNormElement>(
    _ a: inout [A], count countA: Int, _ b: inout [B], count countB: Int, _ c: inout [C], count countC: Int,
    _ fill: (UnsafeMutableBufferPointer<A>, UnsafeMutableBufferPointer<B>, UnsafeMutableBufferPointer<C>)
        throws(BatchNormError) -> Void
) throws(BatchNormError) {
    try a.overwrite(count: countA) { (a) throws(BatchNormError) in
        try b.overwrite(count: countB) { (b) throws(BatchNormError) in
            try c.overwrite(count: countC) { (c) throws(BatchNormError) in try fill(a, b, c) }
        }
    }
}

/// Overwrites four arrays at once, as `Array.overwrite` does each.
func overwriting<A: BatchNormElement, B: BatchNormElement, C: BatchNormElement, D: BatchNormElement>(
    _ a: inout [A], count countA: Int, _ b: inout [B], count countB: Int, _ c: inout [C], count countC: Int,
    _ d: inout [D], count countD: Int,
    _ fill: (UnsafeMutableBufferPointer<A>, UnsafeMutableBufferPointer<B>, UnsafeMutableBufferPointer<C>,
             UnsafeMutableBufferPointer<D>) throws(BatchNormError) -> Void
) throws(BatchNormError) {
    try overwriting(&a, count: countA, &b, count: countB, &c, count: countC) { (a, b, c) throws(BatchNormError) in
        try d.overwrite(count: countD) { (d) throws(BatchNormError) in try fill(a, b, c, d) }
    }
}

/// Calls `body` with a buffer over `array`, or with nil.
func withBuffer<Scalar, R>(
    _ array: [Scalar]?, _ body: (UnsafeBufferPointer<Scalar>?) throws(BatchNormError) -> R
) throws(BatchNormError) -> R {
    guard let array else { return try body(nil) }
    return try array.withUnsafeBufferPointer { buffer throws(BatchNormError) in try body(buffer) }
}

/// Calls `body` with buffers over the arrays that are present (nil for
/// those that are not), of any element types.
func withBuffers<A, B, R>(
    _ a: [A]?, _ b: [B]?,
    _ body: (UnsafeBufferPointer<A>?, UnsafeBufferPointer<B>?) throws(BatchNormError) -> R
) throws(BatchNormError) -> R {
    try withBuffer(a) { a throws(BatchNormError) in
        try withBuffer(b) { b throws(BatchNormError) in try body(a, b) }
    }
}

/// `withBuffers` over four arrays.
func withBuffers<A, B, C, D, R>(
    _ a: [A]?, _ b: [B]?, _ c: [C]?, _ d: [D]?,
    _ body: (UnsafeBufferPointer<A>?, UnsafeBufferPointer<B>?, UnsafeBufferPointer<C>?, UnsafeBufferPointer<D>?)
        throws(BatchNormError) -> R
) throws(BatchNormError) -> R {
    try withBuffers(a, b) { (a, b) throws(BatchNormError) in
        try withBuffers(c, d) { (c, d) throws(BatchNormError) in try body(a, b, c, d) }
    }
}

/// `withBuffers` over six arrays.
func withBuffers<A, B, C, D, E, F, R>(
    _ a: [A]?, _ b: [B]?, _ c: [C]?, _ d: [D]?, _ e: [E]?, _ f: [F]?,
    _ body: (UnsafeBufferPointer<A>?, UnsafeBufferPointer<B>?, UnsafeBufferPointer<C>?, UnsafeBufferPointer<D>?,
             UnsafeBufferPointer<E>?, UnsafeBufferPointer<F>?) throws(BatchNormError) -> R
) throws(BatchNormError) -> R {
    try withBuffers(a, b, c, d) { (a, b, c, d) throws(BatchNormError) in
        try withBuffers(e, f) { (e, f) throws(BatchNormError) in try body(a, b, c, d, e, f) }
    }
}

/// `withBuffers` over seven arrays.
func withBuffers<A, B, C, D, E, F, G, R>(
    _ a: [A]?, _ b: [B]?, _ c: [C]?, _ d: [D]?, _ e: [E]?, _ f: [F]?, _ g: [G]?,
    _ body: (UnsafeBufferPointer<A>?, UnsafeBufferPointer<B>?, UnsafeBufferPointer<C>?, UnsafeBufferPointer<D>?,
             UnsafeBufferPointer<E>?, UnsafeBufferPointer<F>?, UnsafeBufferPointer<G>?) throws(BatchNormError) -> R
) throws(BatchNormError) -> R {
    try withBuffers(a, b, c, d, e, f) { (a, b, c, d, e, f) throws(BatchNormError) in
        try withBuffer(g) { g throws(BatchNormError) in try body(a, b, c, d, e, f, g) }
    }
}
