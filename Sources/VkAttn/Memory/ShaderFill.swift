import VulkanCompute
import VkAttnShaders

/// Fills a buffer with one value using a compute shader (vector stores): the write-only
/// roofline, and the way kernels poison or zero their outputs.
public struct ShaderFill: Hashable, Sendable {
    /// The 32-bit element the fill value is written as.
    public enum Element: String, Sendable, Hashable, CaseIterable {
        /// `f32`: a float's bits; `u32`: a raw word.
        case f32, u32
    }

    /// The type of the value written.
    public var element: Element
    /// Invocations per workgroup (capped by the device); each writes 16 bytes per step.
    public var workgroupSize: Int

    /// - Parameters:
    ///   - element: The type of the value written.
    ///   - workgroupSize: Invocations per workgroup.
    public init(element: Element, workgroupSize: Int = 256) {
        self.element = element
        self.workgroupSize = workgroupSize
    }

    /// The path name reported by the bench.
    public var path: String { "shader-fill-\(element.rawValue)x4" }

    /// Fills `destination` (a multiple of 4 bytes) with `value`.
    /// - Parameters:
    ///   - stream: The stream to record into; its device owns the buffer.
    ///   - destination: The range to fill (an empty one records nothing).
    ///   - value: The float written to every element.
    /// - Throws: `VulkanError.invalidArgument` for a size that is not a multiple of 4; the errors
    ///   of `Device.kernel` and `Stream.dispatch`.
    public static func encode(_ destination: BufferSlice, value: Float, on stream: Stream) throws {
        try ShaderFill(element: .f32).encode(destination, bits: value.bitPattern, on: stream)
    }

    /// Fills `destination` (a multiple of 4 bytes) with `value`.
    /// - Parameters:
    ///   - stream: The stream to record into; its device owns the buffer.
    ///   - destination: The range to fill (an empty one records nothing).
    ///   - value: The word written to every element.
    /// - Throws: `VulkanError.invalidArgument` for a size that is not a multiple of 4; the errors
    ///   of `Device.kernel` and `Stream.dispatch`.
    public static func encode(_ destination: BufferSlice, value: UInt32, on stream: Stream) throws {
        try ShaderFill(element: .u32).encode(destination, bits: value, on: stream)
    }

    /// Fills `destination` (a multiple of 4 bytes) with the 32-bit pattern `bits`, as this
    /// fill is configured (element type and workgroup size).
    /// - Parameters:
    ///   - destination: The range to fill (an empty one records nothing).
    ///   - bits: The word written to every element (a float's `bitPattern` for `.f32`).
    ///   - stream: The stream to record into; its device owns the buffer.
    /// - Throws: `VulkanError.invalidArgument` for a size that is not a multiple of 4; the errors
    ///   of `Device.kernel` and `Stream.dispatch`.
    public func encode(_ destination: BufferSlice, bits: UInt32, on stream: Stream) throws {
        guard destination.byteCount % 4 == 0 else {
            throw VulkanError.invalidArgument("ShaderFill: \(destination.byteCount) bytes is not a multiple of 4")
        }
        guard destination.byteCount > 0 else { return }  // an empty range: nothing recorded
        let device = stream.device
        let wg = Launch.workgroupSize(workgroupSize, device: device)
        let shader = element == .f32 ? Shaders.memoryFillF32 : Shaders.memoryFillU32
        let kernel = try device.kernel(KernelDescriptor(
            shader: shader, bindings: 2, specialization: ["local_size_x": .int(wg)]))
        for chunk in try chunks(bytes: destination.byteCount, device: device) {
            let dst = try destination.buffer.slice(offset: destination.offset + chunk.offset, byteCount: chunk.bytes)
            let count = try UInt32(pushing: chunk.bytes / 4, "ShaderFill count")
            let groups = Launch.gridStrideGroups(items: chunk.bytes / 16, workgroupSize: wg, device: device)
            if element == .f32 {
                try stream.dispatch(kernel, bindings: [dst, dst], push: FillPushF32(count: count, value: Float(bitPattern: bits)), groups: (groups, 1, 1))
            } else {
                try stream.dispatch(kernel, bindings: [dst, dst], push: FillPushU32(count: count, value: bits), groups: (groups, 1, 1))
            }
        }
    }
}

/// Shaders/memory/fill.comp, variant f32.
struct FillPushF32: PushConstantBlock {
    var count: UInt32
    var value: Float
}

/// Shaders/memory/fill.comp, variant u32.
struct FillPushU32: PushConstantBlock {
    var count: UInt32
    var value: UInt32
}
