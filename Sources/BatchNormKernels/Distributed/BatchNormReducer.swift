import Foundation

/// The exchange that synchronized batch norm needs between the ranks that
/// share one batch: a pairwise swap of a few doubles per channel.
///
/// Each rank holds its own slice of the batch (its own N, the same channels
/// and spatial extent). Passing a reducer to a training call makes every rank
/// normalize with the statistics of the whole batch: the ranks combine their
/// per-channel partials (count, mean and M2 forward; count, Σg and Σg·(x − μ)
/// backward) with ``allReduce(_:merge:)``, over a fixed tree of pairwise
/// exchanges, so every rank computes bitwise the same μ and σ² with
/// O(log R) messages of 3 doubles per channel.
///
/// Conform to it to run synchronized batch norm over any transport:
/// ``InProcessReducer`` joins threads of one process, and the `BatchNormMPI`
/// module's `MPIReducer` joins MPI processes.
public protocol BatchNormReducer {
    /// This participant's rank, in `0..<rankCount`.
    var rank: Int { get }
    /// R, the number of ranks that share the batch.
    var rankCount: Int { get }
    /// A pairwise exchange: sends `values` to rank `partner` and returns what
    /// `partner` sent this rank in its matching call, which has the same
    /// count. Both ranks call it; calls between one pair of ranks match in
    /// the order they are made. Throws when the transport fails.
    ///
    /// - Parameters:
    ///   - values: What this rank sends.
    ///   - partner: The other rank, in `0..<rankCount` and not `rank`.
    /// - Returns: What `partner` sent.
    func exchange(_ values: [Double], with partner: Int) throws -> [Double]
}

extension BatchNormReducer {
    /// A collective all-reduce: every rank calls it with its `local` values
    /// (the same count on every rank) and gets back, bitwise the same on every
    /// rank, their merge over a fixed binary tree, in ⌈log₂ R⌉ exchanges (two
    /// more where R is not a power of two).
    ///
    /// The tree, with P the largest power of two ≤ R: first each rank
    /// r ≥ P is merged into rank r − P; then, for b = 1, 2, 4, … < P, each rank
    /// r < P merges with rank r ⊕ b; last, each rank r ≥ P receives rank
    /// r − P's result. `merge` is always given the values of the lower ranks
    /// first, so both partners of a step compute the same bits. Synchronized
    /// batch norm merges its partials this way, and a data-parallel program
    /// can average its gradients with it (``sum(_:)``).
    ///
    /// - Parameters:
    ///   - local: This rank's values.
    ///   - merge: Combines the values of two disjoint sets of ranks, the lower ranks' first.
    /// - Returns: The merge of every rank's values.
    public func allReduce(_ local: [Double], merge: ([Double], [Double]) throws -> [Double]) throws -> [Double] {
        let count = rankCount
        var powerOfTwo = 1
        while powerOfTwo * 2 <= count { powerOfTwo *= 2 }
        func swap(_ values: [Double], _ partner: Int) throws -> [Double] {
            let received = try exchange(values, with: partner)
            guard received.count == values.count else {
                throw BatchNormError(.communicationFailed, argument: "reducer",
                                     expected: "\(values.count) values from rank \(partner)",
                                     actual: "\(received.count) values")
            }
            return received
        }
        var value = local
        if rank >= powerOfTwo {
            _ = try swap(value, rank - powerOfTwo)
        } else if rank + powerOfTwo < count {
            value = try merge(value, try swap(value, rank + powerOfTwo))
        }
        if rank < powerOfTwo {
            var bit = 1
            while bit < powerOfTwo {
                let partner = rank ^ bit
                let other = try swap(value, partner)
                value = rank < partner ? try merge(value, other) : try merge(other, value)
                bit <<= 1
            }
        }
        if rank >= powerOfTwo {
            value = try swap(value, rank - powerOfTwo)
        } else if rank + powerOfTwo < count {
            _ = try swap(value, rank + powerOfTwo)
        }
        return value
    }

