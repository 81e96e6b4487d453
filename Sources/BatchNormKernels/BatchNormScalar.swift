internal import CBatchNorm

/// The element types of tensors: `Float`, `Double`, `Float16` (IEEE
/// binary16) and ``BFloat16``.
///
/// γ, β, the running statistics and their gradients have the type
/// `Parameter`: the element type itself for `Float` and `Double`, and `Float`
/// for the two half formats (mixed precision, PyTorch's convention). Saved
/// batch statistics are `Double` for every element type, and the statistics
/// accumulate in `Double`. Half-format tensors are widened as they are read
/// and each output is computed in `Float` with a check that falls back to
/// `Double` where `Float` could lose accuracy; it is rounded to nearest even as
/// it is written: within one unit in the last place of the exact result of
/// the same formula on the same inputs.
///
/// Do not add conformances: the C core reads memory according to
/// `batchNormElementKind`.
public protocol BatchNormElement: Sendable {
    /// The type of γ, β, the running statistics and their gradients.
    associatedtype Parameter: BatchNormScalar
    /// What the core reads: 0 float32, 1 float64, 2 binary16, 3 bfloat16.
    static var batchNormElementKind: Int { get }
    /// +0.
    static var zero: Self { get }
}

/// The element types that are also their own parameter type and support
/// arithmetic: `Float` and `Double`.
public protocol BatchNormScalar: BatchNormElement, BinaryFloatingPoint, Codable where Parameter == Self {}

extension Float: BatchNormScalar {
    public typealias Parameter = Float
    public static var batchNormElementKind: Int { 0 }
}

extension Double: BatchNormScalar {
    public typealias Parameter = Double
    public static var batchNormElementKind: Int { 1 }
}

extension Float16: BatchNormElement {
    public typealias Parameter = Float
    public static var batchNormElementKind: Int { 2 }
}

extension BFloat16: BatchNormElement {
    public typealias Parameter = Float
    public static var batchNormElementKind: Int { 3 }
}

extension BatchNormElement {
    /// The core's code for this type. The core's table of element types is
    /// the one source of their sizes; a conformance whose kind the core does
    /// not know, or whose size differs from the core's, stops the program.
    static var coreType: cbn_dtype {
        let type = UInt32(exactly: batchNormElementKind).map(cbn_dtype.init(rawValue:))
        precondition(type.map(cbn_element_size) == Int64(MemoryLayout<Self>.size),
                     "BatchNormElement conformance of \(Self.self) does not match the core's element types")
        return type!
    }
}

/// The Swift name of an element type of the core, as errors print it.
func elementTypeName(_ type: cbn_dtype) -> String {
    switch type {
    case CBN_FLOAT32: "Float"
    case CBN_FLOAT64: "Double"
    case CBN_FLOAT16: "Float16"
    case CBN_BFLOAT16: "BFloat16"
    default: "element type \(type.rawValue)"
    }
}
