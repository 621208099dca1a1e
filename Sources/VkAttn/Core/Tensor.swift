import VulkanCompute

/// Element types of tensors.
public enum DType: String, Sendable, Hashable, Codable, CaseIterable, CustomStringConvertible {
    /// IEEE float32, float16, bfloat16 (the upper half of a float32), and 32-bit integers.
    case f32, f16, bf16, i32, u32
    /// Signed 8-bit integers: the values of a quantized K/V cache (`KVQuantization`). Kernels
    /// read them four to a 32-bit word, so devices need no 8-bit storage feature.
    case i8

    /// Bytes per element: 4 for f32, i32, u32; 2 for f16, bf16; 1 for i8.
    public var byteSize: Int {
        switch self {
        case .f32, .i32, .u32: return 4
        case .f16, .bf16: return 2
        case .i8: return 1
        }
    }

    /// f16 or bf16: the 16-bit floating-point storage types.
    public var isHalfWidth: Bool { self == .f16 || self == .bf16 }

    /// `value` rounded to this type and back (identity for f32; integers truncate toward zero
    /// and saturate at their range, and NaN, which no integer holds, stays NaN).
    /// - Parameter value: A float32.
    /// - Returns: The value as this type stores it, widened back to float32.
    public func rounded(_ value: Float) -> Float {
        switch self {
        case .f32: return value
        case .f16: return Float(Float16(value))
        case .bf16: return BFloat16.rounded(value)
        case .i32, .u32, .i8:
            // Integers hold no NaN; others truncate toward zero and saturate at the type's range.
            guard !value.isNaN else { return .nan }
            let (low, high): (Float, Float)
            switch self {
            case .i32: (low, high) = (-2_147_483_648, 2_147_483_520)
            case .i8: (low, high) = (-128, 127)
            default: (low, high) = (0, 4_294_967_040)
            }
            return min(max(value.rounded(.towardZero), low), high)
        }
    }

    /// The raw value: `f32`, `f16`, `bf16`, `i32`, `u32`, `i8`.
    public var description: String { rawValue }
}

/// A dense tensor: a byte range of a device buffer, a row-major shape (last dimension
/// contiguous) and an element type. Ops take and return tensors; they check shapes, types and
/// devices at their entry point and throw `VkAttnError` naming the op and the operand.
public struct Tensor: Sendable {
    /// The bytes the tensor occupies.
    public let slice: BufferSlice
    /// The dimensions, outermost first; the last is contiguous.
    public let shape: [Int]
    /// The element type.
    public let dtype: DType

    /// Views `buffer` (from `byteOffset`) as a tensor; throws when the shape does not fit.
    /// Several tensors may view one buffer (at different offsets); nothing is copied.
    /// - Parameters:
    ///   - buffer: The buffer holding the elements.
    ///   - shape: The dimensions; any may be zero (an empty tensor, 0 bytes).
    ///   - dtype: The element type.
    ///   - byteOffset: Where the first element starts.
    /// - Throws: ``VkAttnError/invalidValue(op:operand:reason:)`` for a negative dimension or an
    ///   overflowing size; `VulkanError.rangeOutOfBounds` when the elements do not fit in
    ///   `buffer` from `byteOffset`.
    public init(_ buffer: Buffer, shape: [Int], dtype: DType, byteOffset: Int = 0) throws {
        let count = try Tensor.elementCount(shape)
        let bytes = try Checked.product(op: "Tensor", operand: "shape", count, dtype.byteSize)
        self.slice = try buffer.slice(offset: byteOffset, byteCount: bytes)
        self.shape = shape
        self.dtype = dtype
    }

    /// The device the tensor lives on.
    public var device: Device { slice.buffer.device }
    /// The buffer the tensor views.
    public var buffer: Buffer { slice.buffer }
    /// The number of elements (the product of the shape); zero for an empty tensor.
    public var elementCount: Int { shape.reduce(1, *) }
    /// True when the tensor has no elements (a dimension is zero): ops record nothing for it.
    public var isEmpty: Bool { shape.contains(0) }
    /// The tensor's size in bytes.
    public var byteCount: Int { slice.byteCount }

