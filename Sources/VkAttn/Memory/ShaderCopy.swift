import VulkanCompute
import VkAttnShaders

/// Copies 32-bit words with a compute shader (uvec4 loads and stores): with vkCmdCopyBuffer,
/// the bandwidth roofline that memory-bound kernels are compared against.
///
/// Source and destination: equal sizes, a multiple of 4 bytes. Larger than
/// `maxStorageBufferRange` is split into several dispatches.
public struct ShaderCopy: Hashable, Sendable {
    /// Invocations per workgroup (capped by the device); each moves 16 bytes per step.
    public var workgroupSize: Int

    /// - Parameter workgroupSize: Invocations per workgroup.
    public init(workgroupSize: Int = 256) {
        self.workgroupSize = workgroupSize
    }

    /// The path name reported by the bench: 16-byte loads as two 64-bit words where the
    /// device has 64-bit integers (lavapipe moves those twice as fast), else as four 32-bit.
    /// - Parameter device: The device that will run the copy.
    /// - Returns: `shader-copy-u64x2` or `shader-copy-u32x4`.
    public static func path(on device: Device) -> String {
        device.enabled.shaderInt64 ? "shader-copy-u64x2" : "shader-copy-u32x4"
    }

    /// Records the copy into `stream`; throws before recording anything on bad input.
    /// The copy runs when the stream is submitted; separate it from work that reads `destination`
    /// with `Stream.barrier()`.
    /// - Parameters:
    ///   - stream: The stream to record into; its device owns both buffers.
    ///   - source: The bytes to copy (an empty range records nothing).
    ///   - destination: Where they go: the same size as `source`.
    /// - Throws: `VulkanError.invalidArgument` for different sizes or a size that is not a
    ///   multiple of 4; the errors of `Device.kernel` and `Stream.dispatch`.
    public func encode(from source: BufferSlice, to destination: BufferSlice, on stream: Stream) throws {
        guard source.byteCount == destination.byteCount else {
            throw VulkanError.invalidArgument("ShaderCopy: source has \(source.byteCount) bytes, destination \(destination.byteCount)")
        }
        guard source.byteCount % 4 == 0 else {
            throw VulkanError.invalidArgument("ShaderCopy: \(source.byteCount) bytes is not a multiple of 4")
        }
        guard source.byteCount > 0 else { return }  // an empty copy: nothing recorded
        let device = stream.device
        let wg = Launch.workgroupSize(workgroupSize, device: device)
        let kernel = try device.kernel(KernelDescriptor(
            shader: device.enabled.shaderInt64 ? Shaders.memoryCopyU64x2 : Shaders.memoryCopyU32x4, bindings: 4, specialization: ["local_size_x": .int(wg)]))
        for chunk in try chunks(bytes: source.byteCount, device: device) {
            let src = try source.buffer.slice(offset: source.offset + chunk.offset, byteCount: chunk.bytes)
            let dst = try destination.buffer.slice(offset: destination.offset + chunk.offset, byteCount: chunk.bytes)
            let push = CopyPush(words: try UInt32(pushing: chunk.bytes / 4, "ShaderCopy words"))
            let groups = Launch.gridStrideGroups(items: chunk.bytes / 16, workgroupSize: wg, device: device)
            try stream.dispatch(kernel, bindings: [src, dst, src, dst], push: push, groups: (groups, 1, 1))
        }
    }
}

/// Shaders/memory/copy.comp.
struct CopyPush: PushConstantBlock {
    var words: UInt32
}

/// Splits `bytes` into bindable pieces: each at most `maxStorageBufferRange`, each offset a
/// multiple of the storage-buffer offset alignment and of 16 (one uvec4).
func chunks(bytes: Int, device: Device) throws -> [(offset: Int, bytes: Int)] {
    let caps = device.capabilities
    let alignment = max(16, caps.minStorageBufferOffsetAlignment)
    let step = caps.maxStorageBufferRange / alignment * alignment
    guard step > 0 else {
        throw VulkanError.unsupportedDevice(device: device.label, reason: "maxStorageBufferRange below \(alignment) bytes")
    }
    return stride(from: 0, to: bytes, by: step).map { ($0, min(step, bytes - $0)) }
}
