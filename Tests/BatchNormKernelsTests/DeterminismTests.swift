@_spi(Testing) import BatchNormKernels
import Foundation
import Testing

/// The plan depends only on the shape and partial results merge in its fixed
/// order, so every executor and thread count gives the same bits.
@Suite struct DeterminismTests {
    static let shapes: [BatchNormShape] = [
        try! BatchNormShape([2, 3, 150, 150]), try! BatchNormShape([1, 1, 70_001]), try! BatchNormShape([10_000, 20]),
        try! BatchNormShape([17, 130]), try! BatchNormShape([4, 100, 3, 3]), try! BatchNormShape([1000, 3, 5, 5]),
        try! BatchNormShape([2, 150, 150, 3], layout: .channelsLast),
        try! BatchNormShape([16, 7, 7, 130], layout: .channelsLast),
        try! BatchNormShape([100, 5, 5, 3], layout: .channelsLast),
    ]

    func outputs<S: BatchNormScalar>(_: S.Type, shape: BatchNormShape, executor: BatchNormExecutor) throws -> [[S]] {
        let count = shape.count, channels = shape.channels
        let layout = shape.layout, shape = shape.dimensions
        let x: [S] = randomValues(count, center: 3, spread: 2, seed: 3)
        let dy: [S] = randomValues(count, seed: 4)
        let weight: [S] = randomValues(channels, center: 1, spread: 0.5, seed: 5)
        let bias: [S] = randomValues(channels, seed: 6)
        let forward = try BatchNormalization.forwardTraining(x, shape: shape, layout: layout, weight: weight,
                                                             bias: bias, executor: executor)
        let gradients = try BatchNormalization.backward(outputGradient: dy, input: x, shape: shape, layout: layout,
                                                        statistics: forward.statistics, weight: weight,
                                                        executor: executor)
        let statistics = (forward.statistics.mean + forward.statistics.invStd).map { S($0) }
        return [forward.output, statistics, gradients.input!, gradients.weight!, gradients.bias!]
    }

    @Test("bitwise identical for thread counts 1 to 4 and OpenMP, Dispatch, serial", arguments: shapes)
    func bitwiseIdentical(shape: BatchNormShape) throws {
        let expectedFloat = try outputs(Float.self, shape: shape, executor: .serial)
        let expectedDouble = try outputs(Double.self, shape: shape, executor: .serial)
        for executor in allExecutors {
            let float = try outputs(Float.self, shape: shape, executor: executor)
            let double = try outputs(Double.self, shape: shape, executor: executor)
            // Compare bit patterns, so that a NaN would not pass as "different".
            #expect(float.map(bytes) == expectedFloat.map(bytes), "\(executor)")
            #expect(double.map(bytes) == expectedDouble.map(bytes), "\(executor)")
        }
    }

    /// The backward sums of columns items of 1024 channels or more start
    /// their vectors at x's first cache line where every row starts alike on
    /// its lines: which vector lane holds a channel then depends on where
    /// the tensors lie, and every output must keep its bits all the same. The
    /// tensors lie a few values past a 64-byte line (vectors that start 1 to
    /// 15 values on), all alike and x apart from the others; three passes:
    /// training (dx after the sums), inference (dx in the sums pass) and
    /// relu with dz (written by the sums pass).
    @Test("backward keeps every bit wherever its tensors lie on cache lines",
          arguments: [try! BatchNormShape([6, 1040]), try! BatchNormShape([2, 20, 1, 1024], layout: .channelsLast)])
    func backwardBitsDoNotDependOnPlacement(shape: BatchNormShape) throws {
        let count = shape.count, channels = shape.channels
        let x: [Float] = randomValues(count, center: 3, spread: 2, seed: 13)
        let dy: [Float] = randomValues(count, seed: 14)
        let y: [Float] = randomValues(count, seed: 15)
        let weight: [Float] = randomValues(channels, center: 1, spread: 0.5, seed: 16)
        let mean: [Double] = randomValues(channels, center: 3, spread: 0.1, seed: 17)
        let invStd: [Double] = randomValues(channels, center: 2, spread: 0.5, seed: 18)
        try placementKeepsBits(x, dy, y, weight, mean, invStd, shape: shape)
        try placementKeepsBits(x.map(Double.init), dy.map(Double.init), y.map(Double.init), weight.map(Double.init),
                               mean, invStd, shape: shape)
        try placementKeepsBits(x.map { BFloat16($0) }, dy.map { BFloat16($0) }, y.map { BFloat16($0) }, weight,
                               mean, invStd, shape: shape)
    }

