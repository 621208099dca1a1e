// VkAttnTestShaders: shaders that only tests dispatch (the device layer's own checks and the
// reproductions of driver defects), kept out of the shipped library. Compiled by the same
// build plugin as Shaders/; its members are generated.
import VulkanCompute

/// The test shaders: one `ShaderSource` per `Tests/TestShaders/*.comp` variant
/// (`TestShaders.affine`, `TestShaders.subgroupBarrier`) and `TestShaders.all`.
public enum TestShaders {}
