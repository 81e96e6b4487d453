internal import CBatchNorm

/// The checks every entry point makes before it touches memory.
enum Check {
    static func count(_ actual: Int, equals expected: Int, argument: String, what: String = "values")
        throws(BatchNormError)
    {
        guard actual == expected else {
            throw BatchNormError(.countMismatch, argument: argument, expected: "\(expected) \(what)",
                                 actual: "\(actual) \(what)")
        }
    }

    /// A per-channel array's count must be C of `shape`. When it is the
    /// extent of the other layout's channel axis instead, the message says
    /// that the layout is the likely mistake.
    static func perChannel(_ actual: Int, of shape: BatchNormShape, argument: String) throws(BatchNormError) {
        guard actual != shape.channels else { return }
        throw BatchNormError(.countMismatch, argument: argument,
                             expected: "\(shape.channels) values (C of \(shape))",
                             actual: "\(actual) values" + shape.otherLayoutHint(channels: actual))
    }

    /// A layer's `featureCount` must be C of `shape`, with the same hint.
    static func channels(of shape: BatchNormShape, equal featureCount: Int) throws(BatchNormError) {
        guard shape.channels != featureCount else { return }
        throw BatchNormError(.countMismatch, argument: "shape[\(shape.channelAxis)]",
                             expected: "\(featureCount) channels, the layer's featureCount",
                             actual: "\(shape.channels) channels in \(shape)"
                                 + shape.otherLayoutHint(channels: featureCount))
    }

    static func epsilon(_ epsilon: Double) throws(BatchNormError) {
        guard epsilon >= 0, epsilon.isFinite else {
            throw BatchNormError(.invalidEpsilon, argument: "epsilon", expected: "a finite value ≥ 0",
                                 actual: "\(epsilon)")
        }
    }

    static func momentum(_ momentum: Double) throws(BatchNormError) {
        guard momentum >= 0, momentum <= 1 else {
            throw BatchNormError(.invalidMomentum, argument: "momentum", expected: "a value in [0, 1]",
                                 actual: "\(momentum)")
        }
    }

    /// Training mode needs m ≥ 2 values per channel (the unbiased variance divides by m − 1).
    static func trainable(_ shape: BatchNormShape) throws(BatchNormError) {
        guard shape.valuesPerChannel >= 2 else {
            throw BatchNormError(.tooFewValuesPerChannel, argument: "shape",
                                 expected: "more than 1 value per channel in training mode",
                                 actual: "\(shape.valuesPerChannel) value per channel in \(shape)")
        }
    }

    /// The merged partials of a synchronized call (count, then two values, per
    /// channel): every channel counts the same m, m ≥ `least` (2 for the
    /// forward moments, 1 for the backward sums). Different counts can only
    /// come from a reducer that did not gather what every rank sent.
    static func wholeBatch(_ partials: [Double], least: Double, shape: BatchNormShape) throws(BatchNormError) {
        let count = partials.isEmpty ? 0 : partials[0]
        guard stride(from: 0, to: partials.count, by: 3).allSatisfy({ partials[$0] == count }) else {
            throw BatchNormError(.communicationFailed, argument: "reducer",
                                 expected: "the same count of values in every channel",
                                 actual: "counts that differ between channels")
        }
        guard count >= least else {
            throw BatchNormError(.tooFewValuesPerChannel, argument: "shape",
                                 expected: "at least \(Int(least)) values per channel in the whole batch",
                                 actual: "\(count) over every rank's \(shape)")
        }
    }

    /// Two optional arguments that go together: both given, or neither.
    static func together(_ first: (name: String, given: Bool), _ second: (name: String, given: Bool))
        throws(BatchNormError)
    {
        guard first.given != second.given else { return }
        throw BatchNormError(.missingArgument, argument: first.given ? second.name : first.name,
                             expected: "\(first.name) and \(second.name) together, or neither",
                             actual: "only one of them")
    }

    /// A buffer argument as the checks see it: its name, what its count must
    /// equal, and its bytes for the aliasing rules.
    struct Buffer {
        /// What the count must equal: the shape's count of values, or C.
        enum Extent { case tensor, perChannel }

