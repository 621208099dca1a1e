import Testing
import VkAttn
import VkAttnReference
import TestSupport

/// Mamba-2 SSD against the step-by-step fp64 reference (SSDReference). Error bound as in
/// LinearAttentionTests: 8u per unit of depth (L + N + P + chunk, x4) relative to the same sums
/// of magnitudes (the reference run on absolute values), plus 8 units of a 16-bit type's
/// roundoff. dt's and A's gradients come from GLA's gate gradient, a reverse cumulative sum
/// whose terms cancel (see gla_grads.comp): they are checked against the largest magnitude of
/// their tensor, and the head reductions (dA, dD, dt bias) with the token count in the depth.
struct SSDHarness {
    let device: Device
    let seed: UInt64
    var rng: SeededRandom

    init(device: Device, seed: UInt64) {
        self.device = device
        self.seed = seed
        rng = SeededRandom(seed: seed)
    }

    struct Shape: CustomStringConvertible {
        var batch: Int, length: Int, heads: Int, headDim: Int, groups: Int, state: Int
        var description: String { "[B \(batch), L \(length), H \(heads), P \(headDim), G \(groups), N \(state)]" }
    }

    func poisoned(_ shape: [Int], dtype: DType = .f32) throws -> Tensor {
        let t = try device.makeTensor(shape: shape, dtype: dtype)
        let stream = try device.makeStream()
        try stream.fill(t.slice, word: dtype == .f16 ? 0x7E00_7E00 : dtype == .bf16 ? 0x7FC0_7FC0 : Float.nan.bitPattern)
        try stream.synchronize()
        return t
    }

    static func checkGlobal(_ got: [Float], _ ref: [Double], scale: [Double], depth: Int, seed: UInt64, _ what: String, rounding: Double) {
        let m = scale.max() ?? 0
        GLAHarness.check(got, ref, scale: scale.map { _ in m }, depth: depth, seed: seed, what, rounding: rounding)
    }

