// swift-tools-version: 6.2
//
// swift-batchnorm: batch normalization kernels for the CPU, in C with
// OpenMP, behind a checked Swift API.
//
// OpenMP is used when all of these hold:
//   - the package trait "OpenMP" is enabled (it is by default; a consumer
//     turns it off with `traits: []` on its .package line, and
//     `swift build --disable-default-traits` turns it off here);
//   - the environment variable BATCHNORM_OPENMP is not "0";
//   - an LLVM OpenMP runtime (Debian's libomp-dev) is installed.
// Otherwise the package builds without it and runs on Dispatch;
// `isOpenMPAvailable` tells which at run time.
//
// Open MPI (for `BatchNormMPI`'s `MPIReducer`) is used in the same way: when
// the trait "MPI" is enabled (by default), BATCHNORM_MPI is not "0" and
// Debian's libopenmpi-dev is installed. Otherwise `BatchNormMPI` still builds,
// and `MPIReducer.isAvailable` is false.

import Foundation
import PackageDescription

/// The directory holding libomp.so, newest LLVM first, or nil.
func openMPLibraryDirectory() -> String? {
    if ProcessInfo.processInfo.environment["BATCHNORM_OPENMP"] == "0" { return nil }
    let fileManager = FileManager.default
    let llvmDirectories = ((try? fileManager.contentsOfDirectory(atPath: "/usr/lib")) ?? [])
        .filter { $0.hasPrefix("llvm-") }
        .sorted { (Int($0.dropFirst(5)) ?? 0) > (Int($1.dropFirst(5)) ?? 0) }
        .map { "/usr/lib/\($0)/lib" }
    let candidates = llvmDirectories + ["/usr/local/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu"]
    return candidates.first { fileManager.fileExists(atPath: "\($0)/libomp.so") }
}

/// Whether Open MPI's headers (as <mpi/mpi.h>, Debian's layout) and library are installed.
func openMPIInstalled() -> Bool {
    if ProcessInfo.processInfo.environment["BATCHNORM_MPI"] == "0" { return false }
    let fileManager = FileManager.default
    return ["x86_64-linux-gnu", "aarch64-linux-gnu"].contains { triple in
        fileManager.fileExists(atPath: "/usr/include/\(triple)/mpi/mpi.h")
            && fileManager.fileExists(atPath: "/usr/lib/\(triple)/libmpi.so")
    }
}

let whenOpenMPTrait = BuildSettingCondition.when(traits: ["OpenMP"])
// The core is compiled optimized in debug builds too: its loops are written
// for the vectorizer, and `swift test` would otherwise spend its time there.
// Every file of the core includes its internal headers from the target's root ("job.h", "plan/plan.h").
var coreCSettings: [CSetting] = [.headerSearchPath("."), .unsafeFlags(["-O2"], .when(configuration: .debug))]
// Line tables, not full debug information, for the core: every stack trace (a
// debugger's, a sanitizer's report) keeps its files, lines and inlined frames,
// and the microkernels, whose forced-inline helpers make full debug information
// large, compile in about 60 % of the time, to the same code. (SwiftPM passes
// -g after these flags, so the setting goes to the compiler proper, which takes
// the last one.) BATCHNORM_FULL_DEBUG_INFO=1 keeps full debug information, for
// a debugger's view of the core's variables.
if ProcessInfo.processInfo.environment["BATCHNORM_FULL_DEBUG_INFO"] != "1" {
    coreCSettings.append(.unsafeFlags(["-Xclang", "-debug-info-kind=line-tables-only"]))
}
var coreLinkerSettings: [LinkerSetting] = [.linkedLibrary("m")]
// bench-threads' C loops use the same OpenMP runtime, so that the next layer's read runs on the core's team.
var benchSupportCSettings: [CSetting] = []
var benchSupportLinkerSettings: [LinkerSetting] = []
if let directory = openMPLibraryDirectory() {
    coreCSettings.append(.unsafeFlags(["-fopenmp"], whenOpenMPTrait))
    coreLinkerSettings.append(.unsafeFlags(["-L\(directory)"], whenOpenMPTrait))
    coreLinkerSettings.append(.linkedLibrary("omp", whenOpenMPTrait))
    benchSupportCSettings.append(.unsafeFlags(["-fopenmp"], whenOpenMPTrait))
    benchSupportLinkerSettings.append(.unsafeFlags(["-L\(directory)"], whenOpenMPTrait))
    benchSupportLinkerSettings.append(.linkedLibrary("omp", whenOpenMPTrait))
}

