import BatchNormKernels
import Testing

/// The four element types, as these tests make and compare them.
protocol TestElement: BatchNormElement {
    /// `value` rounded to the type.
    static func rounded(_ value: Double) -> Self
    /// The bits, widened: equal only for the same bits.
    var testBits: UInt64 { get }
}
extension Float: TestElement {
    static func rounded(_ value: Double) -> Self { Self(value) }
    var testBits: UInt64 { UInt64(bitPattern) }
}
extension Double: TestElement {
    static func rounded(_ value: Double) -> Self { Self(value) }
    var testBits: UInt64 { bitPattern }
}
extension Float16: TestElement {
    static func rounded(_ value: Double) -> Self { Self(value) }
    var testBits: UInt64 { UInt64(bitPattern) }
}
extension BFloat16: TestElement {
    static func rounded(_ value: Double) -> Self { Self(value) }
    var testBits: UInt64 { UInt64(bitPattern) }
}

func testValues<E: TestElement>(_ count: Int, center: Double = 0, spread: Double = 1, seed: UInt64) -> [E] {
    (randomValues(count, center: center, spread: spread, seed: seed) as [Double]).map { E.rounded($0) }
}

func bits<E: TestElement>(_ values: [E]?) -> [UInt64]? { values?.map(\.testBits) }

/// The address of an array's storage, to tell whether a call kept it.
func storage<E>(_ array: [E]?) -> UnsafeRawPointer? {
    array?.withUnsafeBytes { $0.baseAddress }
}

/// The `into:` overloads of the array conveniences and the layer: the same
/// bits as the calls that return new arrays, in the caller's storage when it
/// is large enough, never in storage another array shares, and nothing
/// changed on error.
@Suite struct IntoOverloadTests {
    static let cases: [(nchw: [Int], layout: BatchNormLayout)] = [
        ([4, 3, 5, 5], .channelsFirst), ([4, 3, 5, 5], .channelsLast), ([16, 20], .channelsFirst),
        ([2, 40, 7, 7], .channelsLast),
    ]

    /// One case's data.
    struct Data<E: TestElement> {
        let shape: [Int], layout: BatchNormLayout, count: Int, channels: Int
        let x, z, dy: [E]
        let weight, bias, runningMean, runningVariance: [E.Parameter]

        init(nchw: [Int], layout: BatchNormLayout) {
            shape = dimensions(nchw, in: layout)
            self.layout = layout
            count = nchw.reduce(1, *)
            channels = nchw[1]
            x = testValues(count, center: 1, spread: 3, seed: 1)
            z = testValues(count, seed: 2)
            dy = testValues(count, seed: 3)
            weight = (testValues(channels, center: 1, spread: 0.5, seed: 4) as [Double]).map { .init($0) }
            bias = (testValues(channels, seed: 5) as [Double]).map { .init($0) }
            runningMean = (testValues(channels, seed: 6) as [Double]).map { .init($0) }
            runningVariance = (testValues(channels, center: 2, spread: 1, seed: 7) as [Double]).map { .init($0) }
        }

        /// An array of `count` values unlike any result, to write over.
        func stale(_ count: Int) -> [E] { testValues(count, center: 1e3, seed: 99) }
    }

    func checkArraysMatch<E: TestElement>(_: E.Type, executor: BatchNormExecutor) throws {
        for (nchw, layout) in Self.cases {
            let d = Data<E>(nchw: nchw, layout: layout)
            for activation in BatchNormActivation.allCases {
                let residual = activation == .relu ? d.z : nil
                let made = try BatchNormalization.forwardTraining(
                    d.x, shape: d.shape, layout: layout, weight: d.weight, bias: d.bias, residual: residual,
                    activation: activation, executor: executor)
                var output = d.stale(d.count)
                let statistics = try BatchNormalization.forwardTraining(
                    d.x, into: &output, shape: d.shape, layout: layout, weight: d.weight, bias: d.bias,
                    residual: residual, activation: activation, executor: executor)
                #expect(bits(output) == bits(made.output), "\(E.self) \(nchw) \(layout) \(activation) \(executor)")
                #expect(statistics == made.statistics)

                let inference = try BatchNormalization.forwardInference(
                    d.x, shape: d.shape, layout: layout, runningMean: d.runningMean,
                    runningVariance: d.runningVariance, weight: d.weight, bias: d.bias, residual: residual,
                    activation: activation, executor: executor)
                try BatchNormalization.forwardInference(
                    d.x, into: &output, shape: d.shape, layout: layout, runningMean: d.runningMean,
                    runningVariance: d.runningVariance, weight: d.weight, bias: d.bias, residual: residual,
                    activation: activation, executor: executor)
                #expect(bits(output) == bits(inference))

                for wantsResidual in [false, true] {
                    let returned = try BatchNormalization.backward(
                        outputGradient: d.dy, input: d.x, shape: d.shape, layout: layout,
                        statistics: made.statistics, weight: d.weight, activation: activation,
                        forwardOutput: made.output, wantsResidualGradient: wantsResidual, executor: executor)
                    var gradients = BatchNormGradients<E>(
                        input: d.stale(d.count), weight: [1, 2], bias: nil, residual: d.stale(3))
                    try BatchNormalization.backward(
                        outputGradient: d.dy, input: d.x, shape: d.shape, layout: layout,
                        statistics: made.statistics, weight: d.weight, activation: activation,
                        forwardOutput: made.output, into: &gradients, wantsResidualGradient: wantsResidual,
                        executor: executor)
                    #expect(bits(gradients.input) == bits(returned.input))
                    #expect(gradients.weight == returned.weight && gradients.bias == returned.bias)
                    #expect(bits(gradients.residual) == bits(returned.residual))
                    #expect((gradients.residual != nil) == wantsResidual)
                }
            }
        }
    }