    /// Runs forward and backward once (dense, or packed with `lengths`) and checks every output.
    mutating func run(_ op: MambaSSD, _ s: Shape, lengths: [Int]? = nil, withD: Bool, withBias: Bool, states: Bool, dtype: DType = .f32,
                      withZ: Bool = false) throws {
        let cu = lengths.map(cumulative)
        let (bt, l) = lengths.map { (1, $0.reduce(0, +)) } ?? (s.batch, s.length)
        let nStates = lengths?.count ?? bt
        let round = dtype.rounded
        let tokens = bt * l
        let x = rng.floats(tokens * s.heads * s.headDim).map(round)
        let dt = rng.floats(tokens * s.heads, in: op.dtSoftplus ? -3 ... 0 : 0.01...0.2)
        let a = rng.floats(s.heads, in: -2 ... -0.2)
        let bm = rng.floats(tokens * s.groups * s.state).map(round), cm = rng.floats(tokens * s.groups * s.state).map(round)
        let d = withD ? rng.floats(s.heads) : nil
        let bias = withBias ? rng.floats(s.heads, in: op.dtSoftplus ? -0.5...0.5 : 0...0.3) : nil
        let stateCount = nStates * s.heads * s.state * s.headDim
        let s0 = states ? rng.floats(stateCount) : nil
        let z = withZ ? rng.floats(tokens * s.heads * s.headDim, in: -3...3).map(round) : nil
        let inputs = SSDReference.Inputs(x: x, dt: dt, a: a, b: bm, c: cm, d: d, dtBias: bias, initialState: s0, z: z)
        let what = "ssd \(s) lengths \(lengths.map { "\($0)" } ?? "dense") chunk \(op.attention.chunkLength(on: device)) softplus \(op.dtSoftplus) D \(withD) bias \(withBias) z \(withZ) states \(states) \(dtype)"
        let rounding = GLAHarness.rounding(dtype)

        let xShape = [bt, l, s.heads, s.headDim], bShape = [bt, l, s.groups, s.state], stateShape = [nStates, s.heads, s.state, s.headDim]
        let xT = try device.makeTensor(x, shape: xShape, dtype: dtype), dtT = try device.makeTensor(dt, shape: [bt, l, s.heads])
        let aT = try device.makeTensor(a, shape: [s.heads])
        let bT = try device.makeTensor(bm, shape: bShape, dtype: dtype), cT = try device.makeTensor(cm, shape: bShape, dtype: dtype)
        let dT = try d.map { try device.makeTensor($0, shape: [s.heads]) }, biasT = try bias.map { try device.makeTensor($0, shape: [s.heads]) }
        let s0T = try s0.map { try device.makeTensor($0, shape: stateShape) }
        let zT = try z.map { try device.makeTensor($0, shape: xShape, dtype: dtype) }
        let yT = try poisoned(xShape, dtype: dtype), finalT = try poisoned(stateShape)
        let stream = try device.makeStream()
        try op.forward(x: xT, dt: dtT, a: aT, b: bT, c: cT, d: dT, dtBias: biasT, z: zT, initialState: s0T, y: yT, finalState: finalT,
                       cuSeqlens: cu, on: stream)
        try stream.synchronize()
        let ref = SSDReference(batch: bt, length: l, heads: s.heads, headDim: s.headDim, groups: s.groups, stateDim: s.state, dtSoftplus: op.dtSoftplus)
        let (y, final) = cu.map { ref.packedForward(inputs, cuSeqlens: $0) } ?? ref.forward(inputs)
        let (yAbs, finalAbs) = cu.map { ref.packedForward(inputs, cuSeqlens: $0, absolute: true) } ?? ref.forward(inputs, absolute: true)
        let chunk = op.attention.chunkLength(on: device)
        let longest = lengths?.max() ?? l
        let depth = 4 * (longest + s.state + s.headDim + chunk)
        GLAHarness.check(try yT.readFloats(), y, scale: yAbs, depth: depth, seed: seed, "y " + what, rounding: rounding)
        GLAHarness.check(try finalT.readFloats(), final, scale: finalAbs, depth: depth, seed: seed, "final " + what, rounding: rounding)

        let dy = rng.floats(tokens * s.heads * s.headDim).map(round)
        let dFinal = states ? rng.floats(stateCount) : nil
        let dyT = try device.makeTensor(dy, shape: xShape, dtype: dtype), dFinalT = try dFinal.map { try device.makeTensor($0, shape: stateShape) }
        let dxT = try poisoned(xShape, dtype: dtype), ddtT = try poisoned([bt, l, s.heads]), daT = try poisoned([s.heads])
        let dbT = try poisoned(bShape, dtype: dtype), dcT = try poisoned(bShape, dtype: dtype)
        let ddT = try withD ? poisoned([s.heads]) : nil, dBiasT = try withBias ? poisoned([s.heads]) : nil
        let ds0T = try poisoned(stateShape), dzT = try withZ ? poisoned(xShape, dtype: dtype) : nil
        try op.backward(x: xT, dt: dtT, a: aT, b: bT, c: cT, d: dT, dtBias: biasT, z: zT, initialState: s0T, dy: dyT, dFinalState: dFinalT,
                        dx: dxT, ddt: ddtT, da: daT, db: dbT, dc: dcT, dd: ddT, dDtBias: dBiasT, dz: dzT, dInitialState: ds0T, cuSeqlens: cu, on: stream)
        try stream.synchronize()
        let g = cu.map { ref.packedBackward(inputs, cuSeqlens: $0, dy: dy, dFinal: dFinal) } ?? ref.backward(inputs, dy: dy, dFinal: dFinal)
        let gAbs = cu.map { ref.packedBackward(inputs, cuSeqlens: $0, dy: dy, dFinal: dFinal, absolute: true) }
            ?? ref.backward(inputs, dy: dy, dFinal: dFinal, absolute: true)
        GLAHarness.check(try dxT.readFloats(), g.dx, scale: gAbs.dx, depth: depth, seed: seed, "dx " + what, rounding: rounding)
        if let dzT {
            #expect(g.dz.count == tokens * s.heads * s.headDim)
            GLAHarness.check(try dzT.readFloats(), g.dz, scale: gAbs.dz, depth: depth, seed: seed, "dz " + what, rounding: rounding)
        }
        GLAHarness.check(try dbT.readFloats(), g.db, scale: gAbs.db, depth: depth, seed: seed, "dB " + what, rounding: rounding)
        GLAHarness.check(try dcT.readFloats(), g.dc, scale: gAbs.dc, depth: depth, seed: seed, "dC " + what, rounding: rounding)
        GLAHarness.check(try ds0T.readFloats(), g.dInitial, scale: gAbs.dInitial, depth: depth, seed: seed, "dInitial " + what, rounding: rounding)
        Self.checkGlobal(try ddtT.readFloats(), g.ddt, scale: gAbs.ddt, depth: depth, seed: seed, "ddt " + what, rounding: rounding)
        let reductionDepth = depth + 4 * tokens
        Self.checkGlobal(try daT.readFloats(), g.da, scale: gAbs.da, depth: reductionDepth, seed: seed, "dA " + what, rounding: rounding)
        if let ddT { GLAHarness.check(try ddT.readFloats(), g.dd, scale: gAbs.dd, depth: reductionDepth, seed: seed, "dD " + what, rounding: rounding) }
        if let dBiasT {
            Self.checkGlobal(try dBiasT.readFloats(), g.dDtBias, scale: gAbs.dDtBias, depth: reductionDepth, seed: seed, "dDtBias " + what, rounding: rounding)
        }
    }
}

