import Testing
import VkAttn
import TestSupport

/// Runs `KVQuantization` on the device into guarded, poisoned buffers and compares with
/// `QuantizationReference`: values and scales bit for bit, dequantized values exactly.
struct QuantizationHarness {
    let device: Device
    let seed: UInt64
    var rng: SeededRandom

    init(device: Device, seed: UInt64) {
        self.device = device
        self.seed = seed
        self.rng = SeededRandom(seed: seed)
    }

    /// Bytes of poison before and after every output (a multiple of any storage-buffer offset
    /// alignment, so the tensor between them can be bound).
    static let guardBytes = 256

    /// A tensor between two guards, its buffer filled with the byte `poison`.
    func poisoned(shape: [Int], dtype: DType, poison: UInt8) throws -> Tensor {
        let bytes = shape.reduce(1, *) * dtype.byteSize
        let buffer = try device.makeBuffer([UInt8](repeating: poison, count: bytes + 2 * Self.guardBytes))
        return try Tensor(buffer, shape: shape, dtype: dtype, byteOffset: Self.guardBytes)
    }

    /// Records a failure when a byte of the guards around `tensor` changed.
    func expectGuards(_ tensor: Tensor, poison: UInt8, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let all = try tensor.buffer.read(UInt8.self, count: tensor.buffer.byteCount)
        let end = Self.guardBytes + tensor.byteCount
        #expect(all[..<Self.guardBytes].allSatisfy { $0 == poison }, "\(what): wrote before the tensor, seed \(seed)", sourceLocation: sourceLocation)
        #expect(all[end...].allSatisfy { $0 == poison }, "\(what): wrote after the tensor, seed \(seed)", sourceLocation: sourceLocation)
    }

    /// Values of wide dynamic range, block by block: each block of 32 has its own exponent in
    /// `exponents`; some blocks are all zero, some hold exact ties (max 127 * 2^e, so the scale
    /// is 2^e and (k + 0.5) * 2^e lies halfway) and their neighbours one ulp away.
    mutating func blockyFloats(_ count: Int, rowWidth: Int, exponents: ClosedRange<Int>, dtype: DType) -> [Float] {
        var x = [Float](repeating: 0, count: count)
        var i = 0
        while i < count {
            let col = i % rowWidth
            let len = min(32 - col % 32, rowWidth - col, count - i)
            let e = Int.random(in: exponents, using: &rng)
            let scale = Float(sign: .plus, exponent: e, significand: 1)
            switch Int.random(in: 0..<8, using: &rng) {
            case 0:
                break  // all zeros
            case 1:
                for j in 0..<len {
                    let k = Float(Int.random(in: -126...126, using: &rng))
                    var v = (k + (k < 0 ? -0.5 : 0.5)) * scale
                    switch Int.random(in: 0..<3, using: &rng) {
                    case 0: v = v.nextUp
                    case 1: v = v.nextDown
                    default: break
                    }
                    x[i + j] = v
                }
                x[i] = Bool.random(using: &rng) ? 127 * scale : -127 * scale
            default:
                for j in 0..<len { x[i + j] = Float.random(in: -1...1, using: &rng) * scale }
            }
            i += len
        }
        return x.map { dtype.rounded($0) }
    }

