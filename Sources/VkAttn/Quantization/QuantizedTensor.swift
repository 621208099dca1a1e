import VulkanCompute

/// An int8-quantized tensor with one fp32 scale per block of 32 elements along the last
/// dimension: the layout of a quantized K/V cache (`KVQuantization` makes and reads it).
///
/// A tensor of logical shape `[..., D]` (a K or V cache `[tokens, Hkv, D]`, `[B, S, Hkv, D]`,
/// or paged `[pages, pageSize, Hkv, D]`) is stored as two tensors on one device:
/// - ``values``: dtype `.i8`, shape `[..., D]`, row-major (the last dimension contiguous);
/// - ``scales``: dtype `.f32`, shape `[..., ceil(D / 32)]`: scale `c` of a row covers that
///   row's elements `[32c, min(32c + 32, D))`.
///
/// Element `x` of a row is `Float(q) * scales[c]`, with `q` its value and `c = index / 32` its
/// block. Kernels read and write the values four to a 32-bit word, so devices need no 8-bit
/// storage feature; rows need not start on a word (D may be any size >= 1).
public struct QuantizedTensor: Sendable {
    /// The quantized values: `.i8`, shape ``shape``.
    public let values: Tensor
    /// The per-block scales: `.f32`, shape `KVQuantization.scalesShape(for: shape)`.
    public let scales: Tensor

    /// The op name in this type's errors.
    public static let opName = "QuantizedTensor"

    /// Pairs existing values and scales; throws unless they form the layout.
    /// - Parameters:
    ///   - values: `.i8` values of shape `[..., D]`, D >= 1 (other dimensions may be 0).
    ///   - scales: `.f32` scales of shape `[..., ceil(D / 32)]`, on the same device.
    /// - Throws: ``VkAttnError/dtypeMismatch(op:operand:expected:actual:)`` for values that are
    ///   not `.i8` or scales that are not `.f32`, ``VkAttnError/shapeMismatch(op:operand:expected:actual:)``
    ///   for values with no dimension or a last dimension of 0, or scales of another shape,
    ///   ``VkAttnError/deviceMismatch(op:operand:)`` for scales on another device,
    ///   ``VkAttnError/invalidValue(op:operand:reason:)`` for scales that share bytes with the
    ///   values; the op is `QuantizedTensor`.
    public init(values: Tensor, scales: Tensor) throws {
        let op = Self.opName
        guard values.dtype == .i8 else {
            throw VkAttnError.dtypeMismatch(op: op, operand: "values", expected: DType.i8.rawValue, actual: values.dtype.rawValue)
        }
        guard (values.shape.last ?? 0) >= 1 else {
            throw VkAttnError.shapeMismatch(op: op, operand: "values", expected: "[..., D] with D >= 1", actual: "\(values.shape)")
        }
        try scales.expect(op: op, "scales", shape: KVQuantization.scalesShape(for: values.shape), dtype: .f32, device: values.device)
        if KVQuantization.overlaps(values, scales) {
            throw VkAttnError.invalidValue(op: op, operand: "scales", reason: "overlaps values")
        }
        self.values = values
        self.scales = scales
    }

    /// The logical shape `[..., D]` (the values' shape).
    public var shape: [Int] { values.shape }
    /// D, the last dimension: the length of a row.
    public var rowWidth: Int { values.shape[values.shape.count - 1] }
    /// Scales per row: `ceil(D / 32)`.
    public var blocksPerRow: Int { (rowWidth + KVQuantization.blockSize - 1) / KVQuantization.blockSize }
    /// The device holding both tensors.
    public var device: Device { values.device }
    /// True when the tensor has no elements (a dimension is zero): ops record nothing for it.
    public var isEmpty: Bool { values.isEmpty }
}

/// Making quantized tensors.
extension Device {
    /// A new quantized tensor (contents undefined): `.i8` values of `shape` and `.f32` scales of
    /// `KVQuantization.scalesShape(for: shape)`, each over a new device-local buffer.
    /// - Parameter shape: The logical shape `[..., D]`, D >= 1; other dimensions may be 0.
    /// - Returns: The tensor, ready to be written by `KVQuantization.quantize(_:into:on:)`.
    /// - Throws: ``VkAttnError/shapeMismatch(op:operand:expected:actual:)`` for a shape with no
    ///   dimension or a last dimension below 1; the errors of ``makeTensor(shape:dtype:)``.
    public func makeQuantizedTensor(shape: [Int]) throws -> QuantizedTensor {
        guard (shape.last ?? 0) >= 1 else {
            throw VkAttnError.shapeMismatch(op: QuantizedTensor.opName, operand: "shape", expected: "[..., D] with D >= 1", actual: "\(shape)")
        }
        let values = try makeTensor(shape: shape, dtype: .i8)
        let scales = try makeTensor(shape: KVQuantization.scalesShape(for: shape), dtype: .f32)
        return try QuantizedTensor(values: values, scales: scales)
    }
}