    /// Backward's dx, dz, dγ and dβ with the tensors placed at each vector
    /// start, bit for bit those with every tensor on a line.
    func placementKeepsBits<E: BatchNormElement>(_ x: [E], _ dy: [E], _ y: [E], _ weight: [E.Parameter],
                                                 _ mean: [Double], _ invStd: [Double],
                                                 shape: BatchNormShape) throws {
        let count = shape.count, channels = shape.channels, size = MemoryLayout<E>.stride
        let lineValues = 64 / size
        /// A copy of `values` in memory of its own, deallocated by the caller.
        func copy<T>(_ values: [T]) -> UnsafeMutableBufferPointer<T> {
            let buffer = UnsafeMutableBufferPointer<T>.allocate(capacity: values.count)
            _ = buffer.initialize(fromContentsOf: values)
            return buffer
        }
        let weight = copy(weight), mean = copy(mean), invStd = copy(invStd)
        defer { weight.deallocate(); mean.deallocate(); invStd.deallocate() }
        /// dx, dz, dγ and dβ as bytes, with x at `xOffset` values past a line and the other tensors at `offset`.
        func outputs(mode: BatchNormMode, relu: Bool, xOffset: Int, offset: Int,
                     executor: BatchNormExecutor) throws -> [Data] {
            let memory = UnsafeMutableRawPointer.allocate(byteCount: 5 * ((count + lineValues) * size + 64),
                                                          alignment: 64)
            let zeros = [E.Parameter](repeating: .zero, count: channels)
            let dWeight = copy(zeros), dBias = copy(zeros)
            defer { memory.deallocate(); dWeight.deallocate(); dBias.deallocate() }
            /// Tensor `index` of the five in `memory`, `offset` values past its line.
            func tensor(_ index: Int, _ values: [E]?, at offset: Int) -> UnsafeMutableBufferPointer<E> {
                let start = (memory + index * ((count + lineValues) * size + 64) + offset * size)
                    .bindMemory(to: E.self, capacity: count)
                if let values {
                    values.withUnsafeBufferPointer { start.initialize(from: $0.baseAddress!, count: count) }
                } else {
                    start.initialize(repeating: .zero, count: count)
                }
                return UnsafeMutableBufferPointer(start: start, count: count)
            }
            let xs = tensor(0, x, at: xOffset), dys = tensor(1, dy, at: offset), ys = tensor(2, y, at: offset)
            let dx = tensor(3, nil, at: offset), dz = tensor(4, nil, at: offset)
            try BatchNormalization.backward(
                mode: mode, input: UnsafeBufferPointer(xs), outputGradient: UnsafeBufferPointer(dys), shape: shape,
                mean: UnsafeBufferPointer(mean), invStd: UnsafeBufferPointer(invStd), weight: UnsafeBufferPointer(weight),
                inputGradient: dx, weightGradient: dWeight, biasGradient: dBias, activation: relu ? .relu : .identity,
                forwardOutput: relu ? UnsafeBufferPointer(ys) : nil, residualGradient: relu ? dz : nil, executor: executor)
            return [dx, dz].map { Data(buffer: $0) } + [dWeight, dBias].map { Data(buffer: $0) }
        }
        for (mode, relu) in [(BatchNormMode.training, false), (.inference, false), (.training, true)] {
            let expected = try outputs(mode: mode, relu: relu, xOffset: 0, offset: 0, executor: .serial)
            for offset in 1..<min(lineValues, 16) {    // vectors that start 1 to 15 values on (7 in Double)
                for executor in [BatchNormExecutor.serial, someExecutors.last!] {
                    let alike = try outputs(mode: mode, relu: relu, xOffset: offset, offset: offset, executor: executor)
                    #expect(alike == expected, "\(E.self) \(mode) relu \(relu) offset \(offset) \(executor)")
                }
                let apart = try outputs(mode: mode, relu: relu, xOffset: offset, offset: (offset * 5) % lineValues,
                                        executor: .serial)
                #expect(apart == expected, "\(E.self) \(mode) relu \(relu) x at \(offset), the others apart")
            }
        }
    }

