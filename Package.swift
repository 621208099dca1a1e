// swift-tools-version: 6.1
// VkAttn: long-sequence model kernels (flash attention, SpMM, scans) on any Vulkan device.
//
// Module layering (one direction only):
//   CVulkan (system library + shim) -> VulkanCompute (device layer) -> VkAttn (ops)
//     -> VkAttnParallel (schedulers over ranks) -> VkAttnMPI (Open MPI transport) -> vkattn-bench
//   VkAttn -> VkAttnReference (fp64 references, generators, error measures) -> tests, --check
// Shaders/**/*.comp are compiled by glslc at build time (plugin in Tools/ShaderPlugin) and
// embedded as base64 string literals in VkAttnShaders, which VkAttn depends on.
import PackageDescription

let package = Package(
    name: "VkAttn",
    products: [
        .library(name: "VkAttn", targets: ["VkAttn"]),
        // Context parallelism: transports, sharding, traces and the schedulers that split one
        // sequence over the ranks of a device group.
        .library(name: "VkAttnParallel", targets: ["VkAttnParallel"]),
        // fp64 CPU references of every kernel, seeded generators and the error measures the
        // tests and `--check` use: for apps that check their own runs the same way.
        .library(name: "VkAttnReference", targets: ["VkAttnReference"]),
        // The communicator on Open MPI (one process per rank): a product of its own, so that
        // apps using only VkAttn never need MPI installed.
        .library(name: "VkAttnMPI", targets: ["VkAttnMPI"]),
        .executable(name: "vkattn-bench", targets: ["vkattn-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // `swift package generate-documentation` (the DocC catalogs in Sources/*/*.docc).
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.4.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CVulkan",
            path: "Sources/CVulkan",
            pkgConfig: "vulkan",
            providers: [.apt(["libvulkan-dev"])]
        ),
        .target(
            name: "VulkanCompute",
            dependencies: ["CVulkan"]
        ),
        // The GLSL sources live in Shaders/ as this target's files, so that adding or editing
        // one re-runs the plugin; their SPIR-V becomes generated Swift in this module.
        .target(
            name: "VkAttnShaders",
            dependencies: ["VulkanCompute"],
            path: "Shaders",
            plugins: [.plugin(name: "ShaderPlugin")]
        ),
        .target(
            name: "VkAttn",
            dependencies: ["VulkanCompute", "VkAttnShaders"]
        ),
        .target(
            name: "VkAttnParallel",
            dependencies: ["VkAttn"]
        ),
        .target(
            name: "VkAttnReference",
            dependencies: ["VkAttn"]
        ),
        .systemLibrary(
            name: "CMPI",
            path: "Sources/CMPI",
            pkgConfig: "ompi",
            providers: [.apt(["libopenmpi-dev"])]
        ),
        .target(
            name: "VkAttnMPI",
            dependencies: ["VkAttnParallel", "CMPI"]
        ),
        // The MPI tests: an executable run under `mpirun -np N` (Tools/test-mpi.sh).
        .executableTarget(
            name: "vkattn-mpi-tests",
            dependencies: ["VkAttnMPI", "VkAttnReference"]
        ),
        .executableTarget(
            name: "vkattn-bench",
            dependencies: [
                "VkAttn",
                "VkAttnParallel",
                "VkAttnReference",
                // --backend mpi (the VkAttn library product itself stays free of MPI).
                "VkAttnMPI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Build-time tooling: the plugin plans one glslc run per shader variant; the compiler
        // tool runs glslc and writes the SPIR-V as a Swift base64 literal.
        .executableTarget(
            name: "vkattn-shaderc",
            path: "Tools/ShaderCompiler"
        ),
        .plugin(
            name: "ShaderPlugin",
            capability: .buildTool(),
            dependencies: ["vkattn-shaderc"],
            path: "Tools/ShaderPlugin"
        ),
        // Shared by the test targets: devices with validation checked; re-exports the references.
        .target(
            name: "TestSupport",
            dependencies: ["VkAttn", "VkAttnReference"],
            path: "Tests/TestSupport"
        ),
        // Shaders only tests dispatch, compiled by the same plugin, out of the shipped library.
        .target(
            name: "VkAttnTestShaders",
            dependencies: ["VulkanCompute"],
            path: "Tests/TestShaders",
            plugins: [.plugin(name: "ShaderPlugin")]
        ),
        .testTarget(
            name: "VulkanComputeTests",
            dependencies: ["CVulkan", "VulkanCompute", "VkAttn", "VkAttnTestShaders", "TestSupport"]
        ),
        .testTarget(
            name: "VkAttnTests",
            dependencies: ["VkAttn", "VkAttnParallel", "TestSupport"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
