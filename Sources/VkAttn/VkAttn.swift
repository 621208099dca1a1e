// VkAttn: long-sequence model kernels on any Vulkan device.
//
// `import VkAttn` also brings the device layer (Instance, Device, Buffer, Stream, Kernel).
@_exported import VulkanCompute

/// The SPIR-V of every shader under Shaders/, embedded at build time by the ShaderPlugin.
/// Members are generated: `Shaders.memoryCopy`, `Shaders.memoryFillF32`, ..., `Shaders.all`,
/// and `Shaders.toolchain` (what the build's glslc accepts).
public enum Shaders {}

extension Shaders {
    /// The embedded shader named `name` (path under Shaders/ without `.comp`, plus
    /// `.variant`), if this build has one by that name.
    public static func named(_ name: String) -> ShaderSource? {
        all.first { $0.name == name }
    }

    /// Every embedded shader, including those this build could not compile (see
    /// `ShaderSource.unavailableReason`).
    public static var everything: [ShaderSource] { all }
}
