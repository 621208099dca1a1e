// VkAttnShaders: the SPIR-V of every Shaders/**/*.comp, compiled by glslc at build time
// (Tools/ShaderPlugin) and embedded as generated Swift. This is the module's one real source
// file; everything else in it is generated.
import VulkanCompute

/// The embedded shaders. Members are generated: one `ShaderSource` per shader variant
/// (`Shaders.memoryCopy`, `Shaders.memoryFillF32`, ...), `Shaders.all`, and
/// `Shaders.toolchain` (what the build's glslc accepts).
public enum Shaders {}

extension Shaders {
    /// The embedded shader named `name` (path under Shaders/ without `.comp`, plus
    /// `.variant`), if this build has one by that name.
    public static func named(_ name: String) -> ShaderSource? {
        all.first { $0.name == name }
    }
}