let whenMPITrait = BuildSettingCondition.when(traits: ["MPI"])
var mpiCSettings: [CSetting] = []
var mpiLinkerSettings: [LinkerSetting] = []
if openMPIInstalled() {
    mpiCSettings.append(.define("CBN_WITH_MPI", whenMPITrait))
    mpiLinkerSettings.append(.linkedLibrary("mpi", whenMPITrait))
}

let package = Package(
    name: "swift-batchnorm",
    products: [
        .library(name: "BatchNormKernels", targets: ["BatchNormKernels"]),
        .library(name: "BatchNormReference", targets: ["BatchNormReference"]),
        .library(name: "BatchNormMPI", targets: ["BatchNormMPI"]),
        .library(name: "BatchNormDifferentiation", targets: ["BatchNormDifferentiation"]),
        .executable(name: "bench-threads", targets: ["bench-threads"]),
        .executable(name: "bench-sync", targets: ["bench-sync"]),
        .executable(name: "train-demo", targets: ["train-demo"]),
    ],
    traits: [
        .trait(name: "OpenMP", description: "Run the C core's OpenMP executor when libomp is installed."),
        .trait(name: "MPI", description: "Build MPIReducer on Open MPI when libopenmpi-dev is installed."),
        .default(enabledTraits: ["OpenMP", "MPI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // `swift package generate-documentation`: the DocC catalogs, built in CI.
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.4.0"),
    ],
    targets: [
        .target(
            name: "CBatchNorm",
            path: "CSources/CBatchNorm",
            cSettings: coreCSettings,
            linkerSettings: coreLinkerSettings
        ),
        .target(
            name: "BatchNormKernels",
            dependencies: ["CBatchNorm"]
        ),
        .target(
            name: "CBatchNormMPI",
            path: "CSources/CBatchNormMPI",
            cSettings: mpiCSettings,
            linkerSettings: mpiLinkerSettings
        ),
        .target(
            name: "BatchNormMPI",
            dependencies: ["BatchNormKernels", "CBatchNormMPI"]
        ),
        .target(
            name: "BatchNormDifferentiation",
            dependencies: ["BatchNormKernels"]
        ),
        .target(
            name: "BatchNormReference",
            // Optimized in debug builds too, so that `swift test` is not dominated by it.
            swiftSettings: [.unsafeFlags(["-O"], .when(configuration: .debug))]
        ),
        .target(
            name: "CBenchSupport",
            path: "Benchmarks/CBenchSupport",
            cSettings: benchSupportCSettings,
            linkerSettings: benchSupportLinkerSettings
        ),
        .executableTarget(
            name: "bench-threads",
            dependencies: [
                "BatchNormKernels", "BatchNormDifferentiation", "BatchNormReference", "CBenchSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Benchmarks/bench-threads"
        ),
        .executableTarget(
            name: "bench-sync",
            dependencies: [
                "BatchNormKernels", "BatchNormMPI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Benchmarks/bench-sync"
        ),
        .executableTarget(
            name: "train-demo",
            dependencies: [
                "BatchNormKernels", "BatchNormDifferentiation",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Demo/train-demo"
        ),
        .executableTarget(
            name: "output-hashes",
            dependencies: ["BatchNormKernels"],
            path: "Tools/output-hashes"
        ),
        // The multi-process tests, run by Scripts/mpi-tests.sh under mpirun.
        .executableTarget(
            name: "mpi-tests",
            dependencies: ["BatchNormKernels", "BatchNormMPI", "BatchNormReference"],
            path: "Tests/MPITests"
        ),
        // The suite's loops over every element (widening, transposition, ulps),
        // optimized in debug builds too, as the reference is.
        .target(
            name: "BatchNormTestSupport",
            dependencies: ["BatchNormKernels"],
            path: "Tests/TestSupport",
            swiftSettings: [.unsafeFlags(["-O"], .when(configuration: .debug))]
        ),
        .testTarget(
            name: "BatchNormKernelsTests",
            dependencies: ["BatchNormKernels", "BatchNormReference", "BatchNormMPI", "BatchNormDifferentiation",
                           "BatchNormTestSupport"],
            resources: [.copy("Fixtures")]
        ),
    ]
)