    /// The elementwise sum of every rank's `local`, the same bits on every
    /// rank: ``allReduce(_:merge:)`` with addition, e.g. to sum or average
    /// gradients across the ranks of a data-parallel job.
    ///
    /// - Parameter local: This rank's values; every rank passes the same count.
    /// - Returns: Their sum over the ranks.
    public func sum(_ local: [Double]) throws -> [Double] {
        try allReduce(local) { lower, higher in zip(lower, higher).map { $0 + $1 } }
    }
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
    /// ranks' calls; one that waits longer than `timeout` throws
    /// ``BatchNormError/Code/communicationFailed`` (and the group is then
    /// unusable), instead of waiting for ever for a rank that never calls.
    ///
    /// - Parameters:
    ///   - rankCount: R, at least 1: hand one reducer to each of R threads or tasks.
    ///   - timeout: How long a call waits for the other ranks: 10 minutes by
    ///     default, far beyond any batch-norm step; nil for as long as it takes.
    public static func makeGroup(rankCount: Int, timeout: Duration? = .seconds(600)) throws(BatchNormError)
        -> [InProcessReducer]
    {
        guard rankCount >= 1 else {
            throw BatchNormError(.invalidDimension, argument: "rankCount", expected: "at least 1",
                                 actual: "\(rankCount)")
        }
        let rendezvous = Rendezvous(rankCount: rankCount, timeout: timeout)
        return (0..<rankCount).map { InProcessReducer(rank: $0, rendezvous: rendezvous) }
    }

    /// Hands `values` to `partner` and waits for what it hands this rank.
    ///
    /// - Parameters:
    ///   - values: What this rank sends.
    ///   - partner: The other rank of the group.
    public func exchange(_ values: [Double], with partner: Int) throws -> [Double] {
        try rendezvous.exchange(values, from: rank, to: partner)
    }

    /// Waits for every rank of the group to call, and returns their values
    /// concatenated in rank order.
    ///
    /// - Parameter local: This rank's values; every rank passes the same count.
    public func allGather(_ local: [Double]) throws -> [Double] {
        try rendezvous.allGather(local, rank: rank)
    }
}

/// Where the threads of an ``InProcessReducer`` group meet. An all-gather
/// deposits its values, the last call of a round assembles the result, and
/// every caller leaves with it; a round's result stays until every rank has
/// taken it, because the next round cannot complete before every rank has
/// joined it. An exchange leaves its values in the mailbox from its rank to
/// the partner (first in, first out) and waits for the partner's.
private final class Rendezvous: @unchecked Sendable {
    let rankCount: Int
    let timeout: Duration?
    private let condition = NSCondition()
    private var slots: [[Double]?]
    private var arrived = 0
    private var round = 0
    private var result: [Double] = []
    private var broken = false
    /// Messages not yet taken, by sender · rankCount + receiver.
    private var mailboxes: [Int: [[Double]]] = [:]

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
        let deadline = deadline()
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

    func exchange(_ values: [Double], from rank: Int, to partner: Int) throws -> [Double] {
        condition.lock()
        defer { condition.unlock() }
        guard !broken else { throw Rendezvous.failure("the group broke after an earlier timeout") }
        guard (0..<rankCount).contains(partner), partner != rank else {
            throw Rendezvous.failure("rank \(rank) exchanging with rank \(partner) of \(rankCount)")
        }
        mailboxes[rank * rankCount + partner, default: []].append(values)
        condition.broadcast()
        let inbox = partner * rankCount + rank
        let deadline = deadline()
        while mailboxes[inbox, default: []].isEmpty && !broken {
            if let deadline {
                if !condition.wait(until: deadline) && mailboxes[inbox, default: []].isEmpty {
                    broken = true
                    condition.broadcast()
                }
            } else {
                condition.wait()
            }
        }
        guard let received = mailboxes[inbox]?.first else {
            throw Rendezvous.failure("timed out waiting for rank \(partner)")
        }
        mailboxes[inbox]!.removeFirst()
        return received
    }

    /// When a wait that starts now times out, if the group has a timeout.
    private func deadline() -> Date? {
        timeout.map { Date(timeIntervalSinceNow: Double($0.components.seconds)
                           + Double($0.components.attoseconds) * 1e-18) }
    }

    private static func failure(_ reason: String) -> BatchNormError {
        BatchNormError(.communicationFailed, argument: "reducer", expected: "every rank to join the exchange",
                       actual: reason)
    }
}
