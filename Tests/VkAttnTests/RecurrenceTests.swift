import Testing
import VkAttn
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Random recurrence problems, run on the device and checked against `RecurrenceReference`.
///
/// Error bound: a sequential fp32 recurrence rounds each step with relative error <= 2u
/// (u = 2^-24) of |a h| + |b|, and earlier errors only shrink under |a| <= 1; the chunked
/// evaluation composes maps in another order with the same per-step bound. So every state
/// errs by at most 2u * (steps + 8) * m_t, with m_t the recurrence run on |a| and |b|
/// (`RecurrenceReference.magnitude`). A wrong chunk start or a lost step errs by O(m_t).
struct RecurrenceHarness {
    let device: Device
    let seed: UInt64
    var rng: SeededRandom

    init(device: Device, seed: UInt64) {
        self.device = device
        self.seed = seed
        rng = SeededRandom(seed: seed)
    }

    enum Decay { case mixed, nearZero, nearOne }

    /// Coefficients with |a| in the decay's range (complex: a random phase).
    mutating func coefficients(_ count: Int, complex: Bool, decay: Decay) -> [Float] {
        let range: ClosedRange<Float>
        switch decay {
        case .mixed: range = 0...1
        case .nearZero: range = 0...0.02
        case .nearOne: range = 0.999...1
        }
        if !complex {
            return (0..<count).map { _ in
                let r = Float.random(in: range, using: &rng)
                return decay == .mixed && rng.next() % 2 == 0 ? -r : r
            }
        }
        var out: [Float] = []
        out.reserveCapacity(2 * count)
        for _ in 0..<count {
            let r = Float.random(in: range, using: &rng)
            let phase = Float.random(in: -Float.pi...Float.pi, using: &rng)
            out += [r * cosf(phase), r * sinf(phase)]
        }
        return out
    }

    static func check(_ got: [Float], _ ref: [Double], scale: [Double], steps: Int, seed: UInt64, _ what: String) {
        let tol = 2 * 0x1p-24 * Double(steps + 8)
        var bad = -1
        for i in got.indices where !(abs(Double(got[i]) - ref[i]) <= tol * scale[i] + 1e-30) {
            bad = i
            break
        }
        #expect(bad < 0, "\(what): element \(bad) is \(bad >= 0 ? got[bad] : 0), reference \(bad >= 0 ? ref[bad] : 0), scale \(bad >= 0 ? scale[bad] : 0), seed \(seed)")
    }

    func tensor(_ values: [Float], _ shape: [Int]) throws -> Tensor {
        try device.makeTensor(values, shape: shape)
    }

    /// An output tensor poisoned with NaN.
    func poisoned(_ shape: [Int]) throws -> Tensor {
        let t = try device.makeTensor(shape: shape, dtype: .f32)
        let stream = try device.makeStream()
        try ShaderFill.encode(t.slice, value: Float.nan, on: stream)
        try stream.synchronize()
        return t
    }

