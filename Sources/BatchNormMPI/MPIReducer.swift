public import BatchNormKernels
internal import CBatchNormMPI

/// A `BatchNormReducer` over MPI: synchronized batch norm between the
/// processes of `MPI_COMM_WORLD`, or of a group of them, each of which holds
/// its slice of the batch.
///
/// ```swift
/// let reducer = try MPIReducer()                                 // every rank; MPI_COMM_WORLD
/// var bn = try BatchNorm<Float>(featureCount: 16)
/// let shape = [mySlice.count / (16 * 8 * 8), 16, 8, 8]           // this rank's images: counts may differ
/// let out = try bn.forward(mySlice, shape: shape, reducer: reducer)   // the whole batch's statistics
/// ```
/// launched as `mpirun -np 4 .build/release/my-trainer`, with
/// ``finalize()`` on every rank at the end.
///
/// A synchronized call makes O(log R) `MPI_Sendrecv` exchanges of 3 doubles
/// per channel, over the fixed tree of `BatchNormReducer.allReduce`: every
/// rank gets bitwise the same result, whatever the MPI library's own
/// collective algorithms. Each reducer has its own communicator, so its
/// messages never match the program's.
///
/// Make the package's synchronized calls from the thread that created the
/// reducer (MPI is initialized with `MPI_THREAD_FUNNELED`), in the same order
/// on every rank of the reducer's group. Requires Open MPI (Debian's
/// `libopenmpi-dev`) when the package is built; ``isAvailable`` tells.
public final class MPIReducer: BatchNormReducer, @unchecked Sendable {
    /// This process's rank in the reducer's group.
    public let rank: Int
    /// The number of processes in the reducer's group.
    public let rankCount: Int
    private let communicator: OpaquePointer

    /// Whether the package was built with Open MPI.
    public static var isAvailable: Bool { cbn_mpi_available() != 0 }

    /// Initializes MPI if the program has not, and joins a duplicate of
    /// `MPI_COMM_WORLD` (so that these messages never match the program's
    /// own). Collective: every rank makes it. Throws
    /// `BatchNormError.Code.communicationFailed` when MPI is missing or fails,
    /// or runs at a thread level below `MPI_THREAD_FUNNELED` (a program that
    /// initializes MPI itself calls `MPI_Init_thread` with it).
    public init() throws(BatchNormError) {
        try Self.initializeMPI()
        var communicator: OpaquePointer?
        var rank: Int32 = 0, size: Int32 = 0
        try Self.check(cbn_mpi_communicator_create(&communicator, &rank, &size), doing: "MPI_Comm_dup")
        self.communicator = communicator!
        self.rank = Int(rank)
        self.rankCount = Int(size)
    }

    /// A reducer over a group of the world's processes, as PyTorch's process
    /// groups: the ranks that pass the same `group` share one reducer (for
    /// batch norm synchronized within a node, or within one model-parallel
    /// stage), ranked by `key`, then by world rank. Collective over every
    /// process of `MPI_COMM_WORLD`: each calls it once, with its own group.
    /// Make it once and keep it; it is freed when the last reference goes.
    ///
    /// - Parameters:
    ///   - group: This process's group, 0 or more.
    ///   - key: The order within the group; nil for the world rank's.
    public init(group: Int, key: Int? = nil) throws(BatchNormError) {
        guard (0...Int(Int32.max)).contains(group), key.map({ Int32(exactly: $0) != nil }) ?? true else {
            throw BatchNormError(.invalidDimension, argument: group < 0 ? "group" : "key",
                                 expected: "a value in 0...\(Int32.max)", actual: "\(group < 0 ? group : key!)")
        }
        try Self.initializeMPI()
        var communicator: OpaquePointer?
        var rank: Int32 = 0, size: Int32 = 0
        try Self.check(cbn_mpi_communicator_split(Int32(group), Int32(key ?? 0), &communicator, &rank, &size),
                       doing: "MPI_Comm_split")
        self.communicator = communicator!
        self.rank = Int(rank)
        self.rankCount = Int(size)
    }

    private static func initializeMPI() throws(BatchNormError) {
        var initializedHere: Int32 = 0
        try check(cbn_mpi_initialize(&initializedHere), doing: "MPI_Init_thread")
    }

    deinit { cbn_mpi_communicator_free(communicator) }

    /// `MPI_Sendrecv` of `values` with `partner`, on the reducer's communicator.
    /// Throws `communicationFailed` when MPI fails.
    ///
    /// - Parameters:
    ///   - values: What this rank sends.
    ///   - partner: The other rank, in the reducer's group.
    public func exchange(_ values: [Double], with partner: Int) throws -> [Double] {
        guard (0..<rankCount).contains(partner), partner != rank else {
            throw BatchNormError(.communicationFailed, argument: "partner", expected: "another rank of the group",
                                 actual: "\(partner) of \(rankCount)")
        }
        var received = [Double](repeating: 0, count: values.count)
        let status = cbn_mpi_sendrecv(communicator, values, Int64(values.count), Int32(partner), &received)
        try Self.check(status, doing: "MPI_Sendrecv")
        return received
    }

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

    /// `MPI_Finalize`, if a reducer initialized MPI and it is not yet
    /// finalized; MPI that the program initialized itself is the program's
    /// to finalize. Call it on every rank once no reducer is in use.
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
