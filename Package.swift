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

let whenOpenMPTrait = BuildSettingCondition.when(traits: ["OpenMP"])
// The core is compiled optimized in debug builds too: its loops are written
// for the vectorizer, and `swift test` would otherwise spend its time there.
var coreCSettings: [CSetting] = [.unsafeFlags(["-O2"], .when(configuration: .debug))]
var coreLinkerSettings: [LinkerSetting] = [.linkedLibrary("m")]
if let directory = openMPLibraryDirectory() {
    coreCSettings.append(.unsafeFlags(["-fopenmp"], whenOpenMPTrait))
    coreLinkerSettings.append(.unsafeFlags(["-L\(directory)"], whenOpenMPTrait))
    coreLinkerSettings.append(.linkedLibrary("omp", whenOpenMPTrait))
}

let package = Package(
    name: "swift-batchnorm",
    products: [
        .library(name: "BatchNormKernels", targets: ["BatchNormKernels"]),
        .library(name: "BatchNormReference", targets: ["BatchNormReference"]),
        .executable(name: "bench-threads", targets: ["bench-threads"]),
    ],
    traits: [
        .trait(name: "OpenMP", description: "Run the C core's OpenMP executor when libomp is installed."),
        .default(enabledTraits: ["OpenMP"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
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
            name: "BatchNormReference",
            // Optimized in debug builds too, so that `swift test` is not dominated by it.
            swiftSettings: [.unsafeFlags(["-O"], .when(configuration: .debug))]
        ),
        .target(name: "CBenchSupport", path: "Benchmarks/CBenchSupport"),
        .executableTarget(
            name: "bench-threads",
            dependencies: [
                "BatchNormKernels", "BatchNormReference", "CBenchSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Benchmarks/bench-threads"
        ),
        .testTarget(
            name: "BatchNormKernelsTests",
            dependencies: ["BatchNormKernels", "BatchNormReference"],
            resources: [.copy("Fixtures")]
        ),
    ]
)