    /// Runs forward (and backward) once and checks both against the reference.
    mutating func run(_ op: LinearRecurrence, batch: Int, length: Int, channels: Int, decay: Decay,
                      withH0: Bool, backward: Bool = true) throws {
        let cw = op.complex ? 2 : 1
        let shape = (op.layout == .bld ? [batch, length, channels] : [batch, channels, length]) + (op.complex ? [2] : [])
        let stateShape = [batch, channels] + (op.complex ? [2] : [])
        let count = batch * length * channels
        let a = coefficients(count, complex: op.complex, decay: decay)
        let b = rng.floats(count * cw)
        let h0 = withH0 ? rng.floats(batch * channels * cw) : nil
        let what = "\(op.layout) complex \(op.complex) reverse \(op.reverse) \(op.algorithm.map(\.rawValue) ?? "default") [\(batch), \(length), \(channels)] \(decay) h0 \(withH0)"

        let aT = try tensor(a, shape), bT = try tensor(b, shape)
        let h0T = try h0.map { try tensor($0, stateShape) }
        let hT = try poisoned(shape), finalT = try poisoned(stateShape)
        let stream = try device.makeStream()
        try op.forward(a: aT, b: bT, h0: h0T, h: hT, finalState: finalT, on: stream)
        try stream.synchronize()

        let ref = RecurrenceReference(layout: op.layout, complex: op.complex, reverse: op.reverse,
                                      batch: batch, length: length, channels: channels)
        let (h, final) = ref.forward(a: a, b: b, h0: h0)
        let m = ref.magnitude(a: a, b: b, h0: h0)
        let gotH = try hT.readFloats()
        Self.check(gotH, h, scale: m, steps: length, seed: seed, "h " + what)
        var finalScale = [Double](repeating: 0, count: final.count)
        for bi in 0..<batch {
            for d in 0..<channels {
                let last = ref.index(bi, op.reverse ? 0 : length - 1, d)
                for k in 0..<cw { finalScale[(bi * channels + d) * cw + k] = m[last + k] }
            }
        }
        Self.check(try finalT.readFloats(), final, scale: finalScale, steps: length, seed: seed, "final " + what)
        guard backward else { return }

        let dh = rng.floats(count * cw)
        let dFinal = withH0 ? rng.floats(batch * channels * cw) : nil
        let dhT = try tensor(dh, shape)
        let dFinalT = try dFinal.map { try tensor($0, stateShape) }
        let daT = try poisoned(shape), dbT = try poisoned(shape), dh0T = try poisoned(stateShape)
        try op.backward(a: aT, h: hT, h0: h0T, dh: dhT, dFinal: dFinalT, da: daT, db: dbT, dh0: dh0T, on: stream)
        try stream.synchronize()
        let (da, db, dh0) = ref.backward(a: a, h: gotH, h0: h0, dh: dh, dFinal: dFinal)
        // Scales: the gradient recurrence run on |a| and |dh| (in the opposite direction),
        // times the magnitude of the state it multiplies for da.
        let gScale = ref.gradientMagnitude(a: a, dh: dh, dFinal: dFinal)
        let hMax = (gotH + (h0 ?? [])).map { abs(Double($0)) }.max() ?? 1
        Self.check(try dbT.readFloats(), db, scale: gScale.map { $0 * 2 }, steps: length, seed: seed, "db " + what)
        Self.check(try daT.readFloats(), da, scale: gScale.map { $0 * 2 * max(hMax, 1e-3) }, steps: length, seed: seed, "da " + what)
        let gMax = gScale.max() ?? 1
        Self.check(try dh0T.readFloats(), dh0, scale: dh0.map { _ in gMax * 2 }, steps: length, seed: seed, "dh0 " + what)
    }
}

@Suite("Linear recurrence")
struct RecurrenceTests {
    static let cases: [(layout: LinearRecurrence.Layout, complex: Bool)] = [(.bld, false), (.bdl, false), (.bld, true), (.bdl, true)]

    @Test(arguments: 0..<4, RecurrenceAlgorithm.allCases)
    func awkwardShapesForwardAndBackward(caseIndex: Int, path: RecurrenceAlgorithm) throws {
        let seed = testSeed()
        let (layout, complex) = Self.cases[caseIndex]
        try withDevice { device in
            var h = RecurrenceHarness(device: device, seed: seed)
            for (batch, length, channels) in [(1, 1, 1), (2, 7, 3), (1, 97, 5), (3, 131, 8), (1, 300, 4)] {
                for reverse in [false, true] {
                    let op = LinearRecurrence(layout: layout, complex: complex, reverse: reverse, algorithm: path, chunkLength: 16)
                    try h.run(op, batch: batch, length: length, channels: channels, decay: .mixed, withH0: reverse)
                }
            }
        }
    }

    @Test(arguments: 0..<4)
    func decaysNearZeroAndNearOne(caseIndex: Int) throws {
        let seed = testSeed()
        let (layout, complex) = Self.cases[caseIndex]
        try withDevice { device in
            var h = RecurrenceHarness(device: device, seed: seed)
            for decay in [RecurrenceHarness.Decay.nearZero, .nearOne] {
                for path in RecurrenceAlgorithm.allCases {
                    let op = LinearRecurrence(layout: layout, complex: complex, reverse: decay == .nearOne, algorithm: path)
                    try h.run(op, batch: 2, length: 2053, channels: 12, decay: decay, withH0: true)
                }
            }
        }
    }

    /// The chained path's fallback (a chunk reducing unpublished predecessors from the input)
    /// forced on the nearest predecessors, so that it runs deterministically.
    @Test func chainedFallbacksStayCorrect() throws {
        let seed = testSeed()
        try withDevice { device in
            var h = RecurrenceHarness(device: device, seed: seed)
            for (layout, complex) in Self.cases {
                for forced in [1, 3] {
                    let op = LinearRecurrence(layout: layout, complex: complex, reverse: forced == 3, algorithm: .chained,
                                              chunkLength: 8, forcedFallbacks: forced)
                    try h.run(op, batch: 2, length: 203, channels: 6, decay: .mixed, withH0: true)
                }
            }
        }
    }