    /// Quantizes `x` (shape `shape`, as `dtype`) on the device into poisoned storage and checks
    /// values and scales against the reference, bit for bit.
    mutating func checkQuantize(_ x: [Float], shape: [Int], dtype: DType, _ what: String) throws {
        let input = try device.makeTensor(x, shape: shape, dtype: dtype)
        let values = try poisoned(shape: shape, dtype: .i8, poison: 0x80)  // -128: never produced
        let scales = try poisoned(shape: KVQuantization.scalesShape(for: shape), dtype: .f32, poison: 0xFF)  // NaN
        let q = try QuantizedTensor(values: values, scales: scales)
        let stream = try device.makeStream()
        let written = try KVQuantization.quantize(input, into: q, on: stream)
        try stream.synchronize()
        #expect(written.values.buffer === values.buffer && written.scales.buffer === scales.buffer)
        let ref = QuantizationReference.quantize(x, rowWidth: shape[shape.count - 1])
        let gotValues = try values.readFloats()
        let gotScales = try scales.readFloats()
        let badValue = gotValues.indices.first { gotValues[$0] != Float(ref.values[$0]) }
        #expect(badValue == nil, "\(what): value \(badValue ?? 0) is \(badValue.map { gotValues[$0] } ?? 0), reference \(badValue.map { ref.values[$0] } ?? 0) (x \(badValue.map { x[$0] } ?? 0)), seed \(seed)")
        let badScale = gotScales.indices.first { !(gotScales[$0].bitPattern == ref.scales[$0].bitPattern || (gotScales[$0].isNaN && ref.scales[$0].isNaN)) }
        #expect(badScale == nil, "\(what): scale \(badScale ?? 0) is \(badScale.map { gotScales[$0] } ?? 0), reference \(badScale.map { ref.scales[$0] } ?? 0), seed \(seed)")
        try expectGuards(values, poison: 0x80, "\(what) values")
        try expectGuards(scales, poison: 0xFF, "\(what) scales")
    }
}

@Suite("Int8 K/V quantization")
struct KVQuantizationTests {
    static let widths = [1, 3, 32, 33, 59, 128, 576]
    static let rowCounts = [1, 2, 5, 7]

    @Test func layoutShapes() {
        #expect(KVQuantization.blockSize == 32)
        #expect(KVQuantization.scalesShape(for: [5, 1]) == [5, 1])
        #expect(KVQuantization.scalesShape(for: [5, 32]) == [5, 1])
        #expect(KVQuantization.scalesShape(for: [5, 33]) == [5, 2])
        #expect(KVQuantization.scalesShape(for: [2, 7, 3, 576]) == [2, 7, 3, 18])
        #expect(KVQuantization.scalesShape(for: [0, 4, 59]) == [0, 4, 2])
        #expect(KVQuantization.scalesShape(for: []) == [])
    }

    @Test(arguments: [DType.f32, .f16, .bf16])
    func quantizeMatchesReferenceBitForBit(dtype: DType) throws {
        let seed = testSeed()
        try withDevice { device in
            if dtype.isHalfWidth && !device.enabled.storageBuffer16BitAccess { return }
            var h = QuantizationHarness(device: device, seed: seed)
            // f16 holds 2^-14...2^15 as normal numbers; f32 and bf16 go far wider.
            let exponents = dtype == .f16 ? -14...8 : -60...60
            for d in Self.widths {
                for rows in Self.rowCounts {
                    let x = h.blockyFloats(rows * d, rowWidth: d, exponents: exponents, dtype: dtype)
                    try h.checkQuantize(x, shape: [rows, d], dtype: dtype, "\(dtype) [\(rows), \(d)]")
                }
                let x = h.blockyFloats(2 * 3 * d, rowWidth: d, exponents: exponents, dtype: dtype)
                try h.checkQuantize(x, shape: [2, 3, d], dtype: dtype, "\(dtype) [2, 3, \(d)]")
            }
        }
    }

    /// Scales are correctly rounded quotients by 127 for maxima of every exponent and random
    /// significands (the device corrects its division), and values are nearest even when the
    /// device's own quotient is not.
    @Test func scalesAreCorrectlyRoundedAcrossTheRange() throws {
        let seed = testSeed()
        try withDevice { device in
            var h = QuantizationHarness(device: device, seed: seed)
            let d = 32
            var x: [Float] = []
            for e in -94...127 {  // above the documented subnormal limit (max |x| ~2.5e-29): Mesa 26 flushes subnormals
                for _ in 0..<4 {
                    let m = Float(sign: .plus, exponent: e, significand: Float.random(in: 1..<2, using: &h.rng))
                    var block = (0..<d).map { _ in Float.random(in: -1...1, using: &h.rng) * m }
                    block[Int.random(in: 0..<d, using: &h.rng)] = Bool.random(using: &h.rng) ? m : -m
                    x += block
                }
            }
            x += [Float](repeating: .greatestFiniteMagnitude, count: d)
            x += (0..<d).map { $0 % 2 == 0 ? -Float.greatestFiniteMagnitude : Float.greatestFiniteMagnitude.nextDown }
            try h.checkQuantize(x, shape: [x.count / d, d], dtype: .f32, "exponents -94...127")
        }
    }

