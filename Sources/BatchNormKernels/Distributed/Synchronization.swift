internal import CBatchNorm

/// The two all-reduces of a synchronized call, each over the reducer's fixed
/// tree (``BatchNormReducer/allReduce(_:merge:)``), O(log R) exchanges:
///  1. `agree`: a fixed-size summary of what every rank is about to do (the
///     smallest and largest value of each header field, with a rank holding
///     it) and of the lowest rank whose own arguments failed their checks, so
///     that ranks that disagree, or a rank that failed, make every rank throw
///     before the variable-size exchange, whose sizes would not match;
///  2. `combine`: the 3 doubles per channel, merged pairwise with the core's
///     `cbn_merge_moments` or `cbn_merge_sums`, so every rank gets bitwise the
///     same result.
enum Synchronization {
    /// What every rank of a synchronized call must share.
    struct Header {
        enum Pass: Double { case forward = 1, backward = 2 }
        var pass: Pass
        var mode: BatchNormMode
        var scalar: cbn_dtype
        var shape: BatchNormShape
        var epsilon: Double
        /// Backward: which dγ and dβ (in inference mode it decides whether the sums are exchanged).
        var parameterGradients: BatchNormParameterGradients = .perRank
        /// The epilogue: replicas that differ here would diverge without an error.
        var activation: BatchNormActivation = .identity
        var hasResidual = false
        /// Whether γ and β are given (1 and 2, added).
        var affine = 0.0
        /// Forward training: the running statistics' update (-1 without them).
        var momentum = -1.0
        /// Backward: a 53-bit hash of the statistics it is given, which every
        /// rank must share (the synchronized forward's).
        var statistics = 0.0

        /// One field of the wire format: its name (as errors print it), its
        /// value as sent, and how an error describes a value.
        struct Field: Sendable {
            let name: String
            let value: @Sendable (Header) -> Double
            let describe: @Sendable (Double) -> String

            init(_ name: String, _ value: @escaping @Sendable (Header) -> Double,
                 describe: @escaping @Sendable (Double) -> String = integer) {
                (self.name, self.value, self.describe) = (name, value, describe)
            }
        }

        /// The wire format: every field, in the order sent and compared.
        static let wire: [Field] = [
            Field("pass", { $0.pass.rawValue }) { $0 == 1 ? "forward" : "backward" },
            Field("mode", { $0.mode == .training ? 0 : 1 }) { $0 == 0 ? "training" : "inference" },
            Field("scalar type", { Double($0.scalar.rawValue) }) { value in
                UInt32(exactly: value).map { elementTypeName(cbn_dtype(rawValue: $0)) } ?? "\(value)"
            },
            Field("layout", { $0.shape.layout == .channelsFirst ? 0 : 1 }) {
                $0 == 0 ? "channels first" : "channels last"
            },
            Field("channels", { Double($0.shape.channels) }),
            Field("spatial size", { Double($0.shape.spatialSize) }),
            Field("epsilon", { $0.epsilon }) { "\($0)" },
            Field("parameterGradients", { $0.parameterGradients == .perRank ? 0 : 1 }) {
                $0 == 0 ? "perRank" : "wholeBatch"
            },
            Field("activation", { $0.activation == .identity ? 0 : 1 }) { $0 == 0 ? "identity" : "relu" },
            Field("residual", { $0.hasResidual ? 1 : 0 }) { $0 == 0 ? "none" : "given" },
            Field("weight and bias", { $0.affine }) {
                let names = ["neither", "weight only", "bias only", "both"]
                return Int(exactly: $0).flatMap { names.indices.contains($0) ? names[$0] : nil } ?? "\($0)"
            },
            Field("momentum", { $0.momentum }) { $0 < 0 ? "no running statistics" : "\($0)" },
            Field("statistics", { $0.statistics }) { "statistics with hash \(integer($0))" },
        ]

        /// A value that should be an integer, printed as one (as itself if it is not).
        @Sendable static func integer(_ value: Double) -> String {
            UInt64(exactly: value).map { "\($0)" } ?? Int64(exactly: value).map { "\($0)" } ?? "\(value)"
        }

        /// FNV-1a over the bits of `values`, cut to 53 bits so that a double holds it exactly.
        static func hash(_ values: UnsafeBufferPointer<Double>...) -> Double {
            var hash: UInt64 = 0xcbf2_9ce4_8422_2325
            for buffer in values {
                for value in buffer { hash = (hash ^ value.bitPattern) &* 0x0000_0100_0000_01b3 }
            }
            return Double(hash >> 11)
        }
    }

