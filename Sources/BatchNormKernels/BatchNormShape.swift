/// Where the channel dimension of a tensor lies in memory.
///
/// Statistics are per channel in either layout, and a channels-last call
/// gives, bit for bit, the results of the channels-first call on the
/// transposed tensor. For rank 2, `[N, C]`, the two layouts are the same
/// memory.
public enum BatchNormLayout: String, Hashable, Sendable, CaseIterable, Codable, CustomStringConvertible {
    /// `[N, C, S₁, …]` (NCL, NCHW, NCDHW): each channel's plane is contiguous.
    case channelsFirst
    /// `[N, S₁, …, C]` (NLC, NHWC, NDHWC): the channels of one position are contiguous.
    case channelsLast

    /// The name as the benchmark and error messages print it.
    public var description: String {
        switch self {
        case .channelsFirst: "channels-first"
        case .channelsLast: "channels-last"
        }
    }
}

/// The shape of a tensor of rank 2 to 5 and its memory layout, stored
/// contiguously with the last dimension fastest: `[N, C, …]` channels first
/// (the default) or `[N, …, C]` channels last.
///
/// Statistics are per channel over the `valuesPerChannel = N · (product of
/// the spatial dimensions)` values that share a channel index.
public struct BatchNormShape: Hashable, Sendable, CustomStringConvertible {
    /// The dimensions as given: `[N, C, …]` or, channels last, `[N, …, C]`.
    public let dimensions: [Int]
    /// Where the channel dimension lies.
    public let layout: BatchNormLayout
    /// The product of the dimensions.
    public let count: Int

    /// Validates `dimensions`: rank 2 to 5, every dimension at least 1, and
    /// an element count whose size in bytes (of `Double`) fits in `Int`.
    ///
    /// - Parameters:
    ///   - dimensions: `[N, C, S₁, …]` channels first, `[N, S₁, …, C]` channels last: 2 to 5 of them.
    ///   - layout: Where C lies: `.channelsFirst` (the default) or `.channelsLast`.
    public init(_ dimensions: [Int], layout: BatchNormLayout = .channelsFirst) throws(BatchNormError) {
        guard (2...5).contains(dimensions.count) else {
            let form = layout == .channelsFirst ? "[N, C, …]" : "[N, …, C]"
            throw BatchNormError(.invalidRank, argument: "shape", expected: "rank 2 to 5 (\(form))",
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
        self.layout = layout
        self.count = count
    }

    /// The index of C in `dimensions`: 1 channels first, the last channels last.
    public var channelAxis: Int { layout == .channelsFirst ? 1 : dimensions.count - 1 }
    /// N, the batch size.
    public var batchSize: Int { dimensions[0] }
    /// C, the number of channels (features).
    public var channels: Int { dimensions[channelAxis] }
    /// The product of the dimensions other than N and C (1 for rank 2).
    public var spatialSize: Int { count / (batchSize * channels) }
    /// m = N · spatialSize: the number of values each channel's statistics cover.
    public var valuesPerChannel: Int { batchSize * spatialSize }

    /// E.g. `32×256×56×56`, or `32×56×56×256 channels-last`.
    public var description: String {
        let extents = dimensions.map(String.init).joined(separator: "×")
        return layout == .channelsFirst ? extents : "\(extents) \(layout)"
    }
}

extension BatchNormShape {
    /// When `channels` is the extent of the other layout's channel axis (and
    /// not this one's), a sentence saying so, for an error message; else "".
    func otherLayoutHint(channels expected: Int) -> String {
        guard dimensions.count > 2 else { return "" }
        let other: BatchNormLayout = layout == .channelsFirst ? .channelsLast : .channelsFirst
        let axis = other == .channelsFirst ? 1 : dimensions.count - 1
        guard dimensions[axis] == expected, dimensions[channelAxis] != expected else { return "" }
        let name = other == .channelsFirst ? "channelsFirst" : "channelsLast"
        return "; shape[\(axis)] is \(expected): if the tensor is \(other), pass `layout: .\(name)`"
    }
}
