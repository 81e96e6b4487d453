import BatchNormKernels
import BatchNormMPI
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

    @Test("γ = sqrt(σ² + ε), β = μ gives back the input")
    func identityParameters() throws {
        let shape = [3, 2, 5]
        let x: [Double] = randomValues(30, center: 3, spread: 2, seed: 5)
        let epsilon = 1e-5
        let plain = try BatchNormalization.forwardTraining(x, shape: shape, epsilon: epsilon)
        let gamma = plain.statistics.invStd.map { 1 / $0 }   // sqrt(σ² + ε)
        let beta = plain.statistics.mean
        let back = try BatchNormalization.forwardTraining(x, shape: shape, weight: gamma, bias: beta, epsilon: epsilon)
        #expect(normwiseError(back.output, x) <= 1e-15)

        let xf: [Float] = x.map(Float.init)
        let plainF = try BatchNormalization.forwardTraining(xf, shape: shape, epsilon: epsilon)
        let backF = try BatchNormalization.forwardTraining(
            xf, shape: shape, weight: plainF.statistics.invStd.map { Float(1 / $0) },
            bias: plainF.statistics.mean.map(Float.init), epsilon: epsilon)
        #expect(normwiseError(backF.output, x) <= 1e-6)
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
