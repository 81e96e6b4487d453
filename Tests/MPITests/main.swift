// mpi-tests: synchronized batch norm across real MPI processes.
//
// Run by Scripts/mpi-tests.sh under `mpirun -np R` (R = 2, 3, 4). Every rank
// generates the same whole batch from a fixed seed, takes its own uneven
// slice of it along N, and checks that:
//  - its synchronized forward and backward (through `MPIReducer`) equal
//    single-process batch norm on the whole batch, which it also computes
//    (normwise ≤ 1e-6 in Float, 1e-12 in Double), both layouts and scalar
//    types, training and inference, plain and with the fused ReLU;
//  - the statistics, running statistics, dγ and dβ are bitwise the same on
//    every rank (gathered and compared);
//  - a rank holding one value per channel is fine when the whole batch has 2;
//  - ranks that disagree (channels, mode) throw the same error on every
//    rank, a rank whose arguments fail makes the others throw `rankFailed`,
//    nothing is written, and the ranks go on working together afterwards.
// Exits 0 when every check on every rank passed, 1 otherwise.
@_spi(Testing) import BatchNormKernels
import BatchNormMPI
import BatchNormReference
import Foundation

guard MPIReducer.isAvailable else {
    print("mpi-tests: the package was built without Open MPI (install libopenmpi-dev)")
    exit(2)
}
let reducer: MPIReducer
do {
    reducer = try MPIReducer()
} catch {
    print("mpi-tests: \(error)")
    exit(1)
}
let rank = reducer.rank, ranks = reducer.rankCount
guard ranks >= 2 else {
    print("mpi-tests: run it under mpirun with 2 or more ranks (Scripts/mpi-tests.sh does)")
    MPIReducer.finalize()
    exit(2)
}
var checks = 0, failures = 0

@MainActor func expect(_ condition: Bool, _ message: @autoclosure () -> String) {
    checks += 1
    if !condition {
        failures += 1
        print("mpi-tests: rank \(rank) of \(ranks): FAILED: \(message())")
    }
}

/// `count` values uniform in `center ± spread`, the same on every rank.
func values<S: BatchNormScalar>(_ count: Int, center: Double = 0, spread: Double = 1, seed: UInt64) -> [S] {
    var state = seed
    return (0..<count).map { _ in
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        let unit = Double(state >> 11) / Double(1 << 53)
        return S(center + spread * (2 * unit - 1))
    }
}

func doubles<S: BatchNormScalar>(_ values: [S]) -> [Double] { values.map { Double($0) } }

/// Whether `local` has the same bits on every rank (all ranks call this).
@MainActor func sameOnEveryRank(_ local: [Double]) -> Bool {
    guard let all = try? reducer.allGather(local) else { return false }
    let bits = local.map(\.bitPattern)
    return (0..<ranks).allSatisfy { r in all[(r * local.count)..<((r + 1) * local.count)].map(\.bitPattern) == bits }
}

/// Rank r's number of images: uneven, 1 to 3.
func sliceSize(_ r: Int, _ seed: Int) -> Int { 1 + (r * 2 + seed) % 3 }