    @Test(arguments: [DType.f32, .f16, .bf16])
    func dequantizeMatchesReference(dtype: DType) throws {
        let seed = testSeed()
        try withDevice { device in
            if dtype.isHalfWidth && !device.enabled.storageBuffer16BitAccess { return }
            var h = QuantizationHarness(device: device, seed: seed)
            for d in Self.widths {
                for shape in [[5, d], [7, 2, d], [1, d]] {
                    let count = shape.reduce(1, *)
                    let values = (0..<count).map { _ in Int8.random(in: -127...127, using: &h.rng) }
                    let scalesShape = KVQuantization.scalesShape(for: shape)
                    let range = dtype == .f16 ? -20...8 : -60...60
                    let scales = (0..<scalesShape.reduce(1, *)).map { i -> Float in
                        i % 11 == 3 ? 0 : Float(sign: .plus, exponent: Int.random(in: range, using: &h.rng),
                                                significand: Float.random(in: 1..<2, using: &h.rng))
                    }
                    // Inputs inside larger buffers too (bound from an offset; the last partial word of
                    // the values read through the scratch word, not past the tensor).
                    let valuesTensor = try h.poisoned(shape: shape, dtype: .i8, poison: 0x80)
                    try valuesTensor.write(floats: values.map(Float.init))
                    let scalesTensor = try h.poisoned(shape: scalesShape, dtype: .f32, poison: 0xFF)
                    try scalesTensor.write(floats: scales)
                    let q = try QuantizedTensor(values: valuesTensor, scales: scalesTensor)
                    let out = try h.poisoned(shape: shape, dtype: dtype, poison: 0xFF)  // NaN in every type
                    let stream = try device.makeStream()
                    let written = try KVQuantization.dequantize(q, dtype: dtype, into: out, on: stream)
                    try stream.synchronize()
                    #expect(written.buffer === out.buffer && written.slice.offset == out.slice.offset)
                    let got = try out.readFloats()
                    let exact = QuantizationReference.dequantize(values: values, scales: scales, rowWidth: d)
                    let bad = got.indices.first { i in
                        let r = dtype.rounded(exact[i])
                        if got[i] == r { return false }
                        // f32 -> f16 conversions round to nearest even or toward zero (Vulkan leaves
                        // the mode to the device): accept the value truncated too.
                        return !(dtype == .f16 && got[i] == Self.f16TowardZero(exact[i]))
                    }
                    #expect(bad == nil, "\(dtype) \(shape): element \(bad ?? 0) is \(bad.map { got[$0] } ?? 0), reference \(bad.map { exact[$0] } ?? 0), seed \(seed)")
                    try h.expectGuards(out, poison: 0xFF, "\(dtype) \(shape)")
                }
            }
        }
    }

    static func f16TowardZero(_ x: Float) -> Float {
        let r = Float(Float16(x))
        return abs(r) > abs(x) ? Float(x < 0 ? Float16(x).nextUp : Float16(x).nextDown) : r
    }

    /// quantize then dequantize (both on the device, new tensors): every element within half
    /// its block's scale (plus the product's rounding), and each block's largest magnitude at ±127.
    @Test func roundTripErrorIsAtMostHalfAScale() throws {
        let seed = testSeed()
        try withDevice { device in
            var h = QuantizationHarness(device: device, seed: seed)
            for d in Self.widths {
                let shape = [3, 5, d]
                let x = h.blockyFloats(shape.reduce(1, *), rowWidth: d, exponents: -30...30, dtype: .f32)
                let input = try device.makeTensor(x, shape: shape, dtype: .f32)
                let stream = try device.makeStream()
                let q = try KVQuantization.quantize(input, on: stream)
                try stream.barrier()
                let y = try KVQuantization.dequantize(q, on: stream)
                try stream.synchronize()
                #expect(q.shape == shape && q.scales.shape == KVQuantization.scalesShape(for: shape) && y.shape == shape && y.dtype == .f32)
                let got = try y.readFloats()
                let scales = try q.scales.readFloats()
                let values = try q.values.readFloats()
                let blocksPerRow = q.blocksPerRow
                for i in x.indices {
                    let s = Double(scales[i / d * blocksPerRow + i % d / 32])
                    let err = abs(Double(x[i]) - Double(got[i]))
                    #expect(err <= s / 2 + 127 * s * 0x1p-24, "D \(d) element \(i): x \(x[i]), got \(got[i]), scale \(s), seed \(seed)")
                }
                for (b, s) in scales.enumerated() where s > 0 {
                    let row = b / blocksPerRow, c = b % blocksPerRow
                    let block = (row * d + c * 32)..<(row * d + min(c * 32 + 32, d))
                    #expect(block.contains { abs(values[$0]) == 127 }, "D \(d) block \(b): no value at ±127, seed \(seed)")
                    #expect(block.allSatisfy { abs(values[$0]) <= 127 })
                }
            }
        }
    }

