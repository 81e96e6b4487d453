import BatchNormKernels
import BatchNormReference
import BatchNormTestSupport
import Foundation
import Testing

/// `count` values uniform in `center ± spread` (the reference module's
/// generator, compiled optimized: the tests' data costs little of their time).
func randomValues<S: BatchNormScalar>(_ count: Int, center: Double = 0, spread: Double = 1, seed: UInt64) -> [S] {
    if S.self == Double.self {
        return unsafeBitCast(ReferenceBatchNorm.uniformValues(count, center: center, spread: spread, seed: seed),
                             to: [S].self)
    }
    if S.self == Float.self {
        return unsafeBitCast(ReferenceBatchNorm.uniformFloats(count, center: center, spread: spread, seed: seed),
                             to: [S].self)
    }
    return ReferenceBatchNorm.uniformValues(count, center: center, spread: spread, seed: seed).map { S($0) }
}

/// A copy of `values` in memory the caller deallocates: the pointer API's
/// arguments without a closure per array.
func allocatedCopy<S>(_ values: [S]) -> UnsafeMutableBufferPointer<S> {
    let buffer = UnsafeMutableBufferPointer<S>.allocate(capacity: values.count)
    _ = buffer.initialize(from: values)
    return buffer
}

/// `values` as the [Float] (`floats`) or [Double] (`doublesAsIs`) it is,
/// else nil: a check of the type, not `as?`, which converts an array of a
/// generic type element by element.
func floats<S: BatchNormScalar>(_ values: [S]) -> [Float]? {
    S.self == Float.self ? unsafeBitCast(values, to: [Float].self) : nil
}

func doublesAsIs<S: BatchNormScalar>(_ values: [S]) -> [Double]? {
    S.self == Double.self ? unsafeBitCast(values, to: [Double].self) : nil
}

/// The normwise error of the reference module, for either scalar type.
func normwiseError<S: BatchNormScalar>(_ got: [S], _ want: [Double], scale: Double = 0) -> Double {
    if let got = floats(got) { return ReferenceBatchNorm.normwiseError(got, want, scale: scale) }
    return ReferenceBatchNorm.normwiseError(doublesAsIs(got)!, want, scale: scale)
}

func doubles<S: BatchNormScalar>(_ values: [S]) -> [Double] {
    if let values = doublesAsIs(values) { return values }
    return widened(floats(values)!)
}

/// Every executor this build can run, at thread counts 1 to 4.
let allExecutors: [BatchNormExecutor] = {
    var executors: [BatchNormExecutor] = [.serial]
    executors += (1...4).map { BatchNormExecutor.dispatch(threads: $0) }
    if isOpenMPAvailable { executors += (1...4).map { BatchNormExecutor.openMP(threads: $0) } }
    return executors
}()

/// A compact set: one of each kind of executor at 2 threads, for the slower tests.
let someExecutors: [BatchNormExecutor] = {
    var executors: [BatchNormExecutor] = [.serial, .dispatch(threads: 3)]
    if isOpenMPAvailable { executors.append(.openMP(threads: 2)) }
    return executors
}()

/// Shapes that exercise the plan: edges (N = 1, C = 1, spatial = 1, odd
/// sizes, ranks 2–5), C much larger than the thread count, channels split into
/// several items (planes and columns layouts), and fused channels.
let edgeShapes: [[Int]] = [
    [2, 1],                 // rank 2, C = 1: planes layout with m = 2
    [1, 3, 5],              // N = 1
    [4, 1, 7, 9],           // C = 1, odd sizes
    [3, 5, 1, 1],           // spatial = 1 at rank 4: columns layout
    [2, 3, 2, 3, 5],        // rank 5
    [17, 130],              // rank 2, two channel blocks of the columns layout, ragged
    [10_000, 20],           // columns layout, channels split into several row parts
    [2, 3, 150, 150],       // planes layout, each channel split into several parts
    [1, 1, 70_001],         // C = 1 with a long odd plane: many parts, ragged tail
    [4, 100, 3, 3],         // C much larger than the thread count, short runs
    [3, 16, 17, 19],        // fused planes with odd runs
    [1000, 3, 5, 5],        // short runs, a block of 3 channels per item, split into parts
    [64, 40, 7, 7],         // 7x7 planes: blocks of 20 channels per item
    [2100, 1030],           // columns: a ragged second block of channels, three row parts (the last ragged)
    [3, 17_000],            // columns: rows of 17 channel blocks
    [2, 600, 7, 7],         // 7x7 planes: elementwise blocks (334 channels) unlike the fused ones (256)
]

