public import BatchNormKernels
internal import CBatchNormMPI

/// A `BatchNormReducer` over MPI: synchronized batch norm between the
/// processes of `MPI_COMM_WORLD`, each of which holds its slice of the batch.
///
/// ```swift
/// let reducer = try MPIReducer()                                 // every rank; MPI_COMM_WORLD
/// var bn = try BatchNorm<Float>(featureCount: 16)
/// let shape = [mySlice.count / (16 * 8 * 8), 16, 8, 8]           // this rank's images: counts may differ
/// let out = try bn.forward(mySlice, shape: shape, reducer: reducer)   // the whole batch's statistics
/// ```
/// launched as `mpirun -np 4 .build/release/my-trainer`, with
/// ``finalize()`` on every rank at the end. The exchange is one
/// `MPI_Allgather` of a fixed-size header and one of 3 doubles per channel,
/// merged in rank order on every rank: its result is the same on every rank
/// (an all-reduce would leave the order of additions to MPI).
///
/// Make the package's synchronized calls from the thread that created the
/// reducer (MPI is initialized with `MPI_THREAD_FUNNELED`), in the same order
/// on every rank. Requires Open MPI (Debian's `libopenmpi-dev`) when the
/// package is built; ``isAvailable`` tells.
public final class MPIReducer: BatchNormReducer, @unchecked Sendable {
    /// This process's rank in `MPI_COMM_WORLD`.
    public let rank: Int
    /// The number of processes in `MPI_COMM_WORLD`.
    public let rankCount: Int
    private let communicator: OpaquePointer

    /// Whether the package was built with Open MPI.
    public static var isAvailable: Bool { cbn_mpi_available() != 0 }

    /// Initializes MPI if the program has not, and joins a duplicate of
    /// `MPI_COMM_WORLD` (so that these collectives never match the program's
    /// own). Collective: every rank makes it. Throws
    /// `BatchNormError.Code.communicationFailed` when MPI is missing or fails.
    public init() throws(BatchNormError) {
        var initializedHere: Int32 = 0
        try Self.check(cbn_mpi_initialize(&initializedHere), doing: "MPI_Init_thread")
        var communicator: OpaquePointer?
        var rank: Int32 = 0, size: Int32 = 0
        try Self.check(cbn_mpi_communicator_create(&communicator, &rank, &size), doing: "MPI_Comm_dup")
        self.communicator = communicator!
        self.rank = Int(rank)
        self.rankCount = Int(size)
    }

    deinit { cbn_mpi_communicator_free(communicator) }

    /// `MPI_Allgather` of `local` over the reducer's communicator: every
    /// rank's values, rank 0's first. Throws `communicationFailed` when MPI fails.
    ///
    /// - Parameter local: This rank's values; every rank passes the same count.
    public func allGather(_ local: [Double]) throws -> [Double] {
        var all = [Double](repeating: 0, count: rankCount * local.count)
        let status = cbn_mpi_allgather(communicator, local, Int64(local.count), &all)
        try Self.check(status, doing: "MPI_Allgather")
        return all
    }

    /// `MPI_Finalize`, if MPI is initialized and not yet finalized. Call it on
    /// every rank once no reducer is in use.
    public static func finalize() {
        _ = cbn_mpi_finalize()
    }

    private static func check(_ status: Int32, doing call: String) throws(BatchNormError) {
        guard status != 0 else { return }
        var message = [CChar](repeating: 0, count: 512)
        cbn_mpi_error_string(status, &message, Int32(message.count))
        let text = String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        throw BatchNormError(.communicationFailed, argument: "MPIReducer", expected: "\(call) to succeed",
                             actual: text)
    }
}
