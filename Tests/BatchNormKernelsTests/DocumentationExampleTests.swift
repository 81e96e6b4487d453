import _Differentiation
import BatchNormDifferentiation
import BatchNormKernels
import BatchNormReference
import Foundation
import Testing

/// The examples of the README, docs/ and the DocC documentation, compiled and
/// run here on small shapes. `everyDocumentedExampleIsCompiledHere` fails when
/// a ```swift block of those files, of a DocC catalog or of a `///` comment is not
/// found, line for line, in this file or in Tests/MPITests/ReadmeExample.swift
/// (the synchronized example, which runs under mpirun); `import` lines and
/// indentation aside, and package manifests excepted (Examples/Consumer is
/// the manifest CI builds).
@Suite struct DocumentationExampleTests {
    /// A batch of 8 images of 16 channels of 8×8, its values from `seed`.
    func batch(_ seed: Int) -> [Float] { randomValues(8 * 16 * 8 * 8, center: 1, spread: 2, seed: UInt64(seed)) }

    @Test func theLayerInATrainingLoop() throws {
        var lossGradients: [[Float]] = []
        func outputGradient(_ y: [Float]) -> [Float] {
            lossGradients.append(y.map { $0 / Float(y.count) })
            return lossGradients.last!
        }
        // example: layer
        var bn = try BatchNorm<Float>(featureCount: 16)           // ε 1e-5, momentum 0.1, γ = 1, β = 0
        let shape = [8, 16, 8, 8]                                  // [N, C, H, W]: 16 channels of 8×8
        var y = [Float](), gradients = BatchNormGradients<Float>() // kept across steps: no new memory per step
        for step in 0..<10 {
            let x = batch(step)                                    // your activations, 8·16·8·8 values
            let statistics = try bn.forward(x, into: &y, shape: shape)   // batch statistics; updates running ones
            let dy = outputGradient(y)                             // from the layers above
            try bn.backward(outputGradient: dy, input: x, shape: shape, statistics: statistics, into: &gradients)
            for c in 0..<16 {                                      // SGD on γ and β
                bn.weight![c] -= 0.1 * gradients.weight![c]
                bn.bias![c] -= 0.1 * gradients.bias![c]
            }
        }
        let checkpoint = try JSONEncoder().encode(bn)              // γ, β and the running statistics, bit for bit
        let restored = try JSONDecoder().decode(BatchNorm<Float>.self, from: checkpoint)
        let prediction = try restored.inference(batch(99), shape: shape).output   // with the running statistics
        // end example
        #expect(bn.batchesTracked == 10 && restored.batchesTracked == 10 && lossGradients.count == 10)
        // The running mean after 10 steps of momentum 0.1 from 0, by the reference's batch means.
        var runningMean = [Double](repeating: 0, count: 16)
        for step in 0..<10 {
            let mean = ReferenceBatchNorm.forward(doubles(batch(step)), shape: shape, training: true).mean
            for c in 0..<16 { runningMean[c] = 0.9 * runningMean[c] + 0.1 * mean[c] }
        }
        #expect(normwiseError(restored.runningMean!, runningMean) <= 1e-6)
        let want = ReferenceBatchNorm.forward(
            doubles(batch(99)), shape: shape, training: false, weight: doubles(restored.weight!),
            bias: doubles(restored.bias!), runningMean: doubles(restored.runningMean!),
            runningVariance: doubles(restored.runningVariance!))
        #expect(normwiseError(prediction, want.output) <= Bound.forward(Float.self))
    }

    @Test func theRawKernelsOverYourMemory() throws {
        func fill(_ x: UnsafeMutableBufferPointer<Float>) {
            for (i, value) in batch(7).enumerated() { x[i] = value }
        }
        // example: raw
        let shape = try BatchNormShape([8, 8, 8, 16], layout: .channelsLast)      // NHWC: C = 16, last
        let x = UnsafeMutableBufferPointer<Float>.allocate(capacity: shape.count)  // your tensor's memory
        let mean = UnsafeMutableBufferPointer<Double>.allocate(capacity: shape.channels)
        let invStd = UnsafeMutableBufferPointer<Double>.allocate(capacity: shape.channels)
        defer { x.deallocate(); mean.deallocate(); invStd.deallocate() }
        fill(x)
        try BatchNormalization.forwardTraining(input: UnsafeBufferPointer(x), output: x, shape: shape,
                                               savedMean: mean, savedInvStd: invStd)   // in place
        // end example
        let want = ReferenceBatchNorm.forward(doubles(batch(7)), shape: [8, 8, 8, 16], channelsLast: true,
                                              training: true)
        #expect(normwiseError(Array(x), want.output) <= Bound.forward(Float.self))
        #expect(normwiseError(Array(mean), want.mean) <= 1e-12)
    }