    @Test func arrayIntoOverloadsGiveTheSameBitsAsNewArrays() throws {
        for executor in someExecutors {
            try checkArraysMatch(Float.self, executor: executor)
            try checkArraysMatch(Double.self, executor: executor)
            try checkArraysMatch(Float16.self, executor: executor)
            try checkArraysMatch(BFloat16.self, executor: executor)
        }
    }

    func checkLayerMatches<E: TestElement>(_: E.Type, executor: BatchNormExecutor) throws {
        for (nchw, layout) in Self.cases {
            let d = Data<E>(nchw: nchw, layout: layout)
            for affine in [true, false] {
                var returning = try BatchNorm<E>(featureCount: d.channels, affine: affine, executor: executor)
                if affine { (returning.weight, returning.bias) = (d.weight, d.bias) }
                var writing = returning
                var output = d.stale(d.count)
                var gradients = BatchNormGradients<E>()
                for mode in [BatchNormMode.training, .training, .inference] {
                    (returning.mode, writing.mode) = (mode, mode)
                    let made = try returning.forward(d.x, shape: d.shape, layout: layout, residual: d.z)
                    let statistics = try writing.forward(d.x, into: &output, shape: d.shape, layout: layout,
                                                         residual: d.z)
                    #expect(bits(output) == bits(made.output), "\(E.self) \(nchw) \(layout) \(mode)")
                    #expect(statistics == made.statistics)
                    #expect(writing.runningMean == returning.runningMean)
                    #expect(writing.runningVariance == returning.runningVariance)
                    #expect(writing.batchesTracked == returning.batchesTracked)

                    let returned = try returning.backward(
                        outputGradient: d.dy, input: d.x, shape: d.shape, layout: layout,
                        statistics: made.statistics, wantsResidualGradient: true)
                    try writing.backward(outputGradient: d.dy, input: d.x, shape: d.shape, layout: layout,
                                         statistics: statistics, into: &gradients, wantsResidualGradient: true)
                    #expect(bits(gradients.input) == bits(returned.input))
                    #expect(bits(gradients.residual) == bits(returned.residual))
                    #expect(gradients.weight == returned.weight && gradients.bias == returned.bias)
                    #expect((gradients.weight != nil) == affine)
                }
            }
        }
    }

    @Test func layerIntoOverloadsGiveTheSameBitsAndStatisticsAsNewArrays() throws {
        for executor in someExecutors {
            try checkLayerMatches(Float.self, executor: executor)
            try checkLayerMatches(Double.self, executor: executor)
            try checkLayerMatches(Float16.self, executor: executor)
            try checkLayerMatches(BFloat16.self, executor: executor)
        }
    }