/// Random shapes of rank 2 to 5 with at most about 40 000 elements.
func randomShapes(count: Int, seed: UInt64) -> [[Int]] {
    var rng = SplitMix64(seed: seed)
    return (0..<count).map { _ in
        let rank = Int.random(in: 2...5, using: &rng)
        var shape = [Int.random(in: 1...8, using: &rng), Int.random(in: 1...40, using: &rng)]
        for _ in 2..<rank { shape.append(Int.random(in: 1...(rank == 5 ? 6 : 25), using: &rng)) }
        if shape[0] * shape.dropFirst(2).reduce(1, *) < 2 { shape[0] = 2 }
        return shape
    }
}

/// Bounds, normwise, of float32 and float64 kernels against the float64
/// reference on the same input. Each output is a few roundings of the type
/// (u = 6e-8 in float, 1.1e-16 in double) on terms that can partly cancel: y
/// is one fused multiply-add of (x − μ_hi) by k1 plus k3, dx three terms
/// (k1·dy + k2·(x − μ_hi) + k3), so a bound of tens of u, more for dx. Measured
/// over the whole suite (every test that uses these, the tight bounds set to
/// fail so that each error is printed): float y ≤ 1.4e-7, dx, dγ, dβ ≤ 2.0e-7;
/// double y ≤ 4.4e-15, gradients ≤ 1.3e-13 (on data far from zero). Each bound
/// keeps a factor 5 to 20 over those, for other instruction sets (fused
/// multiply-add or not) and the larger shapes CI adds.
enum Bound {
    static func forward<S: BatchNormScalar>(_: S.Type) -> Double { S.self == Float.self ? 1e-6 : 1e-13 }
    static func backward<S: BatchNormScalar>(_: S.Type) -> Double { S.self == Float.self ? 1e-6 : 1e-12 }
}

/// The dimensions of a tensor given as `[N, C, S₁, …]`, as laid out in
/// `layout`: channels last moves C to the end.
func dimensions(_ nchw: [Int], in layout: BatchNormLayout) -> [Int] {
    layout == .channelsFirst ? nchw : [nchw[0]] + nchw.dropFirst(2) + [nchw[1]]
}

/// Values of an NCHW tensor `[N, C, S…]` rearranged for `layout`
/// (channels last: x[n][s][c] = x_nchw[n][c][s]); with `inverse`, values laid
/// out in `layout` put back in NCHW order.
func arranged<S>(_ x: [S], nchw: [Int], in layout: BatchNormLayout, inverse: Bool = false) -> [S] {
    layout == .channelsLast ? transposedToChannelsLast(x, nchw: nchw, inverse: inverse) : x
}

/// The bytes of `values`: equal only for the same bit patterns, element for element.
func bytes<T>(_ values: [T]) -> Data {
    values.withUnsafeBytes { Data($0) }
}

/// The bit pattern of a `Float` or `Double`, widened: equal only for the same bits (NaNs included).
func bitPattern<S: BatchNormScalar>(_ value: S) -> UInt64 {
    S.self == Float.self ? UInt64(unsafeBitCast(value, to: Float.self).bitPattern)
                         : unsafeBitCast(value, to: Double.self).bitPattern
}

/// Expects `body` to throw a `BatchNormError` of `code` (and naming `argument`, when given).
func expectThrows(
    _ code: BatchNormError.Code, argument: String? = nil, sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () throws(BatchNormError) -> Void
) {
    do throws(BatchNormError) {
        try body()
        Issue.record("expected \(code), but nothing was thrown", sourceLocation: sourceLocation)
    } catch {
        #expect(error.code == code && (argument == nil || error.argument == argument), "\(error)",
                sourceLocation: sourceLocation)
    }
}

/// BATCHNORM_LARGE_TESTS=1 (CI sets it) runs the tests over tensors of tens
/// of MB and more, which take minutes in a debug build; `swift test` alone
/// skips them.
let largeTestsEnabled = ProcessInfo.processInfo.environment["BATCHNORM_LARGE_TESTS"] == "1"