    /// The tensor's bytes widened to whole 32-bit words: how kernels that read 8-bit elements
    /// four to a word bind them.
    /// - Parameters:
    ///   - op: The op, for errors.
    ///   - name: The operand, for errors.
    /// - Returns: The slice from the tensor's first byte to the end of the word holding its last.
    /// - Throws: ``VkAttnError/invalidValue(op:operand:reason:)`` when the tensor does not start
    ///   on a 4-byte boundary or its last word runs past its buffer.
    package func wordSlice(op: String, _ name: String) throws -> BufferSlice {
        guard slice.offset % 4 == 0 else {
            throw VkAttnError.invalidValue(op: op, operand: name, reason: "starts at byte \(slice.offset); \(dtype) operands are read in 32-bit words and must start on a 4-byte boundary")
        }
        let bytes = (byteCount + 3) / 4 * 4
        guard slice.offset + bytes <= buffer.byteCount else {
            throw VkAttnError.invalidValue(op: op, operand: name, reason: "ends mid-word at its buffer's end; \(dtype) operands are read in 32-bit words (Device.makeTensor rounds their buffers up)")
        }
        return try buffer.slice(offset: slice.offset, byteCount: bytes)
    }

    static func elementCount(_ shape: [Int]) throws -> Int {
        var count = 1
        for d in shape {
            guard d >= 0 else {
                throw VkAttnError.invalidValue(op: "Tensor", operand: "shape", reason: "\(shape) has a negative dimension")
            }
            let (product, overflow) = count.multipliedReportingOverflow(by: d)
            guard !overflow else {
                throw VkAttnError.invalidValue(op: "Tensor", operand: "shape", reason: "\(shape) overflows")
            }
            count = product
        }
        return count
    }

    /// Throws unless this tensor has `shape` and `dtype` and lives on `device`.
    /// Ops call this at their entry point; apps can too, for their own operands.
    /// - Parameters:
    ///   - op: The op's name, for the error.
    ///   - operand: The operand's name, for the error.
    ///   - expected: The shape the tensor must have.
    ///   - dtype: The element type it must have; nil accepts any.
    ///   - device: The device it must live on; nil accepts any.
    /// - Throws: ``VkAttnError/shapeMismatch(op:operand:expected:actual:)``,
    ///   ``VkAttnError/dtypeMismatch(op:operand:expected:actual:)`` or
    ///   ``VkAttnError/deviceMismatch(op:operand:)``, the first that applies.
    public func expect(op: String, _ operand: String, shape expected: [Int], dtype: DType? = nil, device: Device? = nil) throws {
        guard shape == expected else {
            throw VkAttnError.shapeMismatch(op: op, operand: operand, expected: "\(expected)", actual: "\(shape)")
        }
        if let dtype, dtype != self.dtype {
            throw VkAttnError.dtypeMismatch(op: op, operand: operand, expected: dtype.rawValue, actual: self.dtype.rawValue)
        }
        if let device, device !== self.device {
            throw VkAttnError.deviceMismatch(op: op, operand: operand)
        }
    }

    /// Throws unless the tensor can be bound to a kernel whole (maxStorageBufferRange).
    /// - Parameters:
    ///   - op: The op's name, for the error.
    ///   - operand: The operand's name, for the error.
    /// - Throws: ``VkAttnError/tooLarge(op:operand:bytes:limit:)`` past the device's
    ///   maxStorageBufferRange.
    public func expectBindable(op: String, _ operand: String) throws {
        let limit = device.capabilities.maxStorageBufferRange
        guard byteCount <= limit else {
            throw VkAttnError.tooLarge(op: op, operand: operand, bytes: byteCount, limit: limit)
        }
    }

    /// The tensor's values as Float (f16 widened, i32/u32 converted).
    /// Call after the work that wrote the tensor has completed (`Stream.synchronize()`).
    /// - Returns: The elements in row-major order (f16 and bf16 widened exactly, integers converted).
    /// - Throws: The errors of `Buffer.read`.
    public func readFloats() throws -> [Float] {
        switch dtype {
        case .f32: return try buffer.read(Float.self, count: elementCount, at: slice.offset)
        case .f16: return try buffer.read(Float16.self, count: elementCount, at: slice.offset).map { Float($0) }
        case .bf16: return try buffer.read(UInt16.self, count: elementCount, at: slice.offset).map(BFloat16.float)
        case .i32: return try buffer.read(Int32.self, count: elementCount, at: slice.offset).map { Float($0) }
        case .u32: return try buffer.read(UInt32.self, count: elementCount, at: slice.offset).map { Float($0) }
        case .i8: return try buffer.read(Int8.self, count: elementCount, at: slice.offset).map { Float($0) }
        }
    }