    @Test func storageIsReusedWhenItsCapacitySuffices() throws {
        let d = Data<Float>(nchw: [4, 3, 5, 5], layout: .channelsFirst)
        let want = try BatchNormalization.forwardTraining(d.x, shape: d.shape).output

        // The same count, a longer array, and a shorter one with room to grow: the same storage.
        let unshared: [() -> [Float]] = [
            { d.stale(d.count) }, { d.stale(d.count + 17) },
            { var shorter = d.stale(5); shorter.reserveCapacity(d.count); return shorter },
        ]
        for make in unshared {
            var array = make()
            let before = storage(array)
            try BatchNormalization.forwardTraining(d.x, into: &array, shape: d.shape)
            #expect(storage(array) == before)
            #expect(array.count == d.count && array == want)
        }

        // Too small: new storage, of the right count.
        var small = d.stale(5)
        try BatchNormalization.forwardTraining(d.x, into: &small, shape: d.shape)
        #expect(small == want)

        // Gradients: every array kept.
        let statistics = try BatchNormalization.forwardTraining(d.x, shape: d.shape).statistics
        var gradients = BatchNormGradients<Float>(input: d.stale(d.count), weight: [0, 0, 0], bias: [0, 0, 0],
                                                  residual: d.stale(d.count))
        let before = [storage(gradients.input), storage(gradients.weight), storage(gradients.bias),
                      storage(gradients.residual)]
        try BatchNormalization.backward(outputGradient: d.dy, input: d.x, shape: d.shape, statistics: statistics,
                                        into: &gradients, wantsResidualGradient: true)
        #expect([storage(gradients.input), storage(gradients.weight), storage(gradients.bias),
                 storage(gradients.residual)] == before)
    }

    @Test func storageAnotherArraySharesIsNeverWritten() throws {
        let d = Data<Float>(nchw: [4, 3, 5, 5], layout: .channelsLast)
        var output = d.stale(d.count)
        let shared = output
        try BatchNormalization.forwardTraining(d.x, into: &output, shape: d.shape, layout: d.layout)
        #expect(shared == d.stale(d.count))
        #expect(output == (try BatchNormalization.forwardTraining(d.x, shape: d.shape, layout: d.layout).output))

        var layer = try BatchNorm<Float>(featureCount: d.channels)
        let sharedAgain = output
        let statistics = try layer.forward(d.z, into: &output, shape: d.shape, layout: d.layout)
        #expect(sharedAgain != output && storage(sharedAgain) != storage(output))

        var gradients = BatchNormGradients<Float>(input: d.stale(d.count), weight: [0, 0, 0], bias: [0, 0, 0])
        let sharedGradients = gradients
        try layer.backward(outputGradient: d.dy, input: d.z, shape: d.shape, layout: d.layout,
                           statistics: statistics, into: &gradients)
        #expect(sharedGradients.input == d.stale(d.count))
        #expect(sharedGradients.weight == [0, 0, 0] && sharedGradients.bias == [0, 0, 0])
        #expect(gradients.input != sharedGradients.input)

        // The input as its own output: the input is read whole, y lands in the array.
        var x = d.x
        try BatchNormalization.forwardTraining(x, into: &x, shape: d.shape, layout: d.layout)
        #expect(x == (try BatchNormalization.forwardTraining(d.x, shape: d.shape, layout: d.layout).output))
    }

    @Test func nothingChangesOnError() throws {
        let d = Data<Float>(nchw: [4, 3, 5, 5], layout: .channelsFirst)
        let wrongWeight: [Float] = [1, 2]
        func expectCountMismatch(_ argument: String, _ call: () throws(BatchNormError) -> Void) {
            do throws(BatchNormError) {
                try call()
                Issue.record("no error for a wrong \(argument)")
            } catch {
                #expect(error.code == .countMismatch && error.argument == argument)
            }
        }
        // Each way `into:` can take storage: as it is, its prefix, grown in place, or new.
        let arrays: [() -> [Float]] = [
            { d.stale(d.count) }, { d.stale(d.count + 3) },
            { var shorter = d.stale(5); shorter.reserveCapacity(d.count); return shorter }, { d.stale(5) }, { [] },
        ]
        for make in arrays {
            var output = make()
            let original = output.map { $0 }   // the values, in storage of their own
            let before = storage(output)
            expectCountMismatch("weight") { () throws(BatchNormError) in
                try BatchNormalization.forwardTraining(d.x, into: &output, shape: d.shape, weight: wrongWeight)
            }
            expectCountMismatch("weight") { () throws(BatchNormError) in
                try BatchNormalization.forwardInference(
                    d.x, into: &output, shape: d.shape, runningMean: d.runningMean,
                    runningVariance: d.runningVariance, weight: wrongWeight)
            }
            #expect(output == original && output.count == original.count)
            if original.count >= d.count { #expect(storage(output) == before) }

            var layer = try BatchNorm<Float>(featureCount: d.channels)
            layer.weight = wrongWeight
            let layerBefore = layer
            expectCountMismatch("weight") { () throws(BatchNormError) in
                try layer.forward(d.x, into: &output, shape: d.shape)
            }
            #expect(output == original)
            #expect(layer.runningMean == layerBefore.runningMean && layer.batchesTracked == 0)
        }

        let statistics = try BatchNormalization.forwardTraining(d.x, shape: d.shape).statistics
        for original in [BatchNormGradients<Float>(), BatchNormGradients(input: [], weight: [9], bias: nil,
                                                                         residual: d.stale(d.count))] {
            for wantsResidual in [false, true] {
                var gradients = original
                expectCountMismatch("weight") { () throws(BatchNormError) in
                    try BatchNormalization.backward(
                        outputGradient: d.dy, input: d.x, shape: d.shape, statistics: statistics,
                        weight: wrongWeight, into: &gradients, wantsResidualGradient: wantsResidual)
                }
                #expect(gradients.input == original.input && gradients.weight == original.weight)
                #expect(gradients.bias == original.bias && gradients.residual == original.residual)
            }
        }
    }
}