    /// The version of the summary below; ranks of other versions disagree on it.
    private static let version = 2.0
    /// Stands for "no rank" in the summary: above every rank.
    private static let noRank = Double(Int32.max)

    /// The agreement summary: the failed rank (or `noRank`) and its error's
    /// code index, then for the version and each header field the smallest
    /// value, a rank holding it, the largest and a rank holding it. Merging
    /// two summaries keeps the lower failed rank and, for each field, the
    /// smaller minimum and the larger maximum (ties: the lower rank), in
    /// whichever order they come: every rank ends with the same summary.
    private enum Summary {
        static let fields = [Header.Field("version", { _ in version })] + Header.wire
        static var count: Int { 2 + 4 * fields.count }

        static func make(rank: Int, header: Header?, failure: BatchNormError?) -> [Double] {
            var summary = [noRank, 0]
            if let failure { summary = [Double(rank), codeNumber(failure)] }
            for field in fields {
                if let header {
                    let value = field.value(header)
                    summary += [value, Double(rank), value, Double(rank)]
                } else {
                    summary += [.infinity, noRank, -.infinity, noRank]   // neutral: a failed rank has no header
                }
            }
            return summary
        }

        static func merge(_ a: [Double], _ b: [Double]) -> [Double] {
            var out = a[0] <= b[0] ? Array(a[0..<2]) : Array(b[0..<2])
            for i in fields.indices {
                let f = 2 + 4 * i
                let smaller = a[f] < b[f] || (a[f] == b[f] && a[f + 1] <= b[f + 1]) ? a : b
                let larger = a[f + 2] > b[f + 2] || (a[f + 2] == b[f + 2] && a[f + 3] <= b[f + 3]) ? a : b
                out += [smaller[f], smaller[f + 1], larger[f + 2], larger[f + 3]]
            }
            return out
        }
    }

    /// Runs `check` (this rank's own argument checks) and exchanges its
    /// outcome and `header` with every rank. Returns on every rank when all
    /// ranks passed and agree; otherwise every rank throws: a failed rank its
    /// own error, the others ``BatchNormError/Code/rankFailed`` naming the
    /// first failed rank; on disagreement, every rank the same
    /// ``BatchNormError/Code/rankMismatch``.
    static func agree(
        _ reducer: any BatchNormReducer, header: @autoclosure () -> Header,
        check: () throws(BatchNormError) -> Void
    ) throws(BatchNormError) {
        do throws(BatchNormError) {
            try check()
        } catch {
            try exchange(reducer, header: nil, failure: error)
        }
        try exchange(reducer, header: header(), failure: nil)
    }

    /// Runs `body`, the checks an entry point makes before it reaches a
    /// synchronized kernel call. If they fail and there is a `reducer`, this
    /// rank still takes part in the header exchange, as a failed rank, so
    /// that the other ranks throw instead of waiting for it; then it throws
    /// its own error.
    static func precheck<R>(
        _ reducer: (any BatchNormReducer)?, _ body: () throws(BatchNormError) -> R
    ) throws(BatchNormError) -> R {
        do throws(BatchNormError) {
            return try body()
        } catch {
            if let reducer { try exchange(reducer, header: nil, failure: error) }
            throw error
        }
    }

    /// The agreement: this rank's header, or its failure, summarized over
    /// every rank; throws as `agree` says (with `failure`, always).
    private static func exchange(
        _ reducer: any BatchNormReducer, header: Header?, failure: BatchNormError?
    ) throws(BatchNormError) {
        let local = Summary.make(rank: reducer.rank, header: header, failure: failure)
        let summary = try allReduce(reducer, local, merge: Summary.merge)
        if let failure { throw failure }
        guard summary.count == Summary.count else {
            throw BatchNormError(.communicationFailed, argument: "reducer", expected: "\(Summary.count) values",
                                 actual: "\(summary.count) values")
        }
        try throwIfFailed(rank: summary[0], code: summary[1], of: reducer)
        for (i, field) in Summary.fields.enumerated() {
            let f = 2 + 4 * i
            guard summary[f] != summary[f + 2] else { continue }
            let (low, high) = (summary[f], summary[f + 2])
            let (lowRank, highRank) = (Int(exactly: summary[f + 1]) ?? .max, Int(exactly: summary[f + 3]) ?? .max)
            let first = lowRank < highRank ? (lowRank, low) : (highRank, high)
            let second = lowRank < highRank ? (highRank, high) : (lowRank, low)
            throw BatchNormError(
                .rankMismatch, argument: field.name, expected: "the same on every rank",
                actual: "rank \(first.0): \(field.describe(first.1)), rank \(second.0): \(field.describe(second.1))")
        }
    }

