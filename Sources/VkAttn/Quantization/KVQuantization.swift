import VulkanCompute
import VkAttnShaders

/// Int8 quantization of a K/V cache with per-block scales: `quantize` writes the layout of
/// ``QuantizedTensor``, `dequantize` reads it back to floats.
///
/// The rule (symmetric, per block of ``blockSize`` elements along the last dimension):
/// - `scale = max |x| / 127` over the block, correctly rounded to fp32; `0` for a block of zeros;
/// - `q = clamp(round(x / scale), -127, 127)`, rounding the exact quotient to the nearest
///   integer with ties away from zero; `q = 0` where the scale is 0;
/// - dequantized: `Float(q) * scale` (one rounding), then rounded to the output type.
///
/// So `|x - Float(q) * scale| <= scale / 2` for every finite element (up to the product's own
/// rounding), and the block's largest magnitude maps to ±127.
///
/// Non-finite inputs: a block holding a NaN gets a NaN scale, else a block holding an infinity
/// gets `+inf`; every value of such a block is 0, and the whole block dequantizes to NaN
/// (`0 * NaN`, `0 * inf`). The other blocks of the row are unaffected.
///
/// The device follows the rule exactly (its divisions are corrected with exact residuals), so
/// its values and scales equal `QuantizationReference`'s bit for bit, for every input type
/// (f16 and bf16 are widened exactly). One caveat: the correction splits the scale into 12-bit
/// halves, whose low half is subnormal for scales below about 2^-102 (blocks whose max |x| is
/// below about 2.5e-29); devices that flush subnormals (Mesa 26's lavapipe does) may then
/// differ from the reference by one level or one ulp of the scale.
///
/// Both ops record into a stream like the other ops (inputs checked before anything is
/// recorded; zero-sized inputs record nothing), and separate their own passes with barriers;
/// separate them from the work that reads their outputs with `Stream.barrier()`.
public enum KVQuantization {
    /// Elements per scale along the last dimension: 32.
    public static let blockSize = 32
    /// The largest magnitude of a quantized value: 127 (values lie in -127...127; -128 is unused).
    public static let maxLevel = 127
    /// The op name in `quantize`'s errors.
    public static let quantizeOpName = "quantize.int8"
    /// The op name in `dequantize`'s errors.
    public static let dequantizeOpName = "dequantize.int8"

    /// The shape of the scales of a tensor of logical shape `shape`: the last dimension `D`
    /// replaced by `ceil(D / 32)` (`[]` for `[]`).
    /// - Parameter shape: The logical shape `[..., D]`.
    /// - Returns: `[..., ceil(D / 32)]`.
    public static func scalesShape(for shape: [Int]) -> [Int] {
        guard let d = shape.last else { return [] }
        return shape.dropLast() + [d <= 0 ? d : (d - 1) / blockSize + 1]
    }

