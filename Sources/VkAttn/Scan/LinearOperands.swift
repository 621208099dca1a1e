import VulkanCompute
import VkAttnShaders

/// What the chunked linear ops (GLA, the delta rule, the SSD through GLA) check alike about
/// their main operands, and how they pick a shader variant from the storage types: q, k
/// [B, L, H, Dk] and v [B, L, H, Dv], all f32, f16 or bf16 alike, on one device; outputs f32 or
/// the inputs' type.
package struct LinearOperands {
    package let B: Int, L: Int, H: Int, Dk: Int, Dv: Int
    /// The storage type of q, k and v.
    package let inputType: DType

    /// Checks q, k and v for `op` (errors name the op and the operand, before anything is recorded).
    package init(op name: String, device: Device, q: Tensor, k: Tensor, v: Tensor) throws {
        guard q.shape.count == 4 else {
            throw VkAttnError.shapeMismatch(op: name, operand: "q", expected: "[B, L, H, Dk]", actual: "\(q.shape)")
        }
        (B, L, H, Dk) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3])
        guard v.shape.count == 4, Array(v.shape.prefix(3)) == [B, L, H] else {
            throw VkAttnError.shapeMismatch(op: name, operand: "v", expected: "[\(B), \(L), \(H), Dv]", actual: "\(v.shape)")
        }
        Dv = v.shape[3]
        inputType = q.dtype
        guard inputType == .f32 || inputType.isHalfWidth else {
            throw VkAttnError.dtypeMismatch(op: name, operand: "q", expected: "f32, f16 or bf16", actual: inputType.rawValue)
        }
        if inputType.isHalfWidth && !device.enabled.storageBuffer16BitAccess {
            throw VkAttnError.unsupported(op: name, reason: "\(inputType) inputs need storageBuffer16BitAccess, which \(device.label) lacks")
        }
        try q.expect(op: name, "q", shape: q.shape, dtype: inputType, device: device)
        try k.expect(op: name, "k", shape: q.shape, dtype: inputType, device: device)
        try v.expect(op: name, "v", shape: v.shape, dtype: inputType, device: device)
    }

    /// Checks that an output operand `t` is f32 or the inputs' type.
    package static func expectOutputType(op name: String, input: DType, _ operand: String, _ t: Tensor) throws {
        guard t.dtype == .f32 || t.dtype == input else {
            throw VkAttnError.dtypeMismatch(op: name, operand: operand, expected: input == .f32 ? "f32" : "f32 or \(input)",
                                            actual: t.dtype.rawValue)
        }
    }

    /// The variant of a kernel reading inputs of type `input` and writing outputs of type `output`.
    package static func variant(input: DType, output: DType, _ f32: ShaderSource, f16: ShaderSource, f16o32: ShaderSource,
                                bf16: ShaderSource, bf16o32: ShaderSource) -> ShaderSource {
        switch (input, output) {
        case (.f16, .f16): return f16
        case (.f16, _): return f16o32
        case (.bf16, .bf16): return bf16
        case (.bf16, _): return bf16o32
        default: return f32
        }
    }
}
