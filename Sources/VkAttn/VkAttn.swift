// VkAttn: long-sequence model kernels on any Vulkan device.
//
// `import VkAttn` also brings the device layer (Instance, Device, Buffer, Stream, Kernel) and
// the embedded shaders.
@_exported import VulkanCompute
@_exported import VkAttnShaders