/// Synchronized batch norm on this rank's slice against one process on the whole batch.
@MainActor func checkAgreement<S: BatchNormScalar>(
    _: S.Type, nchw: [Int], layout: BatchNormLayout, mode: BatchNormMode, activation: BatchNormActivation,
    seed: Int
) {
    let channels = nchw[1], image = nchw.dropFirst().reduce(1, *)
    let slices = (0..<ranks).map { sliceSize($0, seed) }
    let total = slices.reduce(0, +), start = slices[..<rank].reduce(0, +) * image
    func dims(_ n: Int) -> [Int] {
        let shape = [n] + nchw.dropFirst()
        return layout == .channelsFirst ? shape : [n] + shape.dropFirst(2) + [channels]
    }
    let x: [S] = values(total * image, center: 4, spread: 3, seed: UInt64(seed))
    let dy: [S] = values(total * image, seed: UInt64(seed) + 1)
    let mine = start..<(start + slices[rank] * image)
    let context = "\(dims(total)) \(layout) \(mode) \(activation) \(S.self), slices \(slices)"
    do {
        var base = try BatchNorm<S>(featureCount: channels, momentum: 0.3, mode: mode, activation: activation)
        base.weight = values(channels, center: 1, spread: 0.5, seed: 7)
        base.bias = values(channels, seed: 8)
        base.runningVariance = values(channels, center: 2, spread: 1, seed: 9)

        var whole = base
        let wholeForward = try whole.forward(x, shape: dims(total), layout: layout)
        let wholeGradients = try whole.backward(outputGradient: dy, input: x, shape: dims(total), layout: layout,
                                                statistics: wholeForward.statistics,
                                                forwardOutput: wholeForward.output)
        var layer = base
        let forward = try layer.forward(Array(x[mine]), shape: dims(slices[rank]), layout: layout, reducer: reducer)
        let gradients = try layer.backward(
            outputGradient: Array(dy[mine]), input: Array(x[mine]), shape: dims(slices[rank]), layout: layout,
            statistics: forward.statistics, reducer: reducer)   // relu's mask recomputed from x, as the layer does

        let bound = S.self == Float.self ? 1e-6 : 1e-12
        let pairs: [(String, [Double], [Double])] = [
            ("y", doubles(forward.output), doubles(Array(wholeForward.output[mine]))),
            ("dx", doubles(gradients.input!), doubles(Array(wholeGradients.input![mine]))),
            ("mean", forward.statistics.mean, wholeForward.statistics.mean),
            ("invStd", forward.statistics.invStd, wholeForward.statistics.invStd),
            ("running variance", doubles(layer.runningVariance!), doubles(whole.runningVariance!)),
        ]
        for (name, got, want) in pairs {
            let error = ReferenceBatchNorm.normwiseError(got, want)
            expect(error <= bound, "\(context): \(name) normwise error \(error) > \(bound)")
        }
        // dγ and dβ are this rank's parts: summed over the ranks, the whole batch's (each part
        // rounded on its own, so the bound is against the largest part).
        let parts = doubles(gradients.weight!) + doubles(gradients.bias!)
        let total = try reducer.sum(parts)
        let largest = try reducer.allReduce([parts.map(abs).max() ?? 0]) { [max($0[0], $1[0])] }[0]
        let error = ReferenceBatchNorm.normwiseError(
            total, doubles(wholeGradients.weight!) + doubles(wholeGradients.bias!), scale: largest)
        expect(error <= bound, "\(context): dγ, dβ summed over the ranks: normwise error \(error) > \(bound)")
        let shared = forward.statistics.mean + forward.statistics.invStd + doubles(layer.runningMean!)
            + doubles(layer.runningVariance!) + total
        expect(sameOnEveryRank(shared), "\(context): statistics or the summed dγ, dβ differ between ranks")
    } catch {
        expect(false, "\(context): \(error)")
    }
}

var seed = 0
for (nchw, layouts) in [([1, 6, 5, 3], 2), ([2, 20, 7, 7], 2), ([1, 130, 1], 1), ([2, 3, 56, 56], 2)] {
    for layout in [BatchNormLayout.channelsFirst, .channelsLast].prefix(layouts) {
        for mode in [BatchNormMode.training, .inference] {
            seed += 1
            let activation: BatchNormActivation = seed % 2 == 0 ? .relu : .identity
            checkAgreement(Float.self, nchw: nchw, layout: layout, mode: mode, activation: activation, seed: seed)
            checkAgreement(Double.self, nchw: nchw, layout: layout, mode: mode, activation: activation, seed: seed)
        }
    }
}

// One value per channel on every rank: m = R ≥ 2 over the whole batch.
do {
    let x: [Float] = [Float(rank), 3]
    let y = try BatchNormalization.forwardTraining(x, shape: [1, 2], reducer: reducer).output
    let mean = Double(ranks - 1) / 2
    let variance = (0..<ranks).map { (Double($0) - mean) * (Double($0) - mean) }.reduce(0, +) / Double(ranks)
    let want = Float((Double(rank) - mean) / (variance + 1e-5).squareRoot())
    expect(abs(y[0] - want) <= 1e-6 * max(1, abs(want)) && y[1] == 0, "one value per rank: y \(y), want \(want)")
} catch {
    expect(false, "one value per rank: \(error)")
}

/// A forward call whose error every rank should see; returns this rank's
/// error and whether its output and layer were left untouched.
@MainActor func failingForward(channels: Int, mode: BatchNormMode = .training, weightCount: Int? = nil)
    -> (BatchNormError?, Bool)
{
    do {
        var layer = try BatchNorm<Float>(featureCount: channels, mode: mode)
        if let weightCount { layer.weight = Array(repeating: 1, count: weightCount) }
        let before = layer.runningVariance
        let x: [Float] = values(2 * channels * 4, seed: 99)
        var output = [Float](repeating: 7, count: x.count)
        let shape = try BatchNormShape([2, channels, 4])
        do {
            try x.withUnsafeBufferPointer { x in
                try output.withUnsafeMutableBufferPointer { y in
                    _ = try layer.forward(input: x, output: y, shape: shape, reducer: reducer)
                }
            }
            return (nil, false)
        } catch let error as BatchNormError {
            return (error, output.allSatisfy { $0 == 7 } && layer.runningVariance == before)
        }
    } catch {
        return (nil, false)
    }
}

