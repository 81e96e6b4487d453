/// The shape of an NCHW tensor: `[N, C]`, `[N, C, L]`, `[N, C, H, W]` or
/// `[N, C, D, H, W]`, stored contiguously with the last dimension fastest.
///
/// Statistics are per channel over the `valuesPerChannel = N · (product of
/// the spatial dimensions)` values that share a channel index.
public struct BatchNormShape: Hashable, Sendable, CustomStringConvertible {
    /// The dimensions as given, `[N, C, …]`.
    public let dimensions: [Int]
    /// The product of the dimensions.
    public let count: Int

    /// Validates `dimensions`: rank 2 to 5, every dimension at least 1, and
    /// an element count whose size in bytes (of `Double`) fits in `Int`.
    public init(_ dimensions: [Int]) throws(BatchNormError) {
        guard (2...5).contains(dimensions.count) else {
            throw BatchNormError(.invalidRank, argument: "shape", expected: "rank 2 to 5 ([N, C, …])",
                                 actual: "rank \(dimensions.count) \(dimensions)")
        }
        for (axis, extent) in dimensions.enumerated() where extent < 1 {
            throw BatchNormError(.invalidDimension, argument: "shape[\(axis)]",
                                 expected: "a dimension of at least 1", actual: "\(extent) in \(dimensions)")
        }
        var count = 1
        for extent in dimensions {
            let (product, overflow) = count.multipliedReportingOverflow(by: extent)
            guard !overflow, !product.multipliedReportingOverflow(by: MemoryLayout<Double>.size).overflow else {
                throw BatchNormError(.shapeTooLarge, argument: "shape",
                                     expected: "at most \(Int.max / MemoryLayout<Double>.size) elements",
                                     actual: "\(dimensions) overflows Int")
            }
            count = product
        }
        self.dimensions = dimensions
        self.count = count
    }

    /// N, the batch size.
    public var batchSize: Int { dimensions[0] }
    /// C, the number of channels (features).
    public var channels: Int { dimensions[1] }
    /// The product of the dimensions after C (1 for rank 2).
    public var spatialSize: Int { dimensions.dropFirst(2).reduce(1, *) }
    /// m = N · spatialSize: the number of values each channel's statistics cover.
    public var valuesPerChannel: Int { batchSize * spatialSize }

    public var description: String { dimensions.map(String.init).joined(separator: "×") }
}
