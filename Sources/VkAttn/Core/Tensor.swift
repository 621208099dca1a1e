import VulkanCompute

/// Element types of tensors.
public enum DType: String, Sendable, Hashable, Codable, CaseIterable, CustomStringConvertible {
    /// IEEE float32, float16, bfloat16 (the upper half of a float32), and 32-bit integers.
    case f32, f16, bf16, i32, u32

    public var byteSize: Int {
        switch self {
        case .f32, .i32, .u32: return 4
        case .f16, .bf16: return 2
        }
    }

    /// f16 or bf16: the 16-bit floating-point storage types.
    public var isHalfWidth: Bool { self == .f16 || self == .bf16 }

    /// `value` rounded to this type and back (identity for f32; integers truncate).
    public func rounded(_ value: Float) -> Float {
        switch self {
        case .f32: return value
        case .f16: return Float(Float16(value))
        case .bf16: return BFloat16.rounded(value)
        case .i32: return Float(Int32(value))
        case .u32: return Float(UInt32(value))
        }
    }

    public var description: String { rawValue }
}

/// A dense tensor: a byte range of a device buffer, a row-major shape (last dimension
/// contiguous) and an element type. Ops take and return tensors; they check shapes, types and
/// devices at their entry point and throw `VkAttnError` naming the op and the operand.
public struct Tensor: Sendable {
    public let slice: BufferSlice
    public let shape: [Int]
    public let dtype: DType

    /// Views `buffer` (from `byteOffset`) as a tensor; throws when the shape does not fit.
    public init(_ buffer: Buffer, shape: [Int], dtype: DType, byteOffset: Int = 0) throws {
        let count = try Tensor.elementCount(shape)
        let bytes = try byteSize(count, of: UInt8.self) * dtype.byteSize
        guard bytes > 0 else {
            throw VkAttnError.invalidValue(op: "Tensor", operand: "shape", reason: "\(shape) has no elements")
        }
        self.slice = try buffer.slice(offset: byteOffset, byteCount: bytes)
        self.shape = shape
        self.dtype = dtype
    }

    public var device: Device { slice.buffer.device }
    public var buffer: Buffer { slice.buffer }
    public var elementCount: Int { shape.reduce(1, *) }
    public var byteCount: Int { slice.byteCount }

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
    public func expectBindable(op: String, _ operand: String) throws {
        let limit = device.capabilities.maxStorageBufferRange
        guard byteCount <= limit else {
            throw VkAttnError.tooLarge(op: op, operand: operand, bytes: byteCount, limit: limit)
        }
    }

    /// The tensor's values as Float (f16 widened, i32/u32 converted).
    public func readFloats() throws -> [Float] {
        switch dtype {
        case .f32: return try buffer.read(Float.self, count: elementCount, at: slice.offset)
        case .f16: return try buffer.read(Float16.self, count: elementCount, at: slice.offset).map { Float($0) }
        case .bf16: return try buffer.read(UInt16.self, count: elementCount, at: slice.offset).map(BFloat16.float)
        case .i32: return try buffer.read(Int32.self, count: elementCount, at: slice.offset).map { Float($0) }
        case .u32: return try buffer.read(UInt32.self, count: elementCount, at: slice.offset).map { Float($0) }
        }
    }

    /// Overwrites the tensor with `values` (converted to its dtype).
    public func write(floats values: [Float]) throws {
        guard values.count == elementCount else {
            throw VkAttnError.shapeMismatch(op: "Tensor.write", operand: "values", expected: "\(elementCount) elements", actual: "\(values.count)")
        }
        switch dtype {
        case .f32: try buffer.write(values, at: slice.offset)
        case .f16: try buffer.write(values.map(Float16.init), at: slice.offset)
        case .bf16: try buffer.write(values.map(BFloat16.bits), at: slice.offset)
        case .i32: try buffer.write(values.map { Int32($0) }, at: slice.offset)
        case .u32: try buffer.write(values.map { UInt32($0) }, at: slice.offset)
        }
    }
}

extension Device {
    /// A new tensor (contents undefined).
    public func makeTensor(shape: [Int], dtype: DType) throws -> Tensor {
        let count = try Tensor.elementCount(shape)
        guard count > 0 else {
            throw VkAttnError.invalidValue(op: "makeTensor", operand: "shape", reason: "\(shape) has no elements")
        }
        let buffer = try makeBuffer(byteCount: try byteSize(count, of: UInt8.self) * dtype.byteSize)
        return try Tensor(buffer, shape: shape, dtype: dtype)
    }

    /// A new tensor holding `values` converted to `dtype`.
    public func makeTensor(_ values: [Float], shape: [Int], dtype: DType = .f32) throws -> Tensor {
        let tensor = try makeTensor(shape: shape, dtype: dtype)
        try tensor.write(floats: values)
        return tensor
    }
}