    /// Records the quantization of `x` into `stream` (three commands: the scales pass, a
    /// barrier, the values pass; plus a barrier and a copy of the last partial 32-bit word
    /// when the element count is not a multiple of 4).
    /// - Parameters:
    ///   - x: The tensor `[..., D]`, D >= 1, `.f32`, `.f16` or `.bf16`; any other dimension may be 0
    ///     (nothing is recorded then).
    ///   - into: Where to write (shape `x.shape`, on the stream's device); nil allocates it.
    ///   - stream: The stream to record into; its device owns every tensor.
    /// - Returns: The quantized tensor written (`into`, or the new one).
    /// - Throws: Before recording anything, as ``VkAttnError`` with op `quantize.int8`:
    ///   ``VkAttnError/dtypeMismatch(op:operand:expected:actual:)`` for `x` of another type,
    ///   ``VkAttnError/shapeMismatch(op:operand:expected:actual:)`` for `x` with no dimension or
    ///   D = 0, or `into` of another shape, ``VkAttnError/deviceMismatch(op:operand:)`` for a
    ///   tensor on another device, ``VkAttnError/unsupported(op:reason:)`` for 16-bit inputs on a
    ///   device without `storageBuffer16BitAccess`, ``VkAttnError/invalidValue(op:operand:reason:)``
    ///   for a tensor whose byte offset is not a multiple of 4 and of
    ///   `minStorageBufferOffsetAlignment` or an output that overlaps an input, ``VkAttnError/tooLarge(op:operand:bytes:limit:)`` for
    ///   one past `maxStorageBufferRange`, ``VkAttnError/unsupported(op:reason:)`` for a grid past
    ///   the device's `maxWorkgroupCount`; the errors of
    ///   `Device.makeBuffer`, `Device.kernel` and `Stream`'s recording methods.
    @discardableResult
    public static func quantize(_ x: Tensor, into: QuantizedTensor? = nil, on stream: Stream) throws -> QuantizedTensor {
        let op = quantizeOpName
        let device = stream.device
        guard x.dtype == .f32 || x.dtype.isHalfWidth else {
            throw VkAttnError.dtypeMismatch(op: op, operand: "x", expected: "f32, f16 or bf16", actual: x.dtype.rawValue)
        }
        guard (x.shape.last ?? 0) >= 1 else {
            throw VkAttnError.shapeMismatch(op: op, operand: "x", expected: "[..., D] with D >= 1", actual: "\(x.shape)")
        }
        guard x.device === device else { throw VkAttnError.deviceMismatch(op: op, operand: "x") }
        try requireSixteenBit(x.dtype, op: op, operand: "x", device: device)
        if let into {
            guard into.shape == x.shape else {
                throw VkAttnError.shapeMismatch(op: op, operand: "into", expected: "\(x.shape)", actual: "\(into.shape)")
            }
            guard into.device === device else { throw VkAttnError.deviceMismatch(op: op, operand: "into") }
        }
        let geometry = try Geometry(op: op, shape: x.shape, device: device)
        if !x.isEmpty {
            try expectUsable(op: op, "x", x)
            if let into {
                try expectUsable(op: op, "into.values", into.values)
                try expectUsable(op: op, "into.scales", into.scales)
                try expectDisjoint(op: op, ("into.values", into.values), ("x", x))
                try expectDisjoint(op: op, ("into.scales", into.scales), ("x", x))
            } else {
                try expectBindable(op: op, "values", bytes: geometry.count, device: device)
                try expectBindable(op: op, "scales", bytes: geometry.blocks * 4, device: device)
            }
        }
        let q = try into ?? device.makeQuantizedTensor(shape: x.shape)
        guard !x.isEmpty else { return q }  // nothing to write: no kernel

        let shader: ShaderSource
        switch x.dtype {
        case .f16: shader = Shaders.memoryQuantizeF16
        case .bf16: shader = Shaders.memoryQuantizeBf16
        default: shader = Shaders.memoryQuantizeF32
        }
        let scalesKernel = try device.kernel(KernelDescriptor(
            shader: shader, bindings: 4, specialization: ["local_size_x": .int(geometry.workgroupSize), "PASS": .u32(0)]))
        let valuesKernel = try device.kernel(KernelDescriptor(
            shader: shader, bindings: 4, specialization: ["local_size_x": .int(geometry.workgroupSize), "PASS": .u32(1)]))
        let (main, tailRange) = try geometry.split(q.values)
        // The partial last word is written to a one-word scratch buffer and copied from there
        // byte-wise: the words past the tensor's end may belong to something else, or not exist.
        let scratch = try tailRange.map { _ in try device.makeBuffer(byteCount: 4).whole }
        let bindings = [x.slice, q.scales.slice, main, scratch ?? main]
        try stream.dispatch(scalesKernel, bindings: bindings, push: geometry.push(items: geometry.blocks), groups: geometry.blockGroups)
        try stream.barrier()
        try stream.dispatch(valuesKernel, bindings: bindings, push: geometry.push(items: geometry.words), groups: geometry.wordGroups)
        if let scratch, let tailRange {
            try stream.barrier()
            try stream.copy(from: scratch.buffer.slice(offset: 0, byteCount: tailRange.byteCount), to: tailRange)
        }
        return q
    }