    /// The 16-byte vector views GPUs get (lavapipe defaults to 64-bit words).
    @Test func vectorViewsOfGPUs() throws {
        let seed = testSeed()
        try withDevice { device in
            var h = RecurrenceHarness(device: device, seed: seed)
            for (layout, complex) in Self.cases {
                for path in RecurrenceAlgorithm.allCases {
                    let op = LinearRecurrence(layout: layout, complex: complex, reverse: complex, algorithm: path, chunkLength: 32, wideLoads: false)
                    try h.run(op, batch: 2, length: 100, channels: 8, decay: .mixed, withH0: true)
                }
            }
        }
    }

    @Test func defaultChunkingOnALongSequence() throws {
        let seed = testSeed()
        try withDevice { device in
            var h = RecurrenceHarness(device: device, seed: seed)
            for layout in LinearRecurrence.Layout.allCases {
                try h.run(LinearRecurrence(layout: layout), batch: 1, length: 20_011, channels: 8, decay: .nearOne,
                          withH0: true, backward: false)
            }
        }
    }
}

@Suite("Linear recurrence: bad inputs")
struct RecurrenceValidationTests {
    @Test func badInputsThrowTypedErrors() throws {
        try withDevice { device in
            let stream = try device.makeStream()
            let name = LinearRecurrence.opName
            let a = try device.makeTensor(shape: [2, 10, 4], dtype: .f32)
            let b = try device.makeTensor(shape: [2, 10, 4], dtype: .f32)
            let h = try device.makeTensor(shape: [2, 10, 4], dtype: .f32)
            let op = LinearRecurrence(layout: .bld)
            #expect(throws: VkAttnError.shapeMismatch(op: name, operand: "a", expected: "[B, L, D] or [B, D, L]", actual: "[20, 4]")) {
                try op.forward(a: try device.makeTensor(shape: [20, 4], dtype: .f32), b: b, h: h, on: stream)
            }
            #expect(throws: VkAttnError.shapeMismatch(op: name, operand: "a", expected: "[B, L, D, 2] or [B, D, L, 2]", actual: "[2, 10, 4]")) {
                try LinearRecurrence(layout: .bld, complex: true).forward(a: a, b: b, h: h, on: stream)
            }
            #expect(throws: VkAttnError.shapeMismatch(op: name, operand: "b", expected: "[2, 10, 4]", actual: "[2, 10, 5]")) {
                try op.forward(a: a, b: try device.makeTensor(shape: [2, 10, 5], dtype: .f32), h: h, on: stream)
            }
            #expect(throws: VkAttnError.dtypeMismatch(op: name, operand: "b", expected: "f32", actual: "f16")) {
                try op.forward(a: a, b: try device.makeTensor(shape: [2, 10, 4], dtype: .f16), h: h, on: stream)
            }
            #expect(throws: VkAttnError.shapeMismatch(op: name, operand: "h0", expected: "[2, 4]", actual: "[2, 10]")) {
                try op.forward(a: a, b: b, h0: try device.makeTensor(shape: [2, 10], dtype: .f32), h: h, on: stream)
            }
            #expect(throws: VkAttnError.shapeMismatch(op: name, operand: "finalState", expected: "[2, 4]", actual: "[4]")) {
                try op.forward(a: a, b: b, h: h, finalState: try device.makeTensor(shape: [4], dtype: .f32), on: stream)
            }
            #expect(throws: VkAttnError.invalidValue(op: name, operand: "h", reason: "overlaps b")) {
                try op.forward(a: a, b: b, h: b, on: stream)
            }
            #expect(throws: VkAttnError.self) {
                try LinearRecurrence(layout: .bld, chunkLength: 6).forward(a: a, b: b, h: h, on: stream)
            }
            #expect(throws: VkAttnError.shapeMismatch(op: name, operand: "dh", expected: "[2, 10, 4]", actual: "[2, 4, 10]")) {
                try op.backward(a: a, h: h, dh: try device.makeTensor(shape: [2, 4, 10], dtype: .f32),
                                da: try device.makeTensor(shape: [2, 10, 4], dtype: .f32), db: b, on: stream)
            }
            if device.capabilities.type == .cpu {
                let long = try device.makeTensor(shape: [1, 1, 70_000], dtype: .f32)
                #expect(throws: VkAttnError.self) {
                    try LinearRecurrence(layout: .bdl, algorithm: .chained).forward(a: long, b: long, h: try device.makeTensor(shape: [1, 1, 70_000], dtype: .f32), on: stream)
                }
            }
            let other = try Device()
            #expect(throws: VkAttnError.deviceMismatch(op: name, operand: "h")) {
                try op.forward(a: a, b: b, h: try other.makeTensor(shape: [2, 10, 4], dtype: .f32), on: stream)
            }
            try stream.synchronize()
        }
    }
}
