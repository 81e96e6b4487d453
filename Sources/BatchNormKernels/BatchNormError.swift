/// An error thrown before any work is done: when a call throws, no output
/// buffer, running statistic or layer property has changed.
///
/// `argument` names the offending argument as it is spelled in the API, and
/// `expected` / `actual` say what was wanted and what was passed.
public struct BatchNormError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of mistake the error reports.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        /// The code's name in words, e.g. `"count mismatch"`.
        public let rawValue: String
        /// The code's number: fixed for good (a new code takes the next one),
        /// so that ranks built from different versions read each other's.
        public let number: Int
        private init(_ number: Int, _ rawValue: String) {
            self.number = number
            self.rawValue = rawValue
        }
        /// The code's name in words.
        public var description: String { rawValue }

        /// A shape whose rank is outside 2...5.
        public static let invalidRank = Code(1, "invalid rank")
        /// A dimension below 1.
        public static let invalidDimension = Code(2, "invalid dimension")
        /// A shape whose element count (or byte count) does not fit in `Int`.
        public static let shapeTooLarge = Code(3, "shape too large")
        /// A buffer or array whose count does not match the shape or the channel count.
        public static let countMismatch = Code(4, "count mismatch")
        /// Training mode with one value per channel: the unbiased variance is undefined.
        public static let tooFewValuesPerChannel = Code(5, "too few values per channel")
        /// ε negative, NaN or infinite.
        public static let invalidEpsilon = Code(6, "invalid epsilon")
        /// Momentum outside [0, 1] or not a number.
        public static let invalidMomentum = Code(7, "invalid momentum")
        /// A thread count below 1.
        public static let invalidThreadCount = Code(8, "invalid thread count")
        /// An output overlapping another buffer where that is not allowed.
        public static let overlappingBuffers = Code(9, "overlapping buffers")
        /// An argument that must come with another is missing (running mean without running variance).
        public static let missingArgument = Code(10, "missing argument")
        /// The OpenMP executor was asked for but OpenMP is not compiled in.
        public static let executorUnavailable = Code(11, "executor unavailable")
        /// The core could not allocate its scratch space.
        public static let outOfMemory = Code(12, "out of memory")
        /// Synchronized batch norm: the ranks disagree on something every rank
        /// must share (pass, mode, scalar type, layout, channels, spatial
        /// extent, ε, activation, residual, γ and β, momentum; backward: which
        /// dγ and dβ, and the statistics). Thrown on every rank alike, before
        /// any buffer is written.
        public static let rankMismatch = Code(13, "rank mismatch")
        /// Synchronized batch norm: another rank's arguments failed its checks
        /// (that rank throws the reason); thrown on the other ranks, before any
        /// buffer is written.
        public static let rankFailed = Code(14, "rank failed")
        /// Synchronized batch norm: the reducer threw, timed out or returned
        /// the wrong number of values.
        public static let communicationFailed = Code(15, "communication failed")

        /// Every code; their numbers are 1, 2, ... in this order.
        static let all: [Code] = [
            .invalidRank, .invalidDimension, .shapeTooLarge, .countMismatch, .tooFewValuesPerChannel,
            .invalidEpsilon, .invalidMomentum, .invalidThreadCount, .overlappingBuffers, .missingArgument,
            .executorUnavailable, .outOfMemory, .rankMismatch, .rankFailed, .communicationFailed,
        ]

        /// The code numbered `number`, if there is one.
        static func numbered(_ number: Int) -> Code? { all.first { $0.number == number } }
    }

    /// What kind of mistake it is.
    public var code: Code
    /// The argument at fault, e.g. `"weight"` or `"shape[2]"`.
    public var argument: String
    /// What the API expected, e.g. `"64 values"`.
    public var expected: String
    /// What it got, e.g. `"63 values"`.
    public var actual: String

    /// An error of `code` about `argument`.
    ///
    /// - Parameters:
    ///   - code: What kind of mistake.
    ///   - argument: The argument at fault, as the API spells it.
    ///   - expected: What the API expected.
    ///   - actual: What it got.
    public init(_ code: Code, argument: String, expected: String, actual: String) {
        self.code = code
        self.argument = argument
        self.expected = expected
        self.actual = actual
    }

    /// `BatchNormError(code): argument: expected …, got …`.
    public var description: String {
        "BatchNormError(\(code)): \(argument): expected \(expected), got \(actual)"
    }
}

extension DecodingError {
    /// Runs `checks` over a decoded state; their error becomes `invalidState`.
    package static func checking(_ decoder: any Decoder, _ checks: () throws(BatchNormError) -> Void) throws {
        do throws(BatchNormError) {
            try checks()
        } catch {
            throw invalidState(error, at: decoder)
        }
    }

    /// `DecodingError.dataCorrupted` at the decoder's path, carrying `error`
    /// (what the decoded state failed) as its underlying error.
    package static func invalidState(_ error: BatchNormError, at decoder: any Decoder) -> DecodingError {
        .dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "\(error)", underlyingError: error))
    }
}