@Suite("Mamba-2 SSD")
struct MambaSSDTests {
    static let shapes: [(SSDHarness.Shape, Int?)] = [
        (.init(batch: 1, length: 1, heads: 1, headDim: 1, groups: 1, state: 1), nil),
        (.init(batch: 2, length: 37, heads: 4, headDim: 8, groups: 2, state: 5), 8),
        (.init(batch: 1, length: 70, heads: 2, headDim: 16, groups: 1, state: 16), nil),
        (.init(batch: 1, length: 33, heads: 3, headDim: 5, groups: 3, state: 9), 16),
    ]

    @Test(arguments: [false, true])
    func awkwardShapesForwardAndBackward(softplus: Bool) throws {
        let seed = testSeed()
        try withDevice { device in
            var h = SSDHarness(device: device, seed: seed)
            for (k, (shape, chunk)) in Self.shapes.enumerated() {
                try h.run(MambaSSD(chunkLength: chunk, dtSoftplus: softplus), shape, withD: k % 2 == 1, withBias: k >= 2, states: k % 2 == 0 || softplus,
                          withZ: (k + (softplus ? 1 : 0)) % 2 == 0)
            }
        }
    }

    @Test(arguments: [DType.f16, .bf16])
    func halfWidthInputs(dtype: DType) throws {
        let seed = testSeed()
        try withDevice { device in
            var h = SSDHarness(device: device, seed: seed)
            try h.run(MambaSSD(chunkLength: 16), .init(batch: 1, length: 45, heads: 2, headDim: 16, groups: 1, state: 16),
                      withD: true, withBias: true, states: true, dtype: dtype, withZ: true)
        }
    }

    /// Packed sequences (lengths 0, 1, at and around the chunk length, primes) against each
    /// sequence run on its own.
    @Test func packedEqualsPerSequence() throws {
        let seed = testSeed()
        try withDevice { device in
            var h = SSDHarness(device: device, seed: seed)
            let shape = SSDHarness.Shape(batch: 1, length: 0, heads: 4, headDim: 8, groups: 2, state: 4)
            try h.run(MambaSSD(chunkLength: 8), shape, lengths: varlenLengths(chunk: 8), withD: true, withBias: false, states: true, withZ: true)
            try h.run(MambaSSD(chunkLength: 4, dtSoftplus: true), shape, lengths: [1, 0, 5, 4, 3], withD: false, withBias: true, states: false)
            try h.run(MambaSSD(chunkLength: 8), shape, lengths: [0, 0], withD: true, withBias: true, states: true)
        }
    }