    /// Where a fused item's second pass asks for the next item's x (float
    /// calls whose inputs outgrow the last-level cache; here every fused item,
    /// through the test hook), each worker takes its next item before it runs
    /// the one it holds: every item still runs once, and every output keeps
    /// its bits, on each kind of executor, with more workers than items, and
    /// in both layouts.
    @Test("fused items that ask for the next item's x keep every bit",
          arguments: [try! BatchNormShape([1, 9, 64, 64]), try! BatchNormShape([2, 12, 64, 64]),
                      try! BatchNormShape([5, 3000]), try! BatchNormShape([2, 3, 1, 2100], layout: .channelsLast)])
    func nextItemPrefetchKeepsBits(shape: BatchNormShape) throws {
        let expected = try outputs(Float.self, shape: shape, executor: .serial)
        BatchNormFaultInjection.prefetchNextItems(true)
        defer { BatchNormFaultInjection.prefetchNextItems(nil) }
        for executor in someExecutors + [.dispatch(threads: 4)] {
            let asking = try outputs(Float.self, shape: shape, executor: executor)
            #expect(asking.map(bytes) == expected.map(bytes), "\(executor)")
        }
    }

    /// The joint loops' test shapes. The planes: 17 values (a tail past one
    /// vector), 7x7, and 2100 (a block that ends within a plane).
    static let jointLoopShapes = [try! BatchNormShape([3, 700, 1, 17]), try! BatchNormShape([2, 600, 7, 7]),
                                  try! BatchNormShape([2, 5, 1, 2100])]

    /// The joint loop, where a fused item's statistics add up its x in the
    /// loops that write the y of the item its worker ran before (float and
    /// double calls on large planes whose inputs outgrow the last-level
    /// cache; here every fused item that can, through the test hook), keeps
    /// every bit of y and the saved statistics: with each epilogue, streamed
    /// and through the cache, in place, with fewer channels in the last item
    /// than in the others, and on each kind of executor. Float and double
    /// run the loop; the half formats, which do not compile it, keep their
    /// bits through the hook all the same.
    @Test("the joint loop keeps every bit",
          arguments: jointLoopShapes)
    func jointLoopKeepsBits(shape: BatchNormShape) throws {
        let x: [Float] = randomValues(shape.count, center: 3, spread: 2, seed: 23)
        let z: [Float] = randomValues(shape.count, seed: 24)
        let weight: [Float] = randomValues(shape.channels, center: 1, spread: 0.5, seed: 25)
        let bias: [Float] = randomValues(shape.channels, seed: 26)
        try jointLoopKeepsBits(x, z, weight, bias, shape: shape)
        try jointLoopKeepsBits(x.map(Double.init), z.map(Double.init), weight.map(Double.init), bias.map(Double.init),
                               shape: shape)
        try jointLoopKeepsBits(x.map { Float16($0) }, z.map { Float16($0) }, weight, bias, shape: shape)
        try jointLoopKeepsBits(x.map { BFloat16($0) }, z.map { BFloat16($0) }, weight, bias, shape: shape)
    }