// Channels differ on the last rank: every rank throws the same mismatch.
let channelMismatch = failingForward(channels: rank == ranks - 1 ? 4 : 3)
expect(channelMismatch.0?.code == .rankMismatch && channelMismatch.0?.argument == "channels" && channelMismatch.1,
       "channel mismatch: \(String(describing: channelMismatch.0))")
// Training on rank 0, inference elsewhere: a mode mismatch on every rank.
let modeMismatch = failingForward(channels: 3, mode: rank == 0 ? .training : .inference)
expect(modeMismatch.0?.code == .rankMismatch && modeMismatch.0?.argument == "mode" && modeMismatch.1,
       "mode mismatch: \(String(describing: modeMismatch.0))")
// Rank 1's weight has the wrong count: it throws that, the others rankFailed.
let failedRank = failingForward(channels: 3, weightCount: rank == 1 ? 2 : nil)
if rank == 1 {
    expect(failedRank.0?.code == .countMismatch && failedRank.1, "failed rank: \(String(describing: failedRank.0))")
} else {
    expect(failedRank.0?.code == .rankFailed && failedRank.0?.argument == "rank 1" && failedRank.1,
           "peer of a failed rank: \(String(describing: failedRank.0))")
}
// Rank 1 runs out of memory after the agreement, making either of the
// forward call's jobs (the one that normalizes with the whole batch's moments,
// made before the exchange, or the partial pass): it still joins the exchange
// of partials, so every rank throws and none waits.
for failing in 0..<2 {
    do {
        var layer = try BatchNorm<Float>(featureCount: 3)
        var y = [Float](repeating: 7, count: 24)
        if rank == 1 { BatchNormFaultInjection.failJobCreation(after: failing) }
        defer { BatchNormFaultInjection.failJobCreation(after: nil) }
        do throws(BatchNormError) {
            try layer.forward(values(24, seed: 98), into: &y, shape: [2, 3, 4], reducer: reducer)
            expect(false, "out of memory in job \(failing) on rank 1: rank \(rank) did not throw")
        } catch {
            expect(error.code == (rank == 1 ? .outOfMemory : .rankFailed) && y.allSatisfy { $0 == 7 },
                   "out of memory in job \(failing) on rank 1: rank \(rank) threw \(error)")
        }
    } catch {
        expect(false, "out of memory on rank 1: \(error)")
    }
}

// ... and the ranks still work together afterwards.
checkAgreement(Float.self, nchw: [2, 5, 3, 3], layout: .channelsFirst, mode: .training, activation: .identity,
               seed: 100)

// The README's synchronized example, on uneven slices of one batch: the same
// dγ and dx as one process on the whole batch.
do {
    let images = (0..<ranks).map { 1 + $0 % 2 }, plane = 16 * 8 * 8
    let whole: [Float] = values(images.reduce(0, +) * plane, center: 1, spread: 2, seed: 300)
    let wholeDy: [Float] = values(whole.count, seed: 301)
    let start = images[..<rank].reduce(0, +) * plane, end = start + images[rank] * plane
    let (dx, dWeight) = try readmeSynchronizedExample(mySlice: Array(whole[start..<end]),
                                                      dy: Array(wholeDy[start..<end]))
    var single = try BatchNorm<Float>(featureCount: 16)
    let shape = [whole.count / plane, 16, 8, 8]
    let out = try single.forward(whole, shape: shape)
    let want = try single.backward(outputGradient: wholeDy, input: whole, shape: shape, statistics: out.statistics)
    // dγ is this rank's part: summed over the ranks, the whole batch's (against the largest part).
    let total = try reducer.sum(doubles(dWeight))
    let largest = try reducer.allReduce([dWeight.map { Double(abs($0)) }.max() ?? 0]) { [max($0[0], $1[0])] }[0]
    expect(ReferenceBatchNorm.normwiseError(total, doubles(want.weight!), scale: largest) <= 1e-6,
           "README example: dγ summed over the ranks")
    // Each dx is within the float backward bound (5e-6) of the float64 truth, so within twice it of the other.
    expect(ReferenceBatchNorm.normwiseError(dx, doubles(Array(want.input![start..<end]))) <= 1e-5,
           "README example: dx")
} catch {
    expect(false, "README example: \(error)")
}

