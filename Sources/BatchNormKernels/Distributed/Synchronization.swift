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

        /// (name, value) of each field, in the order they are compared.
        var fields: [(String, Double)] {
            zip(Header.fieldNames, [
                pass.rawValue, mode == .training ? 0 : 1, Double(scalar.rawValue),
                shape.layout == .channelsFirst ? 0 : 1, Double(shape.channels), Double(shape.spatialSize), epsilon,
                parameterGradients == .perRank ? 0 : 1, activation == .identity ? 0 : 1, hasResidual ? 1 : 0,
                affine, momentum, statistics,
            ]).map { ($0, $1) }
        }

        static let fieldNames = ["pass", "mode", "scalar type", "layout", "channels", "spatial size", "epsilon",
                                 "parameterGradients", "activation", "residual", "weight and bias", "momentum",
                                 "statistics"]

        /// FNV-1a over the bits of `values`, cut to 53 bits so that a double holds it exactly.
        static func hash(_ values: UnsafeBufferPointer<Double>...) -> Double {
            var hash: UInt64 = 0xcbf2_9ce4_8422_2325
            for buffer in values {
                for value in buffer { hash = (hash ^ value.bitPattern) &* 0x0000_0100_0000_01b3 }
            }
            return Double(hash >> 11)
        }

        static func describe(_ field: String, _ value: Double) -> String {
            switch field {
            case "pass": value == 1 ? "forward" : "backward"
            case "mode": value == 0 ? "training" : "inference"
            case "scalar type":
                [CBN_FLOAT32: "Float", CBN_FLOAT64: "Double", CBN_FLOAT16: "Float16", CBN_BFLOAT16: "BFloat16"]
                    .first { Double($0.key.rawValue) == value }?.value ?? "\(value)"
            case "layout": value == 0 ? "channels first" : "channels last"
            case "epsilon": "\(value)"
            case "parameterGradients": value == 0 ? "perRank" : "wholeBatch"
            case "activation": value == 0 ? "identity" : "relu"
            case "residual": value == 0 ? "none" : "given"
            case "weight and bias": ["neither", "weight only", "bias only", "both"][Int(value)]
            case "momentum": value < 0 ? "no running statistics" : "\(value)"
            case "statistics": "statistics with hash \(UInt64(value))"
            default: "\(Int(value))"
            }
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
        static let fieldNames = ["version"] + Header.fieldNames
        static var count: Int { 2 + 4 * fieldNames.count }

        static func make(rank: Int, header: Header?, failure: BatchNormError?) -> [Double] {
            var summary = [noRank, 0]
            if let failure { summary = [Double(rank), codeNumber(failure)] }
            let values = header.map { [version] + $0.fields.map(\.1) }
            for i in fieldNames.indices {
                if let values {
                    summary += [values[i], Double(rank), values[i], Double(rank)]
                } else {
                    summary += [.infinity, noRank, -.infinity, noRank]   // neutral: a failed rank has no header
                }
            }
            return summary
        }

        static func merge(_ a: [Double], _ b: [Double]) -> [Double] {
            var out = a[0] <= b[0] ? Array(a[0..<2]) : Array(b[0..<2])
            for i in fieldNames.indices {
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
        if summary[0] != noRank { throw rankFailed(rank: summary[0], code: summary[1]) }
        for (i, name) in Summary.fieldNames.enumerated() {
            let f = 2 + 4 * i
            guard summary[f] != summary[f + 2] else { continue }
            let (low, high) = (summary[f], summary[f + 2])
            let (lowRank, highRank) = (Int(summary[f + 1]), Int(summary[f + 3]))
            let first = lowRank < highRank ? (lowRank, low) : (highRank, high)
            let second = lowRank < highRank ? (highRank, high) : (lowRank, low)
            throw BatchNormError(
                .rankMismatch, argument: name, expected: "the same on every rank",
                actual: "rank \(first.0): \(Header.describe(name, first.1)), rank \(second.0): "
                    + Header.describe(name, second.1))
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
        if merged[count] != noRank { throw rankFailed(rank: merged[count], code: merged[count + 1]) }
        return Array(merged[..<count])
    }

    /// A failed rank's error as sent: its code's number (0: none).
    private static func codeNumber(_ error: BatchNormError) -> Double { Double(error.code.number) }

    /// The error the other ranks throw for a failed `rank` that sent `code`.
    private static func rankFailed(rank: Double, code: Double) -> BatchNormError {
        let name = BatchNormError.Code.numbered(Int(code)).map { "\($0)" } ?? "an unknown failure"
        return BatchNormError(.rankFailed, argument: "rank \(Int(rank))", expected: "arguments that pass their checks",
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
