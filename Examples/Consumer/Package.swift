// swift-tools-version: 6.2
// A separate package that depends on swift-batchnorm by path, as a user's
// would, and calls both the raw kernels and the layer type. CI builds and runs it.
import Foundation
import PackageDescription

// SwiftPM names a path dependency after its folder: "swift-batchnorm" in a
// normal checkout, but CI may clone it under another name.
let checkoutFolder = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .lastPathComponent

let package = Package(
    name: "Consumer",
    dependencies: [.package(path: "../..")],
    targets: [
        .executableTarget(
            name: "Consumer",
            dependencies: [.product(name: "BatchNormKernels", package: checkoutFolder)]
        ),
    ]
)
