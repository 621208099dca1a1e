// swift-tools-version: 6.1
// A separate app that links VkAttn, as any user's package would. It expects a VkAttn
// checkout beside it, named VkAttn (Tools/check-consumer.sh sets that up in a temporary
// directory with a symlink, so the package identity is `vkattn` wherever the repo lives).
import PackageDescription

let package = Package(
    name: "Consumer",
    dependencies: [
        .package(path: "../VkAttn"),
    ],
    targets: [
        .executableTarget(
            name: "consumer",
            dependencies: [.product(name: "VkAttn", package: "VkAttn"), .product(name: "VkAttnReference", package: "VkAttn")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