    /// Records the dequantization of `q` into `stream`: `Float(value) * scale` per element,
    /// rounded to `dtype` (f16 by the device's conversion, bf16 to nearest even).
    /// - Parameters:
    ///   - q: The quantized tensor; zero-sized records nothing.
    ///   - dtype: The output type: `.f32` (exact), `.f16` or `.bf16`.
    ///   - into: Where to write: shape `q.shape`, type `dtype`, on the stream's device; nil
    ///     allocates it.
    ///   - stream: The stream to record into; its device owns every tensor.
    /// - Returns: The tensor written (`into`, or the new one), shape `q.shape`.
    /// - Throws: Before recording anything, as ``VkAttnError`` with op `dequantize.int8`:
    ///   ``VkAttnError/dtypeMismatch(op:operand:expected:actual:)`` for a `dtype` other than
    ///   f32, f16, bf16 or `into` of another type, ``VkAttnError/shapeMismatch(op:operand:expected:actual:)``
    ///   for `into` of another shape, ``VkAttnError/deviceMismatch(op:operand:)`` for a tensor on
    ///   another device, ``VkAttnError/unsupported(op:reason:)`` for 16-bit outputs on a device
    ///   without `storageBuffer16BitAccess`, ``VkAttnError/invalidValue(op:operand:reason:)``
    ///   for a tensor whose byte offset is not a multiple of 4 and of
    ///   `minStorageBufferOffsetAlignment` or an output that overlaps an input, ``VkAttnError/tooLarge(op:operand:bytes:limit:)`` for
    ///   one past `maxStorageBufferRange`, ``VkAttnError/unsupported(op:reason:)`` for a grid past
    ///   the device's `maxWorkgroupCount`; the errors of
    ///   `Device.makeBuffer`, `Device.kernel` and `Stream`'s recording methods.
    @discardableResult
    public static func dequantize(_ q: QuantizedTensor, dtype: DType = .f32, into: Tensor? = nil, on stream: Stream) throws -> Tensor {
        let op = dequantizeOpName
        let device = stream.device
        guard dtype == .f32 || dtype.isHalfWidth else {
            throw VkAttnError.dtypeMismatch(op: op, operand: "dtype", expected: "f32, f16 or bf16", actual: dtype.rawValue)
        }
        guard q.device === device else { throw VkAttnError.deviceMismatch(op: op, operand: "q") }
        try requireSixteenBit(dtype, op: op, operand: "output", device: device)
        if let into { try into.expect(op: op, "into", shape: q.shape, dtype: dtype, device: device) }
        let geometry = try Geometry(op: op, shape: q.shape, device: device)
        if !q.isEmpty {
            try expectUsable(op: op, "q.values", q.values)
            try expectUsable(op: op, "q.scales", q.scales)
            if let into {
                try expectUsable(op: op, "into", into)
                try expectDisjoint(op: op, ("into", into), ("q.values", q.values))
                try expectDisjoint(op: op, ("into", into), ("q.scales", q.scales))
            } else {
                try expectBindable(op: op, "output", bytes: geometry.count * dtype.byteSize, device: device)
            }
        }
        let out = try into ?? device.makeTensor(shape: q.shape, dtype: dtype)
        guard !q.isEmpty else { return out }  // nothing to read: no kernel

        let shader: ShaderSource
        switch dtype {
        case .f16: shader = Shaders.memoryDequantizeF16
        case .bf16: shader = Shaders.memoryDequantizeBf16
        default: shader = Shaders.memoryDequantizeF32
        }
        let kernel = try device.kernel(KernelDescriptor(
            shader: shader, bindings: 4, specialization: ["local_size_x": .int(geometry.workgroupSize)]))
        let (main, tailRange) = try geometry.split(q.values)
        // The partial last word is copied byte-wise into a one-word scratch buffer first: the
        // kernel reads whole words, and the bytes past the tensor's end may not exist.
        var scratch: BufferSlice?
        if let tailRange {
            let word = try device.makeBuffer(byteCount: 4)
            try stream.copy(from: tailRange, to: word.slice(offset: 0, byteCount: tailRange.byteCount))
            try stream.barrier()
            scratch = word.whole
        }
        try stream.dispatch(kernel, bindings: [main, scratch ?? main, q.scales.slice, out.slice],
                            push: geometry.push(items: geometry.words), groups: geometry.wordGroups)
        return out
    }

    // MARK: Internals

    /// Throws unless `dtype`, when 16-bit, can be stored on `device`.
    static func requireSixteenBit(_ dtype: DType, op: String, operand: String, device: Device) throws {
        if dtype.isHalfWidth && !device.enabled.storageBuffer16BitAccess {
            throw VkAttnError.unsupported(op: op, reason: "\(dtype) \(operand) needs storageBuffer16BitAccess, which \(device.label) lacks")
        }
    }

    /// The byte alignment every bound tensor must start at: 4 (the kernels address words) and
    /// the device's `minStorageBufferOffsetAlignment`.
    package static func alignment(_ device: Device) -> Int {
        max(4, device.capabilities.minStorageBufferOffsetAlignment)  // powers of two: the larger is a multiple of both
    }