    /// The example of the Memory article (VkAttn.docc), as written there, with k filled.
    @Test func articleExampleRuns() throws {
        let seed = testSeed()
        try withDevice { device in
            guard device.enabled.storageBuffer16BitAccess else { return }
            var rng = SeededRandom(seed: seed)
            let stream = try device.makeStream()
            let k = try device.makeTensor(shape: [4096, 8, 128], dtype: .f16)   // [tokens, Hkv, D]
            let x = rng.floats(k.elementCount, in: -4...4).map { DType.f16.rounded($0) }
            try k.write(floats: x)
            let cache = try device.makeQuantizedTensor(shape: k.shape)          // scales [4096, 8, 4]
            #expect(cache.scales.shape == [4096, 8, 4])
            try KVQuantization.quantize(k, into: cache, on: stream)
            try stream.barrier()
            let restored = try KVQuantization.dequantize(cache, dtype: .f16, on: stream)
            try stream.synchronize()
            let got = try restored.readFloats()
            let scales = try cache.scales.readFloats()
            // Half a scale, plus the f16 rounding of the result (half an f16 ulp of at most 4).
            let bad = x.indices.first { abs(got[$0] - x[$0]) > scales[$0 / 32] / 2 + 0x1p-9 }
            #expect(bad == nil, "element \(bad ?? 0): \(bad.map { x[$0] } ?? 0) came back as \(bad.map { got[$0] } ?? 0), seed \(seed)")
        }
    }

    /// NaN and infinities poison their own block only: NaN (or +inf) scale, values 0, and the
    /// block dequantizes to NaN; the row's other blocks are quantized as usual.
    @Test func nonFiniteElementsPoisonTheirBlock() throws {
        let seed = testSeed()
        try withDevice { device in
            var h = QuantizationHarness(device: device, seed: seed)
            let d = 128
            var x = h.rng.floats(2 * d, in: -3...3)
            x[5] = .nan
            x[33] = .infinity
            x[70] = -.infinity
            x[71] = .nan
            x[128 + 100] = -.infinity
            try h.checkQuantize(x, shape: [2, d], dtype: .f32, "non-finite")
            let input = try device.makeTensor(x, shape: [2, d], dtype: .f32)
            let stream = try device.makeStream()
            let q = try KVQuantization.quantize(input, on: stream)
            try stream.barrier()
            let y = try KVQuantization.dequantize(q, on: stream)
            try stream.synchronize()
            let scales = try q.scales.readFloats()
            #expect(scales[0].isNaN && scales[1] == .infinity && scales[2].isNaN && scales[3].isFinite, "seed \(seed)")
            #expect(scales[4].isFinite && scales[5].isFinite && scales[6].isFinite && scales[7] == .infinity, "seed \(seed)")
            let values = try q.values.readFloats()
            let got = try y.readFloats()
            for i in x.indices {
                let block = i / 32
                if [0, 1, 2, 7].contains(block) {
                    #expect(values[i] == 0 && got[i].isNaN, "element \(i): value \(values[i]), dequantized \(got[i]), seed \(seed)")
                } else {
                    #expect(abs(got[i] - x[i]) <= scales[block] / 2 * 1.0001, "element \(i), seed \(seed)")
                }
            }
        }
    }

