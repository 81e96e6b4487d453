import BatchNormKernels
import Testing

/// Every documented mistake throws its error, naming the argument, before
/// anything is written: every buffer and the layer stay as they were.
@Suite struct ErrorTests {
    /// One allocation carved into every buffer a call can take, filled with
    /// a sentinel, so that overlaps can be made on purpose and any write seen.
    final class Arena {
        static let sentinel: Float = 777
        let memory: UnsafeMutableBufferPointer<Float>
        let doubles: UnsafeMutableBufferPointer<Double>
        init() {
            memory = .allocate(capacity: 4096)
            memory.initialize(repeating: Self.sentinel)
            doubles = .allocate(capacity: 64)
            doubles.initialize(repeating: Double(Self.sentinel))
        }
        deinit {
            memory.deallocate()
            doubles.deallocate()
        }
        func region(_ start: Int, _ count: Int) -> UnsafeMutableBufferPointer<Float> {
            UnsafeMutableBufferPointer(rebasing: memory[start..<(start + count)])
        }
        func doubleRegion(_ start: Int, _ count: Int) -> UnsafeMutableBufferPointer<Double> {
            UnsafeMutableBufferPointer(rebasing: doubles[start..<(start + count)])
        }
        /// The input region [0, 24) may hold data; everything else must still be the sentinel.
        var untouched: Bool {
            memory[24...].allSatisfy { $0 == Self.sentinel } && doubles.allSatisfy { $0 == Double(Self.sentinel) }
        }
    }

    static let shape = try! BatchNormShape([2, 3, 4])   // 24 values, 3 channels

    /// Calls forwardTraining with everything valid but what `change` alters.
    func forwardTraining(
        _ arena: Arena,
        input: UnsafeMutableBufferPointer<Float>? = nil, output: UnsafeMutableBufferPointer<Float>? = nil,
        shape: BatchNormShape = shape, weight: UnsafeMutableBufferPointer<Float>? = nil,
        runningMean: UnsafeMutableBufferPointer<Float>?? = nil, runningVariance: UnsafeMutableBufferPointer<Float>?? = nil,
        momentum: Double = 0.1, epsilon: Double = 1e-5, savedMean: UnsafeMutableBufferPointer<Double>? = nil,
        executor: BatchNormExecutor = .serial
    ) throws(BatchNormError) {
        try BatchNormalization.forwardTraining(
            input: UnsafeBufferPointer(input ?? arena.region(0, 24)), output: output ?? arena.region(100, 24),
            shape: shape, weight: UnsafeBufferPointer(weight ?? arena.region(200, 3)),
            bias: UnsafeBufferPointer(arena.region(210, 3)),
            runningMean: runningMean ?? arena.region(220, 3), runningVariance: runningVariance ?? arena.region(230, 3),
            momentum: momentum, epsilon: epsilon, savedMean: savedMean ?? arena.doubleRegion(0, 3),
            savedInvStd: arena.doubleRegion(10, 3), executor: executor)
    }

    func expectError(_ code: BatchNormError.Code, argument: String, _ call: (Arena) throws(BatchNormError) -> Void) {
        let arena = Arena()
        do throws(BatchNormError) {
            try call(arena)
            Issue.record("expected \(code) for \(argument), but the call succeeded")
        } catch {
            #expect(error.code == code)
            #expect(error.argument == argument, "\(error)")
            #expect(!error.description.isEmpty)
        }
        #expect(arena.untouched, "a failing call wrote to a buffer")
    }