    /// The reference backward against central finite differences of the reference forward.
    @Test(arguments: [false, true])
    func referenceBackwardMatchesFiniteDifferences(softplus: Bool) throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        let (b, l, h, p, g, n) = (1, 6, 2, 3, 1, 2)
        let ref = SSDReference(batch: b, length: l, heads: h, headDim: p, groups: g, stateDim: n, dtSoftplus: softplus)
        let base = SSDReference.Inputs(x: rng.floats(b * l * h * p), dt: rng.floats(b * l * h, in: 0.05...0.5), a: rng.floats(h, in: -1 ... -0.1),
                                       b: rng.floats(b * l * g * n), c: rng.floats(b * l * g * n), d: rng.floats(h), dtBias: rng.floats(h, in: -0.3...0.3),
                                       initialState: rng.floats(b * h * n * p), z: rng.floats(b * l * h * p, in: -3...3))
        let dy = rng.floats(b * l * h * p), dFinal = rng.floats(b * h * n * p)
        let grads = ref.backward(base, dy: dy, dFinal: dFinal)
        func loss(_ inputs: SSDReference.Inputs) -> Double {
            let (y, final) = ref.forward(inputs)
            return zip(y, dy).reduce(0) { $0 + $1.0 * Double($1.1) } + zip(final, dFinal).reduce(0) { $0 + $1.0 * Double($1.1) }
        }
        let eps: Float = 1e-3
        func fd(_ path: WritableKeyPath<SSDReference.Inputs, [Float]>, _ i: Int) -> Double {
            var plus = base, minus = base
            plus[keyPath: path][i] += eps
            minus[keyPath: path][i] -= eps
            return (loss(plus) - loss(minus)) / Double(2 * eps)
        }
        func fdOptional(_ path: WritableKeyPath<SSDReference.Inputs, [Float]?>, _ i: Int) -> Double {
            var plus = base, minus = base
            plus[keyPath: path]?[i] += eps
            minus[keyPath: path]?[i] -= eps
            return (loss(plus) - loss(minus)) / Double(2 * eps)
        }
        func expectClose(_ analytic: Double, _ numeric: Double, _ what: String) {
            #expect(abs(analytic - numeric) <= 2e-3 * max(1, abs(numeric)), "softplus \(softplus) \(what): reference \(analytic), finite difference \(numeric), seed \(seed)")
        }
        for i in [0, 7, base.x.count - 1] { expectClose(grads.dx[i], fd(\.x, i), "dx[\(i)]") }
        for i in [0, 5, base.dt.count - 1] { expectClose(grads.ddt[i], fd(\.dt, i), "ddt[\(i)]") }
        for i in 0..<h { expectClose(grads.da[i], fd(\.a, i), "dA[\(i)]") }
        for i in [0, base.b.count - 1] {
            expectClose(grads.db[i], fd(\.b, i), "dB[\(i)]")
            expectClose(grads.dc[i], fd(\.c, i), "dC[\(i)]")
        }
        for i in 0..<h {
            expectClose(grads.dd[i], fdOptional(\.d, i), "dD[\(i)]")
            expectClose(grads.dDtBias[i], fdOptional(\.dtBias, i), "dDtBias[\(i)]")
        }
        for i in [0, 11] { expectClose(grads.dInitial[i], fdOptional(\.initialState, i), "dInitial[\(i)]") }
        for i in [0, 9, base.x.count - 1] { expectClose(grads.dz[i], fdOptional(\.z, i), "dz[\(i)]") }
    }

    @Test func badInputsThrowTypedErrors() throws {
        try withDevice { device in
            let stream = try device.makeStream()
            let name = MambaSSD.opName
            let (l, h, p, g, n) = (10, 4, 3, 2, 5)
            let x = try device.makeTensor(shape: [1, l, h, p], dtype: .f32), dt = try device.makeTensor(shape: [1, l, h], dtype: .f32)
            let a = try device.makeTensor(shape: [h], dtype: .f32)
            let b = try device.makeTensor(shape: [1, l, g, n], dtype: .f32), c = try device.makeTensor(shape: [1, l, g, n], dtype: .f32)
            let y = try device.makeTensor(shape: [1, l, h, p], dtype: .f32)
            let op = MambaSSD()
            #expect(throws: VkAttnError.shapeMismatch(op: name, operand: "x", expected: "[B, L, H, P]", actual: "[10, 4, 3]")) {
                try op.forward(x: try device.makeTensor(shape: [l, h, p], dtype: .f32), dt: dt, a: a, b: b, c: c, y: y, on: stream)
            }
            #expect(throws: VkAttnError.invalidValue(op: name, operand: "b", reason: "3 groups must divide the 4 heads (and be at least 1)")) {
                let b3 = try device.makeTensor(shape: [1, l, 3, n], dtype: .f32)
                try op.forward(x: x, dt: dt, a: a, b: b3, c: b3, y: y, on: stream)
            }
            #expect(throws: VkAttnError.shapeMismatch(op: name, operand: "dt", expected: "[1, 10, 4]", actual: "[1, 10, 3]")) {
                try op.forward(x: x, dt: try device.makeTensor(shape: [1, l, 3], dtype: .f32), a: a, b: b, c: c, y: y, on: stream)
            }
            #expect(throws: VkAttnError.shapeMismatch(op: name, operand: "a", expected: "[4]", actual: "[3]")) {
                try op.forward(x: x, dt: dt, a: try device.makeTensor(shape: [3], dtype: .f32), b: b, c: c, y: y, on: stream)
            }
            #expect(throws: VkAttnError.dtypeMismatch(op: name, operand: "c", expected: "f32", actual: "f16")) {
                try op.forward(x: x, dt: dt, a: a, b: b, c: try device.makeTensor(shape: [1, l, g, n], dtype: .f16), y: y, on: stream)
            }
            #expect(throws: VkAttnError.shapeMismatch(op: name, operand: "initialState", expected: "[1, 4, 5, 3]", actual: "[1, 4, 3, 5]")) {
                try op.forward(x: x, dt: dt, a: a, b: b, c: c, initialState: try device.makeTensor(shape: [1, h, p, n], dtype: .f32), y: y, on: stream)
            }
            #expect(throws: VkAttnError.invalidValue(op: name, operand: "cuSeqlens", reason: "ends at 9 but the tensor has 10 tokens")) {
                try op.forward(x: x, dt: dt, a: a, b: b, c: c, y: y, cuSeqlens: [0, 4, 9], on: stream)
            }
            #expect(throws: VkAttnError.shapeMismatch(op: name, operand: "finalState", expected: "[2, 4, 5, 3]", actual: "[1, 4, 5, 3]")) {
                try op.forward(x: x, dt: dt, a: a, b: b, c: c, y: y, finalState: try device.makeTensor(shape: [1, h, n, p], dtype: .f32),
                               cuSeqlens: [0, 4, 10], on: stream)
            }
            #expect(throws: VkAttnError.invalidValue(op: name, operand: "y", reason: "overlaps x")) {
                try op.forward(x: x, dt: dt, a: a, b: b, c: c, y: x, on: stream)
            }
            let dx = try device.makeTensor(shape: [1, l, h, p], dtype: .f32), ddt = try device.makeTensor(shape: [1, l, h], dtype: .f32)
            let da = try device.makeTensor(shape: [h], dtype: .f32)
            let db = try device.makeTensor(shape: [1, l, g, n], dtype: .f32), dc = try device.makeTensor(shape: [1, l, g, n], dtype: .f32)
            #expect(throws: VkAttnError.invalidValue(op: name, operand: "dd", reason: "required with D")) {
                try op.backward(x: x, dt: dt, a: a, b: b, c: c, d: a, dy: y, dx: dx, ddt: ddt, da: da, db: db, dc: dc, on: stream)
            }
            #expect(throws: VkAttnError.invalidValue(op: name, operand: "dDtBias", reason: "given, but the forward had no dt bias")) {
                try op.backward(x: x, dt: dt, a: a, b: b, c: c, dy: y, dx: dx, ddt: ddt, da: da, db: db, dc: dc,
                                dDtBias: try device.makeTensor(shape: [h], dtype: .f32), on: stream)
            }
            #expect(throws: VkAttnError.invalidValue(op: name, operand: "dz", reason: "required with z")) {
                try op.backward(x: x, dt: dt, a: a, b: b, c: c, z: dx, dy: y, dx: dx, ddt: ddt, da: da, db: db, dc: dc, on: stream)
            }
            #expect(throws: VkAttnError.shapeMismatch(op: name, operand: "z", expected: "[1, 10, 4, 3]", actual: "[1, 10, 4]")) {
                try op.forward(x: x, dt: dt, a: a, b: b, c: c, z: dt, y: y, on: stream)
            }
            #expect(throws: VkAttnError.invalidValue(op: name, operand: "b", reason: "the state size N must be at least 1, got 0")) {
                let b0 = try device.makeTensor(shape: [1, l, g, 0], dtype: .f32)
                try op.forward(x: x, dt: dt, a: a, b: b0, c: b0, y: y, on: stream)
            }
            #expect(stream.dispatchesRecorded == 0)
            try stream.synchronize()
        }
    }

    /// Zero-sized inputs record no dispatch: y is empty, the final state the initial one, the
    /// gradients 0 (fills), the initial state's gradient dFinalState's (a copy).
    @Test func zeroSizedInputsRecordNoDispatch() throws {
        try withDevice { device in
            let (h, p, g, n) = (2, 3, 1, 4)
            for (bt, l) in [(0, 5), (2, 0)] {
                let stream = try device.makeStream()
                let x = try device.makeTensor(shape: [bt, l, h, p], dtype: .f32), dt = try device.makeTensor(shape: [bt, l, h], dtype: .f32)
                let a = try device.makeTensor([-1, -1], shape: [h])
                let b = try device.makeTensor(shape: [bt, l, g, n], dtype: .f32)
                let s0 = try device.makeTensor(shape: [bt, h, n, p], dtype: .f32)
                let final = try device.makeTensor(shape: [bt, h, n, p], dtype: .f32)
                try MambaSSD().forward(x: x, dt: dt, a: a, b: b, c: b, initialState: s0, y: try device.makeTensor(shape: [bt, l, h, p], dtype: .f32),
                                       finalState: final, on: stream)
                let da = try device.makeTensor(shape: [h], dtype: .f32), dd = try device.makeTensor(shape: [h], dtype: .f32)
                try MambaSSD().backward(x: x, dt: dt, a: a, b: b, c: b, d: a, dy: x, dFinalState: s0,
                                        dx: try device.makeTensor(shape: [bt, l, h, p], dtype: .f32), ddt: try device.makeTensor(shape: [bt, l, h], dtype: .f32),
                                        da: da, db: try device.makeTensor(shape: [bt, l, g, n], dtype: .f32),
                                        dc: try device.makeTensor(shape: [bt, l, g, n], dtype: .f32), dd: dd,
                                        dInitialState: try device.makeTensor(shape: [bt, h, n, p], dtype: .f32), on: stream)
                #expect(stream.dispatchesRecorded == 0, "B \(bt) L \(l): \(stream.dispatchesRecorded) dispatches")
                try stream.synchronize()
                #expect(try da.readFloats() == [0, 0] && dd.readFloats() == [0, 0])
            }
        }
    }
}

extension MambaSSDTests {
    /// Packed with only empty sequences: no dispatch, final states = initial states.
    @Test func packedEmptySequencesRecordNoDispatch() throws {
        try withDevice { device in
            let (h, p, g, n) = (2, 3, 1, 4)
            let stream = try device.makeStream()
            let x = try device.makeTensor(shape: [1, 0, h, p], dtype: .f32), dt = try device.makeTensor(shape: [1, 0, h], dtype: .f32)
            let b = try device.makeTensor(shape: [1, 0, g, n], dtype: .f32)
            let s0 = try device.makeTensor((0..<(3 * h * n * p)).map(Float.init), shape: [3, h, n, p])
            let final = try device.makeTensor(shape: [3, h, n, p], dtype: .f32)
            try MambaSSD().forward(x: x, dt: dt, a: try device.makeTensor([-1, -1], shape: [h]), b: b, c: b, initialState: s0,
                                   y: try device.makeTensor(shape: [1, 0, h, p], dtype: .f32), finalState: final, cuSeqlens: [0, 0, 0, 0], on: stream)
            #expect(stream.dispatchesRecorded == 0)
            try stream.synchronize()
            #expect(try final.readFloats() == s0.readFloats())
        }
    }
}
