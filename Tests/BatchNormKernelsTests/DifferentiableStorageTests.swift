import _Differentiation
import BatchNormDifferentiation
import BatchNormKernels
import Testing

/// The differentiable layer writes each step's output and gradients into the
/// storage of the step before, once the caller has let go of it, and never
/// into an array the caller still holds.
@Suite struct DifferentiableStorageTests {
    let shape = try! BatchNormShape([4, 3, 5, 5])
    let x: [Float] = randomValues(300, center: 1, spread: 2, seed: 51)
    let dy: [Float] = randomValues(300, seed: 52)
    let z: [Float] = randomValues(300, seed: 53)

    /// A training step's output, dx and dz, as `valueWithPullback` returns them.
    func step(_ layer: DifferentiableBatchNorm<Float>, residual: Bool = false)
        -> (y: [Float], dx: [Float], dz: [Float])
    {
        if residual {
            let (y, pullback) = valueWithPullback(at: x, z) { x, z in layer(x, adding: z, shape: shape) }
            let (dx, dz) = pullback(.init(dy))
            return (y, dx.base, dz.base)
        }
        let (y, pullback) = valueWithPullback(at: x) { x in layer(x, shape: shape) }
        return (y, pullback(.init(dy)).base, [])
    }

    /// The same step on a fresh layer: new storage, nothing to reuse.
    func freshStep(residual: Bool = false, after steps: Int) throws -> (y: [Float], dx: [Float], dz: [Float]) {
        let layer = try DifferentiableBatchNorm<Float>(featureCount: 3, activation: .relu)
        for _ in 0..<steps { _ = step(layer, residual: residual) }
        return step(layer, residual: residual)
    }

    @Test func aStepWritesIntoTheStorageOfTheStepBeforeOnceItIsLetGo() throws {
        for residual in [false, true] {
            let layer = try DifferentiableBatchNorm<Float>(featureCount: 3, activation: .relu)
            var before: [UnsafeRawPointer?] = []
            do {
                let first = step(layer, residual: residual)
                before = [storage(first.y), storage(first.dx)] + (residual ? [storage(first.dz)] : [])
            }   // the first step's arrays are let go here
            // New arrays of the same size now, which would take memory those arrays freed.
            let blockers = (0..<3).map { _ in [Float](repeating: 0, count: x.count) }
            let second = step(layer, residual: residual)
            withExtendedLifetime(blockers) {}
            let after = [storage(second.y), storage(second.dx)] + (residual ? [storage(second.dz)] : [])
            #expect(after == before, "residual \(residual)")
            // The same bits as a layer that reused nothing (its running statistics at the same step).
            let want = try freshStep(residual: residual, after: 1)
            #expect(second.y.map(\.bitPattern) == want.y.map(\.bitPattern))
            #expect(second.dx.map(\.bitPattern) == want.dx.map(\.bitPattern))
            #expect(second.dz.map(\.bitPattern) == want.dz.map(\.bitPattern))
        }
    }

    @Test func arraysTheCallerHoldsAreNeverWritten() throws {
        let layer = try DifferentiableBatchNorm<Float>(featureCount: 3, activation: .relu)
        let first = step(layer)
        let kept = (y: first.y.map { $0 }, dx: first.dx.map { $0 })
        let second = step(layer)
        #expect(first.y == kept.y && first.dx == kept.dx, "a held array was written over")
        #expect(storage(second.y) != storage(first.y) && storage(second.dx) != storage(first.dx))
        let want = try freshStep(after: 1)
        #expect(second.y == want.y && second.dx == want.dx)
    }

    @Test func anOutputMutatedInPlaceIsCopiedFirst() throws {
        let layer = try DifferentiableBatchNorm<Float>(featureCount: 3)
        var y = layer(x, shape: shape)
        let address = storage(y)
        y[0] = 1234   // the layer still holds this storage: the write goes to a copy
        #expect(storage(y) != address)
        let next = layer(x, shape: shape)
        #expect(next[0] != 1234 && y[0] == 1234)
        let want = try DifferentiableBatchNorm<Float>(featureCount: 3)
        _ = want(x, shape: shape)
        #expect(next == want(x, shape: shape))
    }

    @Test func aCallOfAnotherShapeTakesNewStorage() throws {
        let layer = try DifferentiableBatchNorm<Float>(featureCount: 3)
        _ = layer(x, shape: shape)
        let smaller = try BatchNormShape([2, 3, 5, 5])
        let y = layer(Array(x[..<150]), shape: smaller)
        #expect(y.count == 150)
        let want = try DifferentiableBatchNorm<Float>(featureCount: 3)
        _ = want(x, shape: shape)
        #expect(y == want(Array(x[..<150]), shape: smaller))
    }
}