    /// Merges this rank's `3·channels` partials with every rank's over the
    /// reducer's tree, pairwise with `merge` (`cbn_merge_moments` or
    /// `cbn_merge_sums` of two sets, the lower ranks' first). A rank whose
    /// partial pass failed (`failure`) still takes part, so that no rank
    /// waits for it: two more values carry the lowest failed rank and its
    /// error, and every rank throws (the failed one its own error, the others
    /// `rankFailed`).
    static func combine(
        _ reducer: any BatchNormReducer, _ partials: [Double], failure: BatchNormError? = nil,
        merge: @escaping (Int64, Int64, UnsafePointer<Double>?, UnsafeMutablePointer<Double>?) -> Void
    ) throws(BatchNormError) -> [Double] {
        let status: [Double] = failure.map { [Double(reducer.rank), codeNumber($0)] } ?? [noRank, 0]
        let count = partials.count
        let merged = try allReduce(reducer, partials + status) { (lower: [Double], higher: [Double]) -> [Double] in
            var whole = [Double](repeating: 0, count: count)
            merge(Int64(count / 3), 2, Array(lower[..<count]) + Array(higher[..<count]), &whole)
            let failed: ArraySlice<Double> = lower[count] <= higher[count] ? lower[count...] : higher[count...]
            return whole + failed
        }
        if let failure { throw failure }
        guard merged.count == count + 2 else {
            throw BatchNormError(.communicationFailed, argument: "reducer", expected: "\(count + 2) values",
                                 actual: "\(merged.count) values")
        }
        try throwIfFailed(rank: merged[count], code: merged[count + 1], of: reducer)
        return Array(merged[..<count])
    }

    /// A failed rank's error as sent: its code's number (0: none).
    private static func codeNumber(_ error: BatchNormError) -> Double { Double(error.code.number) }

    /// Throws what a merged status says: nothing for `noRank`;
    /// ``BatchNormError/Code/rankFailed`` naming a rank of the group, with the
    /// name of the code it sent; ``BatchNormError/Code/communicationFailed``
    /// for a rank that is not in the group (a reducer that garbled the values).
    private static func throwIfFailed(rank: Double, code: Double, of reducer: any BatchNormReducer)
        throws(BatchNormError)
    {
        guard rank != noRank else { return }
        guard let failed = Int(exactly: rank), (0..<reducer.rankCount).contains(failed) else {
            throw BatchNormError(.communicationFailed, argument: "reducer",
                                 expected: "a failed rank in 0..<\(reducer.rankCount), or none",
                                 actual: "\(rank)")
        }
        let name = Int(exactly: code).flatMap(BatchNormError.Code.numbered).map { "\($0)" } ?? "an unknown failure"
        throw BatchNormError(.rankFailed, argument: "rank \(failed)", expected: "arguments that pass their checks",
                             actual: name)
    }

    /// The reducer's all-reduce, with a transport's error as
    /// ``BatchNormError/Code/communicationFailed``.
    private static func allReduce(
        _ reducer: any BatchNormReducer, _ local: [Double], merge: ([Double], [Double]) -> [Double]
    ) throws(BatchNormError) -> [Double] {
        guard reducer.rankCount >= 1, (0..<reducer.rankCount).contains(reducer.rank) else {
            throw BatchNormError(.communicationFailed, argument: "reducer",
                                 expected: "a rank in 0..<rankCount, rankCount ≥ 1",
                                 actual: "rank \(reducer.rank) of \(reducer.rankCount)")
        }
        do {
            return try reducer.allReduce(local, merge: merge)
        } catch let error as BatchNormError {
            throw error
        } catch {
            throw BatchNormError(.communicationFailed, argument: "reducer", expected: "a pairwise exchange",
                                 actual: "\(error)")
        }
    }
}