    @Test("shapes: rank outside 2–5, a dimension below 1, an element count past Int")
    func invalidShapes() {
        #expect(throws: BatchNormError(.invalidRank, argument: "shape", expected: "rank 2 to 5 ([N, C, …])",
                                       actual: "rank 1 [3]")) { try BatchNormShape([3]) }
        #expect { try BatchNormShape([1, 2, 3, 4, 5, 6]) } throws: { ($0 as! BatchNormError).code == .invalidRank }
        #expect { try BatchNormShape([2, 0, 3]) } throws: {
            ($0 as! BatchNormError).code == .invalidDimension && ($0 as! BatchNormError).argument == "shape[1]"
        }
        #expect { try BatchNormShape([2, 3, -4]) } throws: { ($0 as! BatchNormError).argument == "shape[2]" }
        #expect { try BatchNormShape([1 << 20, 1 << 20, 1 << 20]) } throws: {
            ($0 as! BatchNormError).code == .shapeTooLarge
        }
    }

    @Test("buffer counts that do not match the shape or the channel count")
    func countMismatches() {
        expectError(.countMismatch, argument: "input") { a throws(BatchNormError) in try forwardTraining(a, input: a.region(0, 23)) }
        expectError(.countMismatch, argument: "output") { a throws(BatchNormError) in try forwardTraining(a, output: a.region(100, 25)) }
        expectError(.countMismatch, argument: "weight") { a throws(BatchNormError) in try forwardTraining(a, weight: a.region(200, 2)) }
        expectError(.countMismatch, argument: "runningMean") { a throws(BatchNormError) in
            try forwardTraining(a, runningMean: a.region(220, 4))
        }
        expectError(.countMismatch, argument: "savedMean") { a throws(BatchNormError) in
            try forwardTraining(a, savedMean: a.doubleRegion(0, 1))
        }
    }

    @Test("parameters: ε, momentum, thread count, m = 1 in training, a lone running statistic")
    func invalidParameters() throws {
        for epsilon in [-1e-5, .nan, .infinity] {
            expectError(.invalidEpsilon, argument: "epsilon") { a throws(BatchNormError) in try forwardTraining(a, epsilon: epsilon) }
        }
        for momentum in [-0.1, 1.5, .nan] {
            expectError(.invalidMomentum, argument: "momentum") { a throws(BatchNormError) in try forwardTraining(a, momentum: momentum) }
        }
        for executor in [BatchNormExecutor.dispatch(threads: 0), .openMP(threads: -2)] {
            expectError(.invalidThreadCount, argument: "executor") { a throws(BatchNormError) in
                try forwardTraining(a, executor: executor)
            }
        }
        let single = try BatchNormShape([1, 3])
        expectError(.tooFewValuesPerChannel, argument: "shape") { a throws(BatchNormError) in
            try forwardTraining(a, input: a.region(0, 3), output: a.region(100, 3), shape: single)
        }
        expectError(.missingArgument, argument: "runningVariance") { a throws(BatchNormError) in
            try forwardTraining(a, runningVariance: .some(nil))
        }
        if !isOpenMPAvailable {
            expectError(.executorUnavailable, argument: "executor") { a throws(BatchNormError) in
                try forwardTraining(a, executor: .openMP(threads: 2))
            }
        }
    }

    @Test("overlaps: partial input/output, output over a parameter, gradients over inputs")
    func overlaps() {
        expectError(.overlappingBuffers, argument: "input, output") { a throws(BatchNormError) in
            try forwardTraining(a, input: a.region(0, 24), output: a.region(1, 24))
        }
        expectError(.overlappingBuffers, argument: "output, weight") { a throws(BatchNormError) in
            try forwardTraining(a, output: a.region(100, 24), weight: a.region(110, 3))
        }
        expectError(.overlappingBuffers, argument: "runningMean, runningVariance") { a throws(BatchNormError) in
            try forwardTraining(a, runningMean: a.region(220, 3), runningVariance: a.region(222, 3))
        }
        expectError(.overlappingBuffers, argument: "outputGradient, inputGradient") { a throws(BatchNormError) in
            let mean = UnsafeBufferPointer(a.doubleRegion(0, 3)), invStd = UnsafeBufferPointer(a.doubleRegion(10, 3))
            try BatchNormalization.backward(
                mode: .training, input: UnsafeBufferPointer(a.region(0, 24)),
                outputGradient: UnsafeBufferPointer(a.region(100, 24)), shape: Self.shape, mean: mean, invStd: invStd,
                inputGradient: a.region(101, 24), executor: .serial)
        }
        expectError(.overlappingBuffers, argument: "input, weightGradient") { a throws(BatchNormError) in
            let mean = UnsafeBufferPointer(a.doubleRegion(0, 3)), invStd = UnsafeBufferPointer(a.doubleRegion(10, 3))
            try BatchNormalization.backward(
                mode: .training, input: UnsafeBufferPointer(a.region(0, 24)),
                outputGradient: UnsafeBufferPointer(a.region(100, 24)), shape: Self.shape, mean: mean, invStd: invStd,
                weightGradient: a.region(5, 3), executor: .serial)
        }
    }

    @Test("in place: output may be the input itself, and gives the out-of-place result")
    func inPlaceForward() throws {
        let x: [Float] = randomValues(24, center: 2, seed: 8)
        let outOfPlace = try BatchNormalization.forwardTraining(x, shape: [2, 3, 4], executor: .serial).output
        var buffer = x
        try buffer.withUnsafeMutableBufferPointer { b throws(BatchNormError) in
            try BatchNormalization.forwardTraining(input: UnsafeBufferPointer(b), output: b, shape: Self.shape,
                                                   executor: .serial)
        }
        #expect(buffer == outOfPlace)
    }

    @Test("channels last: C is the last dimension in every count check, the layer and the rank message")
    func channelsLastCounts() throws {
        let shape = try BatchNormShape([2, 4, 3], layout: .channelsLast)    // 24 values, 3 channels
        #expect(shape.channels == 3 && shape.spatialSize == 4 && shape.channelAxis == 2)
        expectError(.countMismatch, argument: "weight") { a throws(BatchNormError) in
            try forwardTraining(a, shape: shape, weight: a.region(200, 4))
        }
        expectError(.countMismatch, argument: "runningMean") { a throws(BatchNormError) in
            try forwardTraining(a, shape: shape, runningMean: a.region(220, 4))
        }
        var layer = try BatchNorm<Float>(featureCount: 3, executor: .serial)
        #expect { _ = try layer.forward(randomValues(24, seed: 3), shape: [2, 3, 4], layout: .channelsLast) } throws: {
            ($0 as! BatchNormError).argument == "shape[2]"
        }
        #expect(layer.batchesTracked == 0)
        #expect { try BatchNormShape([3], layout: .channelsLast) } throws: {
            ($0 as! BatchNormError).expected == "rank 2 to 5 ([N, …, C])"
        }
    }

    /// Runs of sixteen values or more whose first and last vectors overlap the vectors
    /// between (7×7 and 33×33 planes, channels-last rows of 5): in place, those vectors must
    /// read their inputs before any store of the run reaches them.
    @Test("in place: output over the input, dx over dy or over x, with the out-of-place results",
          arguments: [([2, 9, 17, 5], BatchNormLayout.channelsLast), ([3, 5, 7, 7], .channelsFirst),
                      ([2, 3, 33, 33], .channelsFirst)])
    func inPlaceRuns(dims: [Int], layout: BatchNormLayout) throws {
        let shape = try BatchNormShape(dims, layout: layout)
        let x: [Float] = randomValues(shape.count, center: 2, seed: 8)
        let dy: [Float] = randomValues(shape.count, seed: 9)
        let forward = try BatchNormalization.forwardTraining(x, shape: dims, layout: layout, executor: .serial)
        let gradients = try BatchNormalization.backward(outputGradient: dy, input: x, shape: dims,
                                                        layout: layout, statistics: forward.statistics,
                                                        executor: .serial)
        var y = x, dxOverDy = dy, dxOverX = x
        try y.withUnsafeMutableBufferPointer { b throws(BatchNormError) in
            try BatchNormalization.forwardTraining(input: UnsafeBufferPointer(b), output: b, shape: shape,
                                                   executor: .serial)
        }
        try forward.statistics.mean.withUnsafeBufferPointer { mean throws(BatchNormError) in
            try forward.statistics.invStd.withUnsafeBufferPointer { invStd throws(BatchNormError) in
                try x.withUnsafeBufferPointer { x throws(BatchNormError) in
                    try dxOverDy.withUnsafeMutableBufferPointer { g throws(BatchNormError) in
                        try BatchNormalization.backward(mode: .training, input: x, outputGradient: UnsafeBufferPointer(g),
                                                        shape: shape, mean: mean, invStd: invStd, inputGradient: g,
                                                        executor: .serial)
                    }
                }
                try dy.withUnsafeBufferPointer { dy throws(BatchNormError) in
                    try dxOverX.withUnsafeMutableBufferPointer { x throws(BatchNormError) in
                        try BatchNormalization.backward(mode: .training, input: UnsafeBufferPointer(x), outputGradient: dy,
                                                        shape: shape, mean: mean, invStd: invStd, inputGradient: x,
                                                        executor: .serial)
                    }
                }
            }
        }
        #expect(y == forward.output)
        #expect(dxOverDy == gradients.input!)
        #expect(dxOverX == gradients.input!)
    }

    @Test("epilogues: relu without the forward output, a residual of the wrong size, outputs over the residual or dz")
    func epilogueErrors() {
        expectError(.countMismatch, argument: "residual") { a throws(BatchNormError) in
            try BatchNormalization.forwardTraining(
                input: UnsafeBufferPointer(a.region(0, 24)), output: a.region(100, 24), shape: Self.shape,
                residual: UnsafeBufferPointer(a.region(300, 23)), activation: .relu, executor: .serial)
        }
        expectError(.overlappingBuffers, argument: "output, residual") { a throws(BatchNormError) in
            try BatchNormalization.forwardInference(
                input: UnsafeBufferPointer(a.region(0, 24)), output: a.region(100, 24), shape: Self.shape,
                runningMean: UnsafeBufferPointer(a.region(220, 3)), runningVariance: UnsafeBufferPointer(a.region(230, 3)),
                residual: UnsafeBufferPointer(a.region(110, 24)), activation: .relu, executor: .serial)
        }
        let mean = { (a: Arena) in UnsafeBufferPointer(a.doubleRegion(0, 3)) }
        let invStd = { (a: Arena) in UnsafeBufferPointer(a.doubleRegion(10, 3)) }
        // relu's mask with a residual needs y (without one, it is recomputed from x)
        expectError(.missingArgument, argument: "forwardOutput") { a throws(BatchNormError) in
            try BatchNormalization.backward(
                mode: .training, input: UnsafeBufferPointer(a.region(0, 24)),
                outputGradient: UnsafeBufferPointer(a.region(100, 24)), shape: Self.shape, mean: mean(a),
                invStd: invStd(a), inputGradient: a.region(300, 24), activation: .relu,
                residualGradient: a.region(400, 24), executor: .serial)
        }
        expectError(.countMismatch, argument: "bias") { a throws(BatchNormError) in
            try BatchNormalization.backward(
                mode: .training, input: UnsafeBufferPointer(a.region(0, 24)),
                outputGradient: UnsafeBufferPointer(a.region(100, 24)), shape: Self.shape, mean: mean(a),
                invStd: invStd(a), bias: UnsafeBufferPointer(a.region(200, 4)), inputGradient: a.region(300, 24),
                activation: .relu, executor: .serial)
        }
        expectError(.countMismatch, argument: "residualGradient") { a throws(BatchNormError) in
            try BatchNormalization.backward(
                mode: .training, input: UnsafeBufferPointer(a.region(0, 24)),
                outputGradient: UnsafeBufferPointer(a.region(100, 24)), shape: Self.shape, mean: mean(a),
                invStd: invStd(a), residualGradient: a.region(300, 25), executor: .serial)
        }
        expectError(.overlappingBuffers, argument: "inputGradient, residualGradient") { a throws(BatchNormError) in
            try BatchNormalization.backward(
                mode: .training, input: UnsafeBufferPointer(a.region(0, 24)),
                outputGradient: UnsafeBufferPointer(a.region(100, 24)), shape: Self.shape, mean: mean(a),
                invStd: invStd(a), inputGradient: a.region(300, 24), activation: .relu,
                forwardOutput: UnsafeBufferPointer(a.region(200, 24)), residualGradient: a.region(300, 24),
                executor: .serial)
        }
        expectError(.overlappingBuffers, argument: "input, residualGradient") { a throws(BatchNormError) in
            try BatchNormalization.backward(
                mode: .training, input: UnsafeBufferPointer(a.region(0, 24)),
                outputGradient: UnsafeBufferPointer(a.region(100, 24)), shape: Self.shape, mean: mean(a),
                invStd: invStd(a), residualGradient: a.region(0, 24), executor: .serial)
        }
    }

    @Test("epilogues in place: y over x or over z, dz over dy, give the out-of-place results")
    func epilogueAliases() throws {
        let dims = [2, 3, 4], shape = Self.shape
        let x: [Float] = randomValues(24, center: 0.3, seed: 18), z: [Float] = randomValues(24, seed: 19)
        let dy: [Float] = randomValues(24, seed: 20)
        let forward = try BatchNormalization.forwardTraining(x, shape: dims, residual: z, activation: .relu,
                                                             executor: .serial)
        let gradients = try BatchNormalization.backward(
            outputGradient: dy, input: x, shape: dims, statistics: forward.statistics, activation: .relu,
            forwardOutput: forward.output, wantsResidualGradient: true, executor: .serial)
        var overX = x, overZ = z
        try overX.withUnsafeMutableBufferPointer { y throws(BatchNormError) in
            try z.withUnsafeBufferPointer { z throws(BatchNormError) in
                try BatchNormalization.forwardTraining(input: UnsafeBufferPointer(y), output: y, shape: shape,
                                                       residual: z, activation: .relu, executor: .serial)
            }
        }
        try x.withUnsafeBufferPointer { x throws(BatchNormError) in
            try overZ.withUnsafeMutableBufferPointer { y throws(BatchNormError) in
                try BatchNormalization.forwardTraining(input: x, output: y, shape: shape,
                                                       residual: UnsafeBufferPointer(y), activation: .relu,
                                                       executor: .serial)
            }
        }
        #expect(overX == forward.output && overZ == forward.output)
        var dzOverDy = dy
        var dx = [Float](repeating: 0, count: 24)
        try x.withUnsafeBufferPointer { x throws(BatchNormError) in
            try forward.output.withUnsafeBufferPointer { y throws(BatchNormError) in
                try forward.statistics.mean.withUnsafeBufferPointer { mean throws(BatchNormError) in
                    try forward.statistics.invStd.withUnsafeBufferPointer { invStd throws(BatchNormError) in
                        try dx.withUnsafeMutableBufferPointer { dx throws(BatchNormError) in
                            try dzOverDy.withUnsafeMutableBufferPointer { g throws(BatchNormError) in
                                try BatchNormalization.backward(
                                    mode: .training, input: x, outputGradient: UnsafeBufferPointer(g), shape: shape,
                                    mean: mean, invStd: invStd, inputGradient: dx, activation: .relu,
                                    forwardOutput: y, residualGradient: g, executor: .serial)
                            }
                        }
                    }
                }
            }
        }
        #expect(dzOverDy == gradients.residual!)
        #expect(dx == gradients.input!)
    }

    @Test("a failing layer call leaves the layer unchanged")
    func layerUnchangedOnError() throws {
        var layer = try BatchNorm<Float>(featureCount: 3, executor: .serial)
        _ = try layer.forward(randomValues(24, center: 1, seed: 2), shape: [2, 3, 4])
        let before = layer
        func same(_ a: BatchNorm<Float>, _ b: BatchNorm<Float>) -> Bool {
            a.runningMean == b.runningMean && a.runningVariance == b.runningVariance
                && a.batchesTracked == b.batchesTracked && a.weight == b.weight && a.bias == b.bias
        }
        #expect { _ = try layer.forward(randomValues(24, seed: 3), shape: [2, 4, 3]) } throws: {
            ($0 as! BatchNormError).argument == "shape[1]"
        }
        #expect { _ = try layer.forward(randomValues(23, seed: 3), shape: [2, 3, 4]) } throws: {
            ($0 as! BatchNormError).argument == "input"
        }
        #expect { _ = try layer.forward(randomValues(3, seed: 3), shape: [1, 3]) } throws: {
            ($0 as! BatchNormError).code == .tooFewValuesPerChannel
        }
        layer.epsilon = -1
        #expect { _ = try layer.forward(randomValues(24, seed: 3), shape: [2, 3, 4]) } throws: {
            ($0 as! BatchNormError).code == .invalidEpsilon
        }
        layer.epsilon = before.epsilon
        layer.weight = [1, 2]
        #expect { _ = try layer.forward(randomValues(24, seed: 3), shape: [2, 3, 4]) } throws: {
            ($0 as! BatchNormError).argument == "weight"
        }
        layer.weight = before.weight
        #expect(same(layer, before))
        expectThrows(.invalidDimension, argument: "featureCount") { () throws(BatchNormError) in
            _ = try BatchNorm<Float>(featureCount: 0)
        }
        expectThrows(.invalidMomentum, argument: "momentum") { () throws(BatchNormError) in
            _ = try BatchNorm<Float>(featureCount: 3, momentum: 2)
        }
    }

    /// The numbers are the codes' identity across versions (synchronized calls
    /// send them): written out here, so that renumbering one fails.
    @Test func errorCodeNumbersAreFixed() {
        let numbers: [(BatchNormError.Code, Int)] = [
            (.invalidRank, 1), (.invalidDimension, 2), (.shapeTooLarge, 3), (.countMismatch, 4),
            (.tooFewValuesPerChannel, 5), (.invalidEpsilon, 6), (.invalidMomentum, 7), (.invalidThreadCount, 8),
            (.overlappingBuffers, 9), (.missingArgument, 10), (.executorUnavailable, 11), (.outOfMemory, 12),
            (.rankMismatch, 13), (.rankFailed, 14), (.communicationFailed, 15),
        ]
        for (code, number) in numbers { #expect(code.number == number, "\(code)") }
    }
}