        let name: String
        let count: Int
        let extent: Extent
        let region: Region?

        /// nil for a buffer not given.
        init?<T>(_ name: String, _ buffer: UnsafeBufferPointer<T>?, _ extent: Extent) {
            guard let buffer else { return nil }
            (self.name, count, self.extent, region) = (name, buffer.count, extent, Region(name, buffer))
        }

        /// nil for a buffer not given; an output, for the aliasing rules.
        init?<T>(_ name: String, _ buffer: UnsafeMutableBufferPointer<T>?, _ extent: Extent) {
            guard let buffer else { return nil }
            (self.name, count, self.extent, region) = (name, buffer.count, extent, Region(name, buffer))
        }
    }

    /// Every given buffer's count (`shape.count` for a tensor, C for a
    /// per-channel array) in the order listed, then the aliasing rules: no
    /// output overlaps another buffer, except the pairs in `exactAliases`
    /// when they are the very same memory.
    static func buffers(_ buffers: [Buffer?], of shape: BatchNormShape, exactAliases: Set<[String]> = [])
        throws(BatchNormError)
    {
        let given = buffers.compactMap { $0 }
        for buffer in given {
            switch buffer.extent {
            case .tensor: try count(buffer.count, equals: shape.count, argument: buffer.name)
            case .perChannel: try perChannel(buffer.count, of: shape, argument: buffer.name)
            }
        }
        try noOverlaps(given.map(\.region), exactAliases: exactAliases)
    }

    /// A buffer's byte range, for the aliasing rules.
    struct Region {
        let name: String
        let start: UInt
        let end: UInt
        let isOutput: Bool

        init?<T>(_ name: String, _ buffer: UnsafeBufferPointer<T>?, output: Bool = false) {
            guard let buffer, let base = buffer.baseAddress, buffer.count > 0 else { return nil }
            self.name = name
            start = UInt(bitPattern: base)
            end = start + UInt(buffer.count * MemoryLayout<T>.stride)
            isOutput = output
        }

        init?<T>(_ name: String, _ buffer: UnsafeMutableBufferPointer<T>?) {
            self.init(name, buffer.map(UnsafeBufferPointer.init), output: true)
        }
    }

    /// Throws if an output overlaps any other buffer, except the pairs in
    /// `exactAliases` when they are the very same memory.
    static func noOverlaps(_ regions: [Region?], exactAliases: Set<[String]> = []) throws(BatchNormError) {
        let present = regions.compactMap { $0 }
        for (i, a) in present.enumerated() {
            for b in present[(i + 1)...] where a.isOutput || b.isOutput {
                guard a.start < b.end, b.start < a.end else { continue }
                let identical = a.start == b.start && a.end == b.end
                if identical && (exactAliases.contains([a.name, b.name]) || exactAliases.contains([b.name, a.name])) {
                    continue
                }
                let allowed = exactAliases.filter { $0.contains(a.name) && $0.contains(b.name) }.isEmpty
                    ? "no overlap" : "the same memory exactly, or no overlap"
                throw BatchNormError(.overlappingBuffers, argument: "\(a.name), \(b.name)", expected: allowed,
                                     actual: "overlapping memory")
            }
        }
    }

    static func status(_ status: cbn_status) throws(BatchNormError) {
        switch status {
        case CBN_OK:
            return
        case CBN_OUT_OF_MEMORY:
            throw BatchNormError(.outOfMemory, argument: "shape", expected: "scratch space for the plan",
                                 actual: "allocation failed")
        default:
            // The Swift checks above reject everything the core rejects; reaching
            // this means they disagree, which is a bug in this package.
            preconditionFailure("CBatchNorm rejected arguments that passed the Swift checks: \(status)")
        }
    }
}

extension UnsafeBufferPointer {
    /// The base address, or nil for a nil or empty buffer.
    var rawBase: UnsafeRawPointer? { baseAddress.map(UnsafeRawPointer.init) }
}

extension UnsafeMutableBufferPointer {
    var rawBase: UnsafeMutableRawPointer? { baseAddress.map(UnsafeMutableRawPointer.init) }
}
