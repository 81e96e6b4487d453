import Foundation

/// The exchange that synchronized batch norm needs between the ranks that
/// share one batch: an all-gather of a few doubles per channel.
///
/// Each rank holds its own slice of the batch (its own N, the same channels
/// and spatial extent). Passing a reducer to a training call makes every rank
/// normalize with the statistics of the whole batch: the ranks gather their
/// per-channel partials (count, mean and M2 forward; count, Σg and Σg·(x − μ)
/// backward) and each merges them in rank order, so every rank computes
/// bitwise the same μ, σ², dγ and dβ.
///
/// Conform to it to run synchronized batch norm over any transport:
/// ``InProcessReducer`` joins threads of one process, and the `BatchNormMPI`
/// module's `MPIReducer` joins MPI processes.
public protocol BatchNormReducer {
    /// This participant's rank, in `0..<rankCount`.
    var rank: Int { get }
    /// R, the number of ranks that share the batch.
    var rankCount: Int { get }
    /// A collective all-gather: every rank calls it, in the same order of
    /// calls, with `local.count` equal on every rank (the package checks that
    /// with a fixed-size exchange first), and receives the `rankCount`
    /// contributions concatenated in rank order, `rankCount · local.count`
    /// values, the same on every rank.
    ///
    /// - Parameter local: This rank's values.
    /// - Returns: Every rank's values, rank 0's first.
    func allGather(_ local: [Double]) throws -> [Double]
}

/// A ``BatchNormReducer`` between threads of one process: `R` participants,
/// each with its own reducer value, all made together by
/// ``makeGroup(rankCount:timeout:)``. For tests, and for programs that train
/// several replicas of a model in one process.
public struct InProcessReducer: BatchNormReducer, Sendable {
    /// This participant's rank, in `0..<rankCount`.
    public let rank: Int
    /// R, the number of reducers in the group.
    public var rankCount: Int { rendezvous.rankCount }
    private let rendezvous: Rendezvous

    /// The reducers of one group, rank 0 first. A call waits for the other
    /// ranks' calls; with a `timeout`, a call that waits longer throws
    /// ``BatchNormError/Code/communicationFailed`` (and the group is then
    /// unusable), instead of waiting for ever for a rank that never calls.
    ///
    /// - Parameters:
    ///   - rankCount: R, at least 1: hand one reducer to each of R threads or tasks.
    ///   - timeout: How long a call waits for the other ranks; nil for as long as it takes.
    public static func makeGroup(rankCount: Int, timeout: Duration? = nil) throws(BatchNormError)
        -> [InProcessReducer]
    {
        guard rankCount >= 1 else {
            throw BatchNormError(.invalidDimension, argument: "rankCount", expected: "at least 1",
                                 actual: "\(rankCount)")
        }
        let rendezvous = Rendezvous(rankCount: rankCount, timeout: timeout)
        return (0..<rankCount).map { InProcessReducer(rank: $0, rendezvous: rendezvous) }
    }

    /// Waits for every rank of the group to call, and returns their values
    /// concatenated in rank order.
    ///
    /// - Parameter local: This rank's values; every rank passes the same count.
    public func allGather(_ local: [Double]) throws -> [Double] {
        try rendezvous.allGather(local, rank: rank)
    }
}

/// Where the threads of an ``InProcessReducer`` group meet: each call deposits
/// its values, the last one of a round assembles the result, and every caller
/// leaves with it. A round's result stays until every rank has taken it,
/// because the next round cannot complete before every rank has joined it.
private final class Rendezvous: @unchecked Sendable {
    let rankCount: Int
    let timeout: Duration?
    private let condition = NSCondition()
    private var slots: [[Double]?]
    private var arrived = 0
    private var round = 0
    private var result: [Double] = []
    private var broken = false

    init(rankCount: Int, timeout: Duration?) {
        self.rankCount = rankCount
        self.timeout = timeout
        slots = Array(repeating: nil, count: rankCount)
    }

    func allGather(_ local: [Double], rank: Int) throws -> [Double] {
        condition.lock()
        defer { condition.unlock() }
        guard !broken else { throw Rendezvous.failure("the group broke after an earlier timeout") }
        guard slots[rank] == nil else { throw Rendezvous.failure("rank \(rank) called twice in one round") }
        slots[rank] = local
        arrived += 1
        let myRound = round
        if arrived == rankCount {
            result = slots.flatMap { $0! }
            slots = Array(repeating: nil, count: rankCount)
            arrived = 0
            round += 1
            condition.broadcast()
            return result
        }
        let deadline = timeout.map { Date(timeIntervalSinceNow: Double($0.components.seconds)
                                              + Double($0.components.attoseconds) * 1e-18) }
        while round == myRound && !broken {
            if let deadline {
                if !condition.wait(until: deadline) && round == myRound {
                    broken = true
                    condition.broadcast()
                }
            } else {
                condition.wait()
            }
        }
        guard round != myRound else { throw Rendezvous.failure("timed out waiting for the other ranks") }
        return result
    }

    private static func failure(_ reason: String) -> BatchNormError {
        BatchNormError(.communicationFailed, argument: "reducer", expected: "every rank to join the all-gather",
                       actual: reason)
    }
}