    static func notInteger(_ index: Int, _ value: Float, _ dtype: DType) -> VkAttnError {
        .invalidValue(op: "Tensor.write", operand: "values", reason: "element \(index) = \(value) is not a \(dtype) (integer tensors take whole numbers in range)")
    }

    /// Overwrites the tensor with `values` (converted to its dtype).
    /// - Parameter values: One value per element, in row-major order (rounded to nearest for f16
    ///   and bf16; whole numbers in range for the integer types).
    /// - Throws: ``VkAttnError/shapeMismatch(op:operand:expected:actual:)`` for a wrong count,
    ///   ``VkAttnError/invalidValue(op:operand:reason:)`` for a value an integer tensor cannot
    ///   hold (a fraction, NaN, infinity or out of range); the errors of `Buffer.write`.
    public func write(floats values: [Float]) throws {
        guard values.count == elementCount else {
            throw VkAttnError.shapeMismatch(op: "Tensor.write", operand: "values", expected: "\(elementCount) elements", actual: "\(values.count)")
        }
        switch dtype {
        case .f32: try buffer.write(values, at: slice.offset)
        case .f16: try buffer.write(values.map(Float16.init), at: slice.offset)
        case .bf16: try buffer.write(values.map(BFloat16.bits), at: slice.offset)
        case .i32: try buffer.write(try values.enumerated().map { i, x in
            guard let v = Int32(exactly: x) else { throw Self.notInteger(i, x, .i32) }
            return v
        }, at: slice.offset)
        case .u32: try buffer.write(try values.enumerated().map { i, x in
            guard let v = UInt32(exactly: x) else { throw Self.notInteger(i, x, .u32) }
            return v
        }, at: slice.offset)
        case .i8: try buffer.write(try values.enumerated().map { i, x in
            guard let v = Int8(exactly: x) else { throw Self.notInteger(i, x, .i8) }
            return v
        }, at: slice.offset)
        }
    }
}

/// Making tensors.
extension Device {
    /// A new tensor (contents undefined).
    /// - Parameters:
    ///   - shape: The dimensions; any may be zero: an empty tensor (0 elements, 0 bytes, over
    ///     an empty buffer that can still be bound), which every op takes and records nothing for.
    ///   - dtype: The element type.
    /// - Returns: A tensor over a new device-local buffer of its exact size (for i8, rounded up
    ///   to whole 32-bit words, which is how kernels read it).
    /// - Throws: ``VkAttnError/invalidValue(op:operand:reason:)`` for a negative dimension or an
    ///   overflowing size; the errors of `Device.makeBuffer`.
    public func makeTensor(shape: [Int], dtype: DType) throws -> Tensor {
        let count = try Tensor.elementCount(shape)
        var bytes = try Checked.product(op: "makeTensor", operand: "shape", count, dtype.byteSize)
        if dtype == .i8 { bytes = (bytes + 3) / 4 * 4 }
        let buffer = try makeBuffer(byteCount: bytes)
        return try Tensor(buffer, shape: shape, dtype: dtype)
    }

    /// A new tensor holding `values` converted to `dtype`.
    /// - Parameters:
    ///   - values: One value per element, row-major.
    ///   - shape: The dimensions.
    ///   - dtype: The element type the values are converted to.
    /// - Returns: The tensor, written and ready to use.
    /// - Throws: The errors of ``makeTensor(shape:dtype:)`` and ``Tensor/write(floats:)``.
    public func makeTensor(_ values: [Float], shape: [Int], dtype: DType = .f32) throws -> Tensor {
        let tensor = try makeTensor(shape: shape, dtype: dtype)
        try tensor.write(floats: values)
        return tensor
    }
}