// Data-parallel training as PyTorch's DDP runs it: h = x · W, y = BN(h),
// the mean loss of (y − t)² on each rank's equal slice, every gradient
// averaged across the ranks, SGD. After 3 steps the parameters equal one
// process's on the whole batch with the mean loss (the in-process twin of
// this check is DataParallelTests).
@MainActor func dataParallelParameters(ranks: Int, rank: Int, reducer: MPIReducer?) throws -> [Double] {
    let (d, c, rows) = (3, 4, 120)                 // 120 rows: equal slices at 1, 2, 3, 4, 5 and 8 ranks
    var w: [Double] = values(d * c, spread: 1, seed: 500)
    var bn = try BatchNorm<Double>(featureCount: c, momentum: 0.2)
    bn.weight = values(c, center: 1, spread: 0.3, seed: 501)
    let n = rows / ranks, first = rank * n
    for step in 0..<3 {
        let x: [Double] = Array(values(rows * d, center: 1, spread: 2, seed: UInt64(510 + step))[(first * d)..<((first + n) * d)])
        let t: [Double] = Array(values(rows * c, spread: 1, seed: UInt64(520 + step))[(first * c)..<((first + n) * c)])
        var h = [Double](repeating: 0, count: n * c)
        for i in 0..<n { for k in 0..<d { for j in 0..<c { h[i * c + j] += x[i * d + k] * w[k * c + j] } } }
        let forward = try bn.forward(h, shape: [n, c], reducer: reducer)
        let dy = zip(forward.output, t).map { 2 * ($0 - $1) / Double(n * c) }
        let g = try bn.backward(outputGradient: dy, input: h, shape: [n, c], statistics: forward.statistics,
                                reducer: reducer)
        var local = [Double](repeating: 0, count: d * c)
        for i in 0..<n { for k in 0..<d { for j in 0..<c { local[k * c + j] += x[i * d + k] * g.input![i * c + j] } } }
        local += g.weight! + g.bias!
        let averaged = try reducer.map { try $0.sum(local).map { $0 / Double(ranks) } } ?? local
        for i in 0..<(d * c) { w[i] -= 0.5 * averaged[i] }
        for j in 0..<c { bn.weight![j] -= 0.5 * averaged[d * c + j]; bn.bias![j] -= 0.5 * averaged[d * c + c + j] }
    }
    return w + bn.weight! + bn.bias! + bn.runningMean! + bn.runningVariance!
}
do {
    let replica = try dataParallelParameters(ranks: ranks, rank: rank, reducer: reducer)
    let single = try dataParallelParameters(ranks: 1, rank: 0, reducer: nil)
    // Double throughout; the replicas round differently from one process by a few ulps per step.
    expect(ReferenceBatchNorm.normwiseError(replica, single) <= 1e-12, "data-parallel training: parameters")
    expect(sameOnEveryRank(replica), "data-parallel training: replicas differ")
} catch {
    expect(false, "data-parallel training: \(error)")
}

// A reducer over a group of the world's ranks (even and odd): each group is
// synchronized on its own batch, as one process on it; at 2 and 3 ranks a
// group of one rank is the local call bit for bit.
do {
    let members = (0..<ranks).filter { $0 % 2 == rank % 2 }
    let group = try MPIReducer(group: rank % 2)
    expect(group.rankCount == members.count && group.rank == members.firstIndex(of: rank)!,
           "group reducer: rank \(group.rank) of \(group.rankCount), members \(members)")
    let plane = 3 * 4, images = members.map { 1 + $0 % 3 }
    let whole: [Double] = values(images.reduce(0, +) * plane, center: 2, spread: 1, seed: UInt64(400 + rank % 2))
    let start = images[..<group.rank].reduce(0, +) * plane, end = start + images[group.rank] * plane
    let y = try BatchNormalization.forwardTraining(Array(whole[start..<end]), shape: [images[group.rank], 3, 4],
                                                   reducer: group).output
    let want = try BatchNormalization.forwardTraining(whole, shape: [whole.count / plane, 3, 4]).output
    expect(ReferenceBatchNorm.normwiseError(y, Array(want[start..<end])) <= 1e-12, "group reducer: y")
    if group.rankCount == 1 {
        expect(y.map(\.bitPattern) == want.map(\.bitPattern), "a group of one rank is the local call bit for bit")
    }
} catch {
    expect(false, "group reducer: \(error)")
}

let allFailures = (try? reducer.allGather([Double(failures)]).reduce(0, +)) ?? Double(failures + 1)
print("mpi-tests: rank \(rank) of \(ranks): \(checks - failures) of \(checks) checks passed")
if rank == 0 {
    print(allFailures == 0 ? "mpi-tests: \(ranks) ranks: all passed" : "mpi-tests: \(ranks) ranks: \(Int(allFailures)) failures")
}
MPIReducer.finalize()
exit(allFailures == 0 ? 0 : 1)