    /// Throws unless `tensor` can be bound whole and starts where a binding may.
    static func expectUsable(op: String, _ operand: String, _ tensor: Tensor) throws {
        try tensor.expectBindable(op: op, operand)
        let a = alignment(tensor.device)
        guard tensor.slice.offset % a == 0 else {
            throw VkAttnError.invalidValue(op: op, operand: operand, reason: "byte offset \(tensor.slice.offset) is not a multiple of \(a) (4 and minStorageBufferOffsetAlignment)")
        }
    }

    /// Throws when the output `a` shares bytes with `b`.
    static func expectDisjoint(op: String, _ a: (name: String, tensor: Tensor), _ b: (name: String, tensor: Tensor)) throws {
        if overlaps(a.tensor, b.tensor) {
            throw VkAttnError.invalidValue(op: op, operand: a.name, reason: "overlaps \(b.name)")
        }
    }

    /// Whether two tensors share a byte (empty ones share none).
    static func overlaps(_ a: Tensor, _ b: Tensor) -> Bool {
        a.buffer === b.buffer && !a.isEmpty && !b.isEmpty
            && a.slice.offset < b.slice.offset + b.byteCount && b.slice.offset < a.slice.offset + a.byteCount
    }

    /// Throws when a tensor of `bytes` bytes could not be bound (maxStorageBufferRange).
    static func expectBindable(op: String, _ operand: String, bytes: Int, device: Device) throws {
        let limit = device.capabilities.maxStorageBufferRange
        guard bytes <= limit else { throw VkAttnError.tooLarge(op: op, operand: operand, bytes: bytes, limit: limit) }
    }

    /// Sizes, grids and push constants of one call, checked before anything is recorded.
    struct Geometry {
        let count: Int, width: Int, blocksPerRow: Int, blocks: Int, words: Int
        let workgroupSize: Int
        let blockGroups: (x: Int, y: Int, z: Int)
        let wordGroups: (x: Int, y: Int, z: Int)
        let base: QuantizePush

        init(op: String, shape: [Int], device: Device) throws {
            count = try Tensor.elementCount(shape)
            width = shape[shape.count - 1]
            blocksPerRow = (width - 1) / KVQuantization.blockSize + 1
            blocks = count / width * blocksPerRow
            words = (count + 3) / 4
            workgroupSize = Launch.workgroupSize(256, device: device)
            blockGroups = try Geometry.grid(op: op, items: blocks, workgroupSize: workgroupSize, device: device)
            wordGroups = try Geometry.grid(op: op, items: words, workgroupSize: workgroupSize, device: device)
            guard let c = UInt32(exactly: count), let w = UInt32(exactly: width), let b = UInt32(exactly: blocksPerRow),
                  UInt32(exactly: blocks) != nil, UInt32(exactly: words) != nil else {
                throw VkAttnError.tooLarge(op: op, operand: "x", bytes: count, limit: Int(UInt32.max))
            }
            base = QuantizePush(count: c, width: w, blocksPerRow: b, items: 0, fullWords: c / 4)
        }

        /// The push constants with `items` invocations at work (`blocks` or `words`).
        func push(items: Int) -> QuantizePush {
            var p = base
            p.items = UInt32(truncatingIfNeeded: items)  // checked in init
            return p
        }

        /// `values`' whole words (empty when there are none) and its partial last word's bytes
        /// (nil when the count is a multiple of 4).
        func split(_ values: Tensor) throws -> (main: BufferSlice, tail: BufferSlice?) {
            let full = count / 4 * 4
            let main = try values.buffer.slice(offset: values.slice.offset, byteCount: full)
            let tail = count == full ? nil : try values.buffer.slice(offset: values.slice.offset + full, byteCount: count - full)
            return (main, tail)
        }

        /// One invocation per item on a 2-D grid (the kernels number items x-major): rows of up
        /// to maxWorkgroupCount[0] workgroups.
        static func grid(op: String, items: Int, workgroupSize: Int, device: Device) throws -> (x: Int, y: Int, z: Int) {
            let needed = max(1, (items + workgroupSize - 1) / workgroupSize)
            let limits = device.capabilities.maxWorkgroupCount
            let x = min(needed, limits[0])
            let y = (needed + x - 1) / x
            guard y <= limits[1] else {
                throw VkAttnError.unsupported(op: op, reason: "\(items) invocations need more workgroups than maxWorkgroupCount \(limits) allows")
            }
            return (x, y, 1)
        }
    }
}

/// Shaders/common/int8.glsl, the push constants of quantize.comp and dequantize.comp.
struct QuantizePush: PushConstantBlock {
    var count: UInt32
    var width: UInt32
    var blocksPerRow: UInt32
    var items: UInt32
    var fullWords: UInt32
}
