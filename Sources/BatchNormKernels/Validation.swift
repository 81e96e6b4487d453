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

    /// Synchronized training needs m ≥ 2 values per channel in the whole batch:
    /// `moments` holds the merged count, mean and M2 of each channel.
    static func trainable(wholeBatchCounts moments: [Double], shape: BatchNormShape) throws(BatchNormError) {
        let count = moments.isEmpty ? 0 : moments[0]
        guard count >= 2 else {
            throw BatchNormError(.tooFewValuesPerChannel, argument: "shape",
                                 expected: "more than 1 value per channel in the whole batch in training mode",
                                 actual: "\(Int(count)) value per channel over every rank's \(shape)")
        }
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
