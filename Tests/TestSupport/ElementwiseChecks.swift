import BatchNormKernels
import Foundation

// The test suite's loops over every element of a tensor: widening,
// transposition between layouts, ulp distances. They live in a
// target of their own, compiled optimized in debug builds as the reference
// is, because generic code compiled without optimization looks up type
// metadata for every element, and these loops would otherwise take most of
// `swift test`'s time (and more under the sanitizers). None of them calls
// the kernels: what the tests compare against stays independent of them.

/// Each `Float` of `values` widened to `Double` (exactly).
public func widened(_ values: [Float]) -> [Double] {
    values.map(Double.init)
}

/// The values of an NCHW tensor `[N, C, S…]` in channels-last order
/// (x[n][s][c] = x_nchw[n][c][s]); with `inverse`, values in channels-last
/// order put back in NCHW order. Elements are moved as bytes: any type of
/// 1, 2, 4 or 8 bytes.
public func transposedToChannelsLast<T>(_ x: [T], nchw: [Int], inverse: Bool = false) -> [T] {
    let n = nchw[0], channels = nchw[1], spatial = nchw.dropFirst(2).reduce(1, *)
    precondition(x.count == n * channels * spatial, "\(x.count) values for the shape \(nchw)")
    var out = x
    x.withUnsafeBytes { source in
        out.withUnsafeMutableBytes { target in
            switch MemoryLayout<T>.stride {
            case 1: transpose(UInt8.self, source, target, n, channels, spatial, inverse)
            case 2: transpose(UInt16.self, source, target, n, channels, spatial, inverse)
            case 4: transpose(UInt32.self, source, target, n, channels, spatial, inverse)
            case 8: transpose(UInt64.self, source, target, n, channels, spatial, inverse)
            default: preconditionFailure("elements of \(MemoryLayout<T>.stride) bytes")
            }
        }
    }
    return out
}

private func transpose<Word: FixedWidthInteger>(
    _: Word.Type, _ source: UnsafeRawBufferPointer, _ target: UnsafeMutableRawBufferPointer,
    _ n: Int, _ channels: Int, _ spatial: Int, _ inverse: Bool
) {
    let from = source.bindMemory(to: Word.self), to = target.bindMemory(to: Word.self)
    for i in 0..<n {
        for c in 0..<channels {
            for s in 0..<spatial {
                let first = (i * channels + c) * spatial + s, last = (i * spatial + s) * channels + c
                if inverse { to[first] = from[last] } else { to[last] = from[first] }
            }
        }
    }
}

/// The two 16-bit formats, by the bit pattern of +∞: every magnitude above
/// it is a NaN.
public enum SixteenBitFormat: UInt16, Sendable {
    case float16 = 0x7C00
    case bfloat16 = 0x7F80
}

/// Units in the last place between two values of a 16-bit format, given as
/// bit patterns: sign and magnitude mapped onto one ordered line, so ±0 are 0
/// apart; two NaNs are 0 apart, a NaN and a number `Int.max`.
public func ulps(bits a: UInt16, _ b: UInt16, in format: SixteenBitFormat) -> Int {
    let aIsNaN = a & 0x7FFF > format.rawValue, bIsNaN = b & 0x7FFF > format.rawValue
    if aIsNaN || bIsNaN { return aIsNaN && bIsNaN ? 0 : .max }
    func ordered(_ bits: UInt16) -> Int { bits & 0x8000 != 0 ? -Int(bits & 0x7FFF) : Int(bits) }
    return abs(ordered(a) - ordered(b))
}

/// The largest distance, in ulps, between `got` and the float64 `want`
/// rounded once to Float16 (the standard library's rounding).
public func worstUlps(_ got: [Float16], _ want: [Double]) -> Int {
    worstUlps(got, want, in: .float16, bits: { $0.bitPattern }, rounded: { Float16($0).bitPattern })
}

/// The largest distance, in ulps, between `got` and the float64 `want`
/// rounded once to BFloat16 (`BFloat16(Double)`, which `BFloat16Tests` checks
/// bit for bit against roundings worked out by hand).
public func worstUlps(_ got: [BFloat16], _ want: [Double]) -> Int {
    worstUlps(got, want, in: .bfloat16, bits: { $0.bitPattern }, rounded: { BFloat16($0).bitPattern })
}

private func worstUlps<H>(_ got: [H], _ want: [Double], in format: SixteenBitFormat,
                          bits: (H) -> UInt16, rounded: (Double) -> UInt16) -> Int {
    precondition(got.count == want.count)
    var worst = 0
    for i in got.indices { worst = max(worst, ulps(bits: bits(got[i]), rounded(want[i]), in: format)) }
    return worst
}