    @Test func automaticDifferentiation() throws {
        let batches = [batch(1), batch(2), Array(batch(3).prefix(3 * 16 * 8 * 8))]   // the last one partial
        // example: autodiff
        var bn = try DifferentiableBatchNorm<Float>(featureCount: 16, activation: .relu)   // BN + ReLU, one pass
        for x in batches {                                         // any batch size, the last partial one too
            let shape = try BatchNormShape([x.count / (16 * 8 * 8), 16, 8, 8])
            let g = gradient(at: bn) { bn in
                bn(x, shape: shape).differentiableReduce(0) { $0 + $1 * $1 }   // your loss
            }
            for c in 0..<16 {                                      // SGD on γ and β
                bn.weight[c] -= 0.01 * g.weight.base[c]
                bn.bias[c] -= 0.01 * g.bias.base[c]
            }
        }
        bn.mode = .inference                                       // now the running statistics normalize
        // end example
        #expect(bn.runningStatistics!.batchesTracked == 3)
        // dL/dβ of Σ relu(BN(x))² is Σ 2y over each channel: the first step moved β by −0.02 Σ y < 0.
        #expect(bn.bias.allSatisfy { $0 < 0 })
    }
}

extension DocumentationExampleTests {
    @Test func aResidualBlockOfTwoDifferentiableLayers() throws {
        let x = batch(5)
        // example: residual block
        struct ResidualBlock: Differentiable {
            var bn1 = try! DifferentiableBatchNorm<Float>(featureCount: 16, activation: .relu)   // BN + ReLU, fused
            var bn2 = try! DifferentiableBatchNorm<Float>(featureCount: 16, activation: .relu)

            @differentiable(reverse)
            func callAsFunction(_ x: [Float], shape: BatchNormShape) -> [Float] {
                let h = bn1(x, shape: shape)                           // your convolutions go around these
                return bn2(h, adding: x, shape: shape)                 // relu(BN(h) + x), in one pass
            }
        }

        var block = ResidualBlock()
        let shape = try BatchNormShape([x.count / (16 * 8 * 8), 16, 8, 8])   // made per batch: any batch size
        let (loss, g) = valueWithGradient(at: block) { block in
            block(x, shape: shape).differentiableReduce(0) { $0 + $1 * $1 }  // your loss
        }
        for c in 0..<16 {                                              // g.bn1.weight is dL/dγ of bn1, …
            block.bn1.weight[c] -= 0.01 * g.bn1.weight.base[c]
            block.bn2.weight[c] -= 0.01 * g.bn2.weight.base[c]
        }
        // end example
        // The loss by the float64 reference: y = relu(BN(relu(BN(x))) + x), summed squares.
        let shapeArray = shape.dimensions
        let h = ReferenceBatchNorm.forward(doubles(x), shape: shapeArray, training: true, relu: true).output
        let y = ReferenceBatchNorm.forward(h, shape: shapeArray, training: true, residual: doubles(x), relu: true)
        let want = y.output.reduce(0) { $0 + $1 * $1 }
        #expect(abs(Double(loss) - want) <= 1e-5 * want)
        #expect(block.bn1.weight != [Float](repeating: 1, count: 16) && block.bn2.runningStatistics!.batchesTracked == 1)
    }

