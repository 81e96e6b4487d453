internal import CBatchNorm

/// The two exchanges of a synchronized call (see ``BatchNormReducer``):
///  1. `agree`: every rank sends a fixed-size header (what it is about to do
///     and whether its own arguments passed their checks), so that ranks that
///     disagree, or a rank that failed, make every rank throw before the
///     variable-size exchange, whose sizes would not match;
///  2. `combine`: every rank sends its 3 doubles per channel and merges all
///     ranks' in rank order with the core's `cbn_merge_moments` or
///     `cbn_merge_sums`, so every rank gets bitwise the same result.
enum Synchronization {
    /// What every rank of a synchronized call must share.
    struct Header {
        enum Pass: Double { case forward = 1, backward = 2 }
        var pass: Pass
        var mode: BatchNormMode
        var scalar: cbn_dtype
        var shape: BatchNormShape
        var epsilon: Double

        /// (name, value) of each field, in the order they are compared.
        var fields: [(String, Double)] {
            [("pass", pass.rawValue), ("mode", mode == .training ? 0 : 1), ("scalar type", Double(scalar.rawValue)),
             ("layout", shape.layout == .channelsFirst ? 0 : 1), ("channels", Double(shape.channels)),
             ("spatial size", Double(shape.spatialSize)), ("epsilon", epsilon)]
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
            default: "\(Int(value))"
            }
        }
    }

    /// The header's size on the wire: a version, the fields, the local outcome.
    private static let headerLength = 10
    private static let version = 1.0

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

    /// The header exchange: this rank's header, or its failure; throws as
    /// `agree` says (with `failure`, always).
    private static func exchange(
        _ reducer: any BatchNormReducer, header: Header?, failure: BatchNormError?
    ) throws(BatchNormError) {
        var message = [Double](repeating: 0, count: headerLength)
        message[0] = version
        if let header {
            for (i, field) in header.fields.enumerated() { message[1 + i] = field.1 }
        }
        if let failure {
            message[headerLength - 1] = Double(1 + (BatchNormError.Code.all.firstIndex(of: failure.code) ?? -1))
        }
        let all = try gather(reducer, message)
        if let failure { throw failure }
        let headers = (0..<reducer.rankCount).map { Array(all[($0 * headerLength)..<(($0 + 1) * headerLength)]) }
        if let failed = headers.firstIndex(where: { $0[headerLength - 1] != 0 || $0[0] != version }) {
            let codeIndex = Int(headers[failed][headerLength - 1]) - 1
            let code = BatchNormError.Code.all.indices.contains(codeIndex)
                ? "\(BatchNormError.Code.all[codeIndex])" : "an unknown failure"
            throw BatchNormError(.rankFailed, argument: "rank \(failed)", expected: "arguments that pass their checks",
                                 actual: code)
        }
        guard let header else { return }
        for (i, (name, _)) in header.fields.enumerated() {
            let first = headers[0][1 + i]
            if let other = headers.firstIndex(where: { $0[1 + i] != first }) {
                throw BatchNormError(
                    .rankMismatch, argument: name, expected: "the same on every rank",
                    actual: "rank 0: \(Header.describe(name, first)), rank \(other): "
                        + Header.describe(name, headers[other][1 + i]))
            }
        }
    }

    /// All-gathers this rank's `3·channels` partials and merges every rank's in
    /// rank order with `merge` (`cbn_merge_moments` or `cbn_merge_sums`).
    static func combine(
        _ reducer: any BatchNormReducer, _ partials: [Double],
        merge: (Int64, Int64, UnsafePointer<Double>?, UnsafeMutablePointer<Double>?) -> Void
    ) throws(BatchNormError) -> [Double] {
        let all = try gather(reducer, partials)
        var whole = [Double](repeating: 0, count: partials.count)
        merge(Int64(partials.count / 3), Int64(reducer.rankCount), all, &whole)
        return whole
    }

    /// The reducer's all-gather, with its errors and a wrong result count as
    /// ``BatchNormError/Code/communicationFailed``.
    private static func gather(_ reducer: any BatchNormReducer, _ local: [Double]) throws(BatchNormError)
        -> [Double]
    {
        let all: [Double]
        do {
            all = try reducer.allGather(local)
        } catch let error as BatchNormError {
            throw error
        } catch {
            throw BatchNormError(.communicationFailed, argument: "reducer", expected: "an all-gather",
                                 actual: "\(error)")
        }
        guard reducer.rankCount >= 1, all.count == reducer.rankCount * local.count else {
            throw BatchNormError(.communicationFailed, argument: "reducer",
                                 expected: "\(reducer.rankCount) × \(local.count) values",
                                 actual: "\(all.count) values")
        }
        return all
    }
}