    /// Zero-sized tensors: checked, nothing recorded (no dispatch, fill or copy), outputs empty.
    @Test func zeroSizedInputsRecordNothing() throws {
        try withDevice { device in
            for shape in [[0, 64], [3, 0, 32], [0, 1], [4, 0, 59]] {
                let stream = try device.makeStream()
                let x = try device.makeTensor(shape: shape, dtype: .f32)
                let q = try KVQuantization.quantize(x, on: stream)
                #expect(q.shape == shape && q.isEmpty && q.scales.shape == KVQuantization.scalesShape(for: shape))
                let into = try device.makeQuantizedTensor(shape: shape)
                _ = try KVQuantization.quantize(x, into: into, on: stream)
                let y = try KVQuantization.dequantize(q, dtype: .f32, on: stream)
                #expect(y.shape == shape && y.isEmpty)
                _ = try KVQuantization.dequantize(into, into: try device.makeTensor(shape: shape, dtype: .f32), on: stream)
                if device.enabled.storageBuffer16BitAccess {
                    _ = try KVQuantization.quantize(try device.makeTensor(shape: shape, dtype: .bf16), on: stream)
                    _ = try KVQuantization.dequantize(q, dtype: .f16, on: stream)
                }
                // Still checked: a wrong shape is an error even when empty.
                #expect(throws: VkAttnError.shapeMismatch(op: KVQuantization.quantizeOpName, operand: "into", expected: "\(shape)", actual: "[1, 1]")) {
                    try KVQuantization.quantize(x, into: try device.makeQuantizedTensor(shape: [1, 1]), on: stream)
                }
                try stream.synchronize()
                EmptyInputTests.expectRecorded(stream, "quantization of \(shape)")
            }
        }
    }

    @Test func badOperandsAreTypedErrors() throws {
        try withDevice { device in
            let qop = KVQuantization.quantizeOpName, dop = KVQuantization.dequantizeOpName, t = QuantizedTensor.opName
            let stream = try device.makeStream()
            let x = try device.makeTensor(shape: [4, 40], dtype: .f32)
            let values = try device.makeTensor(shape: [4, 40], dtype: .i8)
            let scales = try device.makeTensor(shape: [4, 2], dtype: .f32)
            let q = try QuantizedTensor(values: values, scales: scales)
            #expect(q.rowWidth == 40 && q.blocksPerRow == 2 && q.device === device)

            // The layout.
            #expect(throws: VkAttnError.dtypeMismatch(op: t, operand: "values", expected: "i8", actual: "f32")) {
                try QuantizedTensor(values: x, scales: scales)
            }
            #expect(throws: VkAttnError.dtypeMismatch(op: t, operand: "scales", expected: "f32", actual: "f16")) {
                try QuantizedTensor(values: values, scales: try device.makeTensor(shape: [4, 2], dtype: .f16))
            }
            #expect(throws: VkAttnError.shapeMismatch(op: t, operand: "scales", expected: "[4, 2]", actual: "[4, 1]")) {
                try QuantizedTensor(values: values, scales: try device.makeTensor(shape: [4, 1], dtype: .f32))
            }
            #expect(throws: VkAttnError.shapeMismatch(op: t, operand: "values", expected: "[..., D] with D >= 1", actual: "[4, 0]")) {
                try QuantizedTensor(values: try device.makeTensor(shape: [4, 0], dtype: .i8), scales: try device.makeTensor(shape: [4, 0], dtype: .f32))
            }
            #expect(throws: VkAttnError.shapeMismatch(op: t, operand: "shape", expected: "[..., D] with D >= 1", actual: "[]")) {
                try device.makeQuantizedTensor(shape: [])
            }
            let shared = try device.makeBuffer(byteCount: 1024)
            #expect(throws: VkAttnError.invalidValue(op: t, operand: "scales", reason: "overlaps values")) {
                try QuantizedTensor(values: try Tensor(shared, shape: [4, 40], dtype: .i8),
                                    scales: try Tensor(shared, shape: [4, 2], dtype: .f32, byteOffset: 128))
            }

            // quantize.
            #expect(throws: VkAttnError.dtypeMismatch(op: qop, operand: "x", expected: "f32, f16 or bf16", actual: "i32")) {
                try KVQuantization.quantize(try device.makeTensor(shape: [4, 40], dtype: .i32), on: stream)
            }
            #expect(throws: VkAttnError.shapeMismatch(op: qop, operand: "x", expected: "[..., D] with D >= 1", actual: "[4, 0]")) {
                try KVQuantization.quantize(try device.makeTensor(shape: [4, 0], dtype: .f32), on: stream)
            }
            #expect(throws: VkAttnError.shapeMismatch(op: qop, operand: "x", expected: "[..., D] with D >= 1", actual: "[]")) {
                try KVQuantization.quantize(try device.makeTensor(shape: [], dtype: .f32), on: stream)
            }
            #expect(throws: VkAttnError.shapeMismatch(op: qop, operand: "into", expected: "[4, 40]", actual: "[4, 41]")) {
                try KVQuantization.quantize(x, into: try device.makeQuantizedTensor(shape: [4, 41]), on: stream)
            }
            let misaligned = try QuantizedTensor(values: try Tensor(shared, shape: [4, 40], dtype: .i8, byteOffset: 2),
                                                 scales: try Tensor(shared, shape: [4, 2], dtype: .f32, byteOffset: 512))
            #expect(throws: VkAttnError.invalidValue(op: qop, operand: "into.values", reason: "byte offset 2 is not a multiple of \(KVQuantization.alignment(device)) (4 and minStorageBufferOffsetAlignment)")) {
                try KVQuantization.quantize(x, into: misaligned, on: stream)
            }
            let xInShared = try Tensor(shared, shape: [4, 40], dtype: .f32, byteOffset: 256)
            let overlapping = try QuantizedTensor(values: try Tensor(shared, shape: [4, 40], dtype: .i8, byteOffset: 256),
                                                  scales: try Tensor(shared, shape: [4, 2], dtype: .f32))
            #expect(throws: VkAttnError.invalidValue(op: qop, operand: "into.values", reason: "overlaps x")) {
                try KVQuantization.quantize(xInShared, into: overlapping, on: stream)
            }

            // dequantize.
            #expect(throws: VkAttnError.dtypeMismatch(op: dop, operand: "dtype", expected: "f32, f16 or bf16", actual: "i8")) {
                try KVQuantization.dequantize(q, dtype: .i8, on: stream)
            }
            #expect(throws: VkAttnError.dtypeMismatch(op: dop, operand: "into", expected: "f32", actual: "f16")) {
                try KVQuantization.dequantize(q, into: try device.makeTensor(shape: [4, 40], dtype: .f16), on: stream)
            }
            #expect(throws: VkAttnError.shapeMismatch(op: dop, operand: "into", expected: "[4, 40]", actual: "[40, 4]")) {
                try KVQuantization.dequantize(q, into: try device.makeTensor(shape: [40, 4], dtype: .f32), on: stream)
            }
            #expect(throws: VkAttnError.invalidValue(op: dop, operand: "into", reason: "overlaps q.values")) {
                try KVQuantization.dequantize(overlapping, into: try Tensor(shared, shape: [4, 40], dtype: .f32, byteOffset: 256), on: stream)
            }

            let other = try Device()
            #expect(throws: VkAttnError.deviceMismatch(op: t, operand: "scales")) {
                try QuantizedTensor(values: values, scales: try other.makeTensor(shape: [4, 2], dtype: .f32))
            }
            #expect(throws: VkAttnError.deviceMismatch(op: qop, operand: "x")) {
                try KVQuantization.quantize(try other.makeTensor(shape: [4, 40], dtype: .f32), on: stream)
            }
            #expect(throws: VkAttnError.deviceMismatch(op: qop, operand: "into")) {
                try KVQuantization.quantize(x, into: try other.makeQuantizedTensor(shape: [4, 40]), on: stream)
            }
            #expect(throws: VkAttnError.deviceMismatch(op: dop, operand: "q")) {
                try KVQuantization.dequantize(try other.makeQuantizedTensor(shape: [4, 40]), on: stream)
            }
            #expect(throws: VkAttnError.deviceMismatch(op: dop, operand: "into")) {
                try KVQuantization.dequantize(q, into: try other.makeTensor(shape: [4, 40], dtype: .f32), on: stream)
            }
            try stream.synchronize()
            EmptyInputTests.expectRecorded(stream, "errors only")
        }
    }
}
