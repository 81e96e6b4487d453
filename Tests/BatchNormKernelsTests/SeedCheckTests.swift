import BatchNormKernels
import BatchNormMPI
import BatchNormReference
import Foundation
import Testing

/// The worked checks from the design notes (section 1).
@Suite struct SeedCheckTests {
    @Test("a channel [2, 0, 2, 4] normalizes to [0, −√2, 0, √2]")
    func normalizesKnownChannel() throws {
        let result = try BatchNormalization.forwardTraining([2, 0, 2, 4] as [Double], shape: [4, 1], epsilon: 0)
        let root2 = 2.0.squareRoot()
        // y = (x − μ)·r with r = 1/√2 rounded: one unit in the last place at most.
        #expect(normwiseError(result.output, [0, -root2, 0, root2]) <= 2.3e-16)
        #expect(result.statistics.mean == [2])
        #expect(abs(result.statistics.invStd[0] - 1 / root2) <= 1e-16)
    }

    @Test("multiplying the channel by 100 gives the same output")
    func scaleInvariant() throws {
        for shape in [[4, 1], [1, 1, 4], [2, 1, 2]] {
            let a = try BatchNormalization.forwardTraining([2, 0, 2, 4] as [Float], shape: shape, epsilon: 0)
            let b = try BatchNormalization.forwardTraining([200, 0, 200, 400] as [Float], shape: shape, epsilon: 0)
            #expect(a.output == b.output)
            #expect(normwiseError(a.output, [0, -2.0.squareRoot(), 0, 2.0.squareRoot()]) <= 1e-7)
        }
    }

    /// γ and β from the float64 reference's statistics, not the kernel's own
    /// (with its own, y = x would hold whatever statistics it computed).
    @Test("γ = sqrt(σ² + ε), β = μ gives back the input")
    func identityParameters() throws {
        let shape = [3, 2, 5]
        let x: [Double] = randomValues(30, center: 3, spread: 2, seed: 5)
        let epsilon = 1e-5
        let truth = ReferenceBatchNorm.statistics(x, shape: shape)
        let gamma = truth.variance.map { ($0 + epsilon).squareRoot() }
        let back = try BatchNormalization.forwardTraining(x, shape: shape, weight: gamma, bias: truth.mean,
                                                          epsilon: epsilon)
        // A few roundings of double on values of about 3: within 1e-15 normwise.
        #expect(normwiseError(back.output, x) <= 1e-15)

        let xf: [Float] = x.map(Float.init)
        let truthF = ReferenceBatchNorm.statistics(xf.map(Double.init), shape: shape)
        let backF = try BatchNormalization.forwardTraining(
            xf, shape: shape, weight: truthF.variance.map { Float(($0 + epsilon).squareRoot()) },
            bias: truthF.mean.map(Float.init), epsilon: epsilon)
        // γ and β rounded to Float, then the float kernel: Bound.forward's 1e-6.
        #expect(normwiseError(backF.output, xf.map(Double.init)) <= Bound.forward(Float.self))
    }
}

/// CI sets BATCHNORM_EXPECT_OPENMP, BATCHNORM_EXPECT_MPI and
/// BATCHNORM_EXPECT_ISA to say which build it made; the package must then
/// report it truthfully.
@Test("isOpenMPAvailable, MPIReducer.isAvailable and microkernelInstructionSet report what the build compiled in")
func buildReportedAsBuilt() {
    let environment = ProcessInfo.processInfo.environment
    if let expected = environment["BATCHNORM_EXPECT_OPENMP"] {
        #expect(isOpenMPAvailable == (expected == "1"))
    }
    if let expected = environment["BATCHNORM_EXPECT_MPI"] {
        #expect(MPIReducer.isAvailable == (expected == "1"))
    }
    if let expected = environment["BATCHNORM_EXPECT_ISA"] {
        #expect(microkernelInstructionSet.contains(expected), "\(microkernelInstructionSet)")
    }
}

/// Built without Open MPI, an MPIReducer cannot be made, and says why.
@Test func mpiReducerWithoutOpenMPThrowsCommunicationFailed() throws {
    guard !MPIReducer.isAvailable else { return }
    #expect {
        _ = try MPIReducer()
    } throws: { error in
        let error = error as? BatchNormError
        return error?.code == .communicationFailed && error?.actual.contains("libopenmpi-dev") == true
    }
}
