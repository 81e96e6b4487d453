import BatchNormKernels
import BatchNormMPI

/// The README's synchronized example (every rank runs it with its own slice
/// of the batch): returns this rank's dx and its part of dγ, which main.swift
/// checks against one process on the whole batch.
func readmeSynchronizedExample(mySlice: [Float], dy: [Float]) throws -> (dx: [Float], dWeight: [Float]) {
    // example: synchronized
    let reducer = try MPIReducer()                                 // every rank; MPI_COMM_WORLD
    var bn = try BatchNorm<Float>(featureCount: 16)
    let shape = [mySlice.count / (16 * 8 * 8), 16, 8, 8]           // this rank's images: counts may differ
    let out = try bn.forward(mySlice, shape: shape, reducer: reducer)   // the whole batch's statistics
    let grads = try bn.backward(outputGradient: dy, input: mySlice, shape: shape, statistics: out.statistics,
                                reducer: reducer)                  // this rank's dx, and its part of dγ, dβ
    // end example
    return (grads.input!, grads.weight!)
}
