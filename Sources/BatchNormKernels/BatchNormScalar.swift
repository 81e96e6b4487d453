internal import CBatchNorm

/// The element types the kernels support: `Float` and `Double`.
///
/// Do not add conformances: the C core reads memory as float32 or float64
/// according to `batchNormElementWidth`.
public protocol BatchNormScalar: BinaryFloatingPoint, Sendable {
    /// Bits per element as the core sees them: 32 or 64.
    static var batchNormElementWidth: Int { get }
}

extension Float: BatchNormScalar {
    public static var batchNormElementWidth: Int { 32 }
}

extension Double: BatchNormScalar {
    public static var batchNormElementWidth: Int { 64 }
}

extension BatchNormScalar {
    static var coreType: cbn_dtype {
        precondition(MemoryLayout<Self>.size * 8 == batchNormElementWidth,
                     "BatchNormScalar conformance of \(Self.self) does not match its memory size")
        return batchNormElementWidth == 64 ? CBN_FLOAT64 : CBN_FLOAT32
    }
}