    /// y, the saved mean and 1/σ of the joint loop, bit for bit those of the
    /// plan's own rule (which leaves these small shapes out of it).
    func jointLoopKeepsBits<E: BatchNormElement>(_ x: [E], _ z: [E], _ weight: [E.Parameter], _ bias: [E.Parameter],
                                                 shape: BatchNormShape) throws {
        let count = shape.count, channels = shape.channels
        /// y (x itself, normalized in place, with `inPlace`), the saved mean and 1/σ, as bytes.
        func outputs(residual: Bool, relu: Bool, inPlace: Bool, executor: BatchNormExecutor) throws -> [Data] {
            let input = UnsafeMutableBufferPointer<E>.allocate(capacity: count)
            let output = inPlace ? input : UnsafeMutableBufferPointer<E>.allocate(capacity: count)
            let mean = UnsafeMutableBufferPointer<Double>.allocate(capacity: channels)
            let invStd = UnsafeMutableBufferPointer<Double>.allocate(capacity: channels)
            defer {
                input.deallocate()
                if !inPlace { output.deallocate() }
                mean.deallocate()
                invStd.deallocate()
            }
            _ = input.initialize(fromContentsOf: x)
            if !inPlace { output.initialize(repeating: .zero) }
            try z.withUnsafeBufferPointer { z in
                try weight.withUnsafeBufferPointer { weight in
                    try bias.withUnsafeBufferPointer { bias in
                        try BatchNormalization.forwardTraining(
                            input: UnsafeBufferPointer(input), output: output, shape: shape, weight: weight,
                            bias: bias, residual: residual ? z : nil, activation: relu ? .relu : .identity,
                            savedMean: mean, savedInvStd: invStd, executor: executor)
                    }
                }
            }
            return [Data(buffer: output), Data(buffer: mean), Data(buffer: invStd)]
        }
        for streamed in [false, true] {
            BatchNormFaultInjection.streamOutputs(from: streamed ? 0 : nil)
            defer { BatchNormFaultInjection.streamOutputs(from: nil) }
            for (residual, relu, inPlace) in [(false, false, false), (false, true, false), (true, false, false),
                                              (true, true, false), (false, true, true)] {
                let expected = try outputs(residual: residual, relu: relu, inPlace: inPlace, executor: .serial)
                BatchNormFaultInjection.prefetchNextItems(true)
                defer { BatchNormFaultInjection.prefetchNextItems(nil) }
                for executor in someExecutors {
                    let joint = try outputs(residual: residual, relu: relu, inPlace: inPlace, executor: executor)
                    #expect(joint == expected, """
                        \(E.self) residual \(residual) relu \(relu) in place \(inPlace) streamed \(streamed) \
                        \(executor)
                        """)
                }
            }
        }
    }

    /// The backward joint loop, where a fused item's sums add up its x and dy
    /// in the loops that write the dx of the item its worker ran before
    /// (double calls on large planes whose inputs outgrow the last-level
    /// cache; here every fused item that can, through the test hook), keeps
    /// every bit of dx, dz, dγ and dβ: without epilogue, with relu (its mask
    /// from y, or recomputed from x), with a residual (dz written by the
    /// sums, read by dx) and relu with it, with dx in place of dy, streamed
    /// and through the cache, and on each kind of executor. Float runs the
    /// loop too through the hook; the half formats keep their bits without it.
    @Test("the backward joint loop keeps every bit",
          arguments: jointLoopShapes)
    func backwardJointLoopKeepsBits(shape: BatchNormShape) throws {
        let x: [Float] = randomValues(shape.count, center: 3, spread: 2, seed: 33)
        let dy: [Float] = randomValues(shape.count, seed: 34)
        let weight: [Float] = randomValues(shape.channels, center: 1, spread: 0.5, seed: 35)
        let bias: [Float] = randomValues(shape.channels, seed: 36)
        let mean: [Double] = randomValues(shape.channels, center: 3, spread: 0.1, seed: 37)
        let invStd: [Double] = randomValues(shape.channels, center: 1, spread: 0.3, seed: 38)
        // y as a forward pass would leave it: about half of it at or below zero, the relu mask's cut.
        let y: [Float] = randomValues(shape.count, seed: 39)
        try backwardJointLoopKeepsBits(x, dy, y, weight, bias, mean, invStd, shape: shape)
        try backwardJointLoopKeepsBits(x.map(Double.init), dy.map(Double.init), y.map(Double.init),
                                       weight.map(Double.init), bias.map(Double.init), mean, invStd, shape: shape)
        try backwardJointLoopKeepsBits(x.map { Float16($0) }, dy.map { Float16($0) }, y.map { Float16($0) },
                                       weight, bias, mean, invStd, shape: shape)
        try backwardJointLoopKeepsBits(x.map { BFloat16($0) }, dy.map { BFloat16($0) }, y.map { BFloat16($0) },
                                       weight, bias, mean, invStd, shape: shape)
    }

    /// dx, dz, dγ and dβ of the backward joint loop, bit for bit those of the
    /// plan's own rule (which leaves these small shapes out of it).
    func backwardJointLoopKeepsBits<E: BatchNormElement>(
        _ x: [E], _ dy: [E], _ y: [E], _ weight: [E.Parameter], _ bias: [E.Parameter], _ mean: [Double],
        _ invStd: [Double], shape: BatchNormShape
    ) throws {
        let count = shape.count, channels = shape.channels
        /// A copy of `values` in memory of its own.
        func copy<T>(_ values: [T]) -> UnsafeBufferPointer<T> {
            let buffer = UnsafeMutableBufferPointer<T>.allocate(capacity: values.count)
            _ = buffer.initialize(fromContentsOf: values)
            return UnsafeBufferPointer(buffer)
        }
        let xs = copy(x), ys = copy(y), weights = copy(weight), biases = copy(bias)
        let means = copy(mean), invStds = copy(invStd)
        defer {
            xs.deallocate()
            ys.deallocate()
            weights.deallocate()
            biases.deallocate()
            means.deallocate()
            invStds.deallocate()
        }
        /// The four gradients as bytes; `inPlace`: dx written over a copy of dy.
        func outputs(relu: Bool, fromY: Bool, residual: Bool, inPlace: Bool,
                     executor: BatchNormExecutor) throws -> [Data] {
            let gradient = UnsafeMutableBufferPointer<E>.allocate(capacity: count)
            let dx = inPlace ? gradient : UnsafeMutableBufferPointer<E>.allocate(capacity: count)
            let dz = UnsafeMutableBufferPointer<E>.allocate(capacity: count)
            let dWeight = UnsafeMutableBufferPointer<E.Parameter>.allocate(capacity: channels)
            let dBias = UnsafeMutableBufferPointer<E.Parameter>.allocate(capacity: channels)
            defer {
                gradient.deallocate()
                if !inPlace { dx.deallocate() }
                dz.deallocate()
                dWeight.deallocate()
                dBias.deallocate()
            }
            _ = gradient.initialize(fromContentsOf: dy)
            if !inPlace { dx.initialize(repeating: .zero) }
            dz.initialize(repeating: .zero)
            dWeight.initialize(repeating: .zero)
            dBias.initialize(repeating: .zero)
            try BatchNormalization.backward(
                mode: .training, input: xs, outputGradient: UnsafeBufferPointer(gradient), shape: shape,
                mean: means, invStd: invStds, weight: weights, bias: biases, inputGradient: dx,
                weightGradient: dWeight, biasGradient: dBias, activation: relu ? .relu : .identity,
                forwardOutput: fromY ? ys : nil, residualGradient: residual ? dz : nil, executor: executor)
            return [Data(buffer: dx), Data(buffer: dz), Data(buffer: dWeight), Data(buffer: dBias)]
        }
        for streamed in [false, true] {
            BatchNormFaultInjection.streamOutputs(from: streamed ? 0 : nil)
            defer { BatchNormFaultInjection.streamOutputs(from: nil) }
            for (relu, fromY, residual, inPlace) in [(false, false, false, false), (true, true, false, false),
                                                     (true, false, false, false), (false, false, true, false),
                                                     (true, true, true, false), (true, false, false, true)] {
                let expected = try outputs(relu: relu, fromY: fromY, residual: residual, inPlace: inPlace,
                                           executor: .serial)
                BatchNormFaultInjection.prefetchNextItems(true)
                defer { BatchNormFaultInjection.prefetchNextItems(nil) }
                for executor in someExecutors {
                    let joint = try outputs(relu: relu, fromY: fromY, residual: residual, inPlace: inPlace,
                                            executor: executor)
                    #expect(joint == expected, """
                        \(E.self) relu \(relu) mask from y \(fromY) residual \(residual) in place \(inPlace) \
                        streamed \(streamed) \(executor)
                        """)
                }
            }
        }
    }
}