    @Test func halfPrecisionTensorsWithFloatParameters() throws {
        let activations: [Float] = batch(6)
        // example: bfloat16
        var bn = try BatchNorm<BFloat16>(featureCount: 16)        // weight, bias, running statistics: [Float]
        let x: [BFloat16] = activations.map { BFloat16($0) }
        let out = try bn.forward(x, shape: [8, 16, 8, 8])         // out.output: [BFloat16]
        // end example
        let want = ReferenceBatchNorm.forward(x.map { Double(Float($0)) }, shape: [8, 16, 8, 8], training: true)
        // Within one bfloat16 ulp (2⁻⁷ relative) of the float64 result, rounded.
        for (got, truth) in zip(out.output, want.output) {
            #expect(abs(Double(Float(got)) - truth) <= abs(truth) * 0x1p-7 + 0x1p-133)
        }
        #expect(bn.runningMean!.count == 16)
    }

    @Test func arraysKeptAcrossSteps() throws {
        var bn = try BatchNorm<Float>(featureCount: 16)
        let shape = [8, 16, 8, 8]
        let batches = (0..<3).map { (x: batch(20 + $0), ()) }
        let dy = batch(30)
        // example: into
        var y = [Float](), gradients = BatchNormGradients<Float>()
        for batch in batches {
            let statistics = try bn.forward(batch.x, into: &y, shape: shape)
            // … the rest of the network reads y, and gives back dy …
            try bn.backward(outputGradient: dy, input: batch.x, shape: shape, statistics: statistics,
                            into: &gradients)
        }
        // end example
        let want = ReferenceBatchNorm.forward(doubles(batch(22)), shape: shape, training: true)
        #expect(normwiseError(y, want.output) <= Bound.forward(Float.self))
        let wantBack = ReferenceBatchNorm.backward(doubles(batch(22)), outputGradient: doubles(dy), shape: shape,
                                                   training: true, mean: want.mean, invStd: want.invStd)
        #expect(normwiseError(gradients.input!, wantBack.inputGradient) <= Bound.backward(Float.self))
        #expect(bn.batchesTracked == 3)
    }
}

/// The ```swift blocks of the documentation, each as its non-blank,
/// non-`import` lines, trimmed, with the file it came from.
func documentedExamples(in root: URL) throws -> [(file: String, lines: [String])] {
    var files = ["README.md", "Demo/README.md"]
    let docs = try FileManager.default.contentsOfDirectory(atPath: root.appendingPathComponent("docs").path)
    files += docs.filter { $0.hasSuffix(".md") }.sorted().map { "docs/\($0)" }
    for module in ["BatchNormKernels", "BatchNormMPI", "BatchNormDifferentiation", "BatchNormReference"] {
        let sources = root.appendingPathComponent("Sources/\(module)")
        guard let walk = FileManager.default.enumerator(atPath: sources.path) else { continue }
        for case let path as String in walk where path.hasSuffix(".md") || path.hasSuffix(".swift") {
            files.append("Sources/\(module)/\(path)")
        }
    }
    var blocks: [(String, [String])] = []
    for file in files {
        let text = try String(contentsOf: root.appendingPathComponent(file), encoding: .utf8)
        var current: [String]? = nil
        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
            var line = rawLine.trimmingCharacters(in: .whitespaces)
            if file.hasSuffix(".swift") {
                guard line.hasPrefix("///") else { current = nil; continue }
                line = line.dropFirst(3).trimmingCharacters(in: .whitespaces)
            }
            if current == nil {
                if line == "```swift" { current = [] }
            } else if line == "```" {
                blocks.append((file, current!))
                current = nil
            } else if !line.isEmpty && !line.hasPrefix("import ") {
                current!.append(line)
            }
        }
    }
    return blocks.filter { !$0.1.contains { $0.hasPrefix("// swift-tools-version") || $0.hasPrefix(".package(") } }
}

@Test func everyDocumentedExampleIsCompiledHere() throws {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    let compiled = try ["Tests/BatchNormKernelsTests/DocumentationExampleTests.swift",
                        "Tests/MPITests/ReadmeExample.swift"].flatMap { file in
        try String(contentsOf: root.appendingPathComponent(file), encoding: .utf8)
            .split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }
    let blocks = try documentedExamples(in: root)
    #expect(blocks.count >= 10, "the README's four examples, docs/ and the DocC ones")
    for (file, lines) in blocks {
        let found = compiled.indices.contains { start in
            start + lines.count <= compiled.count && Array(compiled[start..<(start + lines.count)]) == lines
        }
        #expect(found, "an example in \(file) is not compiled here: \(lines.first ?? "")")
    }
}
