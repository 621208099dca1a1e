import Testing
import VkAttn
import TestSupport

/// Chunked gated linear attention against the step-by-step fp64 reference.
///
/// Error bound: every output is a sum of products of fp32 inputs with decays; evaluated in fp32
/// in any order, it errs by at most (terms on the longest path) * u times the same sum of
/// absolute values (u = 2^-24). The scale is the reference run on |q|, |k|, |v|, |dO|, ... (every
/// term positive); the depth is below 4 (L + Dk + Dv + chunk), and the bound 8u per unit of
/// depth leaves room for exp's few-ulp error. The gate gradient is computed as a reverse
/// cumulative sum of q * dq - k * dk (see gla_grads.comp), whose terms can cancel: its scale is
/// the same sum over the absolute terms.
struct GLAHarness {
    let device: Device
    let seed: UInt64
    var rng: SeededRandom

    init(device: Device, seed: UInt64) {
        self.device = device
        self.seed = seed
        rng = SeededRandom(seed: seed)
    }

    enum Decay { case mixed, nearZero, nearOne }

    /// `rounding`: the unit roundoff of 16-bit inputs and outputs (0 for f32): their rounding
    /// (and, on cooperative matrices, the 16-bit intermediate products) adds a few units of it
    /// relative to the same absolute scale.
    static func check(_ got: [Float], _ ref: [Double], scale: [Double], depth: Int, seed: UInt64, _ what: String, rounding: Double = 0) {
        let tol = 8 * 0x1p-24 * Double(depth) + 8 * rounding
        var bad = -1
        for i in got.indices where !(abs(Double(got[i]) - ref[i]) <= tol * scale[i] + 1e-30) {
            bad = i
            break
        }
        #expect(bad < 0, "\(what): element \(bad) of \(got.count) is \(bad >= 0 ? got[bad] : 0), reference \(bad >= 0 ? ref[bad] : 0), scale \(bad >= 0 ? scale[bad] : 0), seed \(seed)")
    }

    /// Scale of the gate gradient: the reverse cumulative sum of |q| |dq| + |k| |dk| (plus the
    /// final-state term), from the reference run on absolute values.
    static func gateScale(gating: GatedLinearAttention.Gating, b: Int, l: Int, h: Int, dk: Int, dv: Int, q: [Float], k: [Float],
                          dFinal: [Float]?, finalAbs: [Double], dqAbs: [Double], dkAbs: [Double]) -> [Double] {
        var scale = [Double](repeating: 0, count: gating == .perHead ? b * l * h : b * l * h * dk)
        for bb in 0..<b {
            for hh in 0..<h {
                var running = [Double](repeating: 0, count: dk)
                if let dFinal {
                    for i in 0..<dk {
                        for j in 0..<dv {
                            let e = ((bb * h + hh) * dk + i) * dv + j
                            running[i] += Swift.abs(Double(dFinal[e])) * finalAbs[e]
                        }
                    }
                }
                for t in stride(from: l - 1, through: 0, by: -1) {
                    var rowTotal = 0.0
                    for i in 0..<dk {
                        let at = ((bb * l + t) * h + hh) * dk + i
                        running[i] += Swift.abs(Double(q[at])) * dqAbs[at] + Swift.abs(Double(k[at])) * dkAbs[at]
                        if gating == .perKey { scale[at] = running[i] }
                        rowTotal += running[i]
                    }
                    if gating == .perHead { scale[(bb * l + t) * h + hh] = rowTotal }
                }
            }
        }
        return scale
    }

    /// The unit roundoff of a 16-bit type (0 for f32).
    static func rounding(_ dtype: DType) -> Double {
        switch dtype {
        case .f16: return 0x1p-11
        case .bf16: return 0x1p-8
        default: return 0
        }
    }

    func poisoned(_ shape: [Int], dtype: DType = .f32) throws -> Tensor {
        let t = try device.makeTensor(shape: shape, dtype: dtype)
        let stream = try device.makeStream()
        try stream.fill(t.slice, word: dtype == .f16 ? 0x7E00_7E00 : dtype == .bf16 ? 0x7FC0_7FC0 : Float.nan.bitPattern)
        try stream.synchronize()
        return t
    }

    mutating func logGates(_ count: Int, _ decay: Decay) -> [Float] {
        switch decay {
        case .mixed: return rng.floats(count, in: -2...0)
        case .nearZero: return rng.floats(count, in: -30 ... -8)
        case .nearOne: return rng.floats(count, in: -1e-3...0)
        }
    }

    /// Runs forward and backward once and checks every output against the reference.
    /// `dtype`: q, k, v, dO and the outputs o, dq, dk, dv (states, gates and their gradients
    /// stay fp32).
    mutating func run(_ op: GatedLinearAttention, b: Int, l: Int, h: Int, dk: Int, dv: Int, decay: Decay, states: Bool,
                      dtype: DType = .f32, expectPath: String? = nil) throws {
        let ref = GLAReference(gating: op.gating, batch: b, length: l, heads: h, dk: dk, dv: dv)
        let round = dtype.rounded
        let q = rng.floats(b * l * h * dk).map(round), k = rng.floats(b * l * h * dk).map(round)
        let v = rng.floats(b * l * h * dv).map(round)
        let rounding = Self.rounding(dtype)
        let gateCount = op.gating == .perHead ? b * l * h : b * l * h * dk
        let g = op.gating == .none ? nil : logGates(gateCount, decay)
        let s0 = states ? rng.floats(b * h * dk * dv) : nil
        let what = "\(op.gating) chunk \(op.chunkLength(on: device)) [\(b), \(l), \(h), \(dk), \(dv)] \(decay) states \(states) \(dtype)"

        let qT = try device.makeTensor(q, shape: [b, l, h, dk], dtype: dtype), kT = try device.makeTensor(k, shape: [b, l, h, dk], dtype: dtype)
        let vT = try device.makeTensor(v, shape: [b, l, h, dv], dtype: dtype)
        let gT = try g.map { try device.makeTensor($0, shape: op.gating == .perHead ? [b, l, h] : [b, l, h, dk]) }
        let s0T = try s0.map { try device.makeTensor($0, shape: [b, h, dk, dv]) }
        let chunks = op.chunkCount(length: l, on: device)
        let oT = try poisoned([b, l, h, dv], dtype: dtype), finalT = try poisoned([b, h, dk, dv])
        let boundariesT = try poisoned([b, h, chunks + 1, dk, dv])
        let stream = try device.makeStream()
        let forwardPath = try op.forward(q: qT, k: kT, v: vT, logGates: gT, initialState: s0T, output: oT, finalState: finalT,
                                         chunkStates: boundariesT, on: stream).path
        if let expectPath { #expect(forwardPath.contains(expectPath), "\(forwardPath): \(what)") }
        try stream.synchronize()

        let abs: ([Float]) -> [Float] = { $0.map { Swift.abs($0) } }
        let (o, final, boundaries) = ref.forward(q: q, k: k, v: v, logGates: g, initialState: s0, chunkLength: op.chunkLength(on: device))
        let (oAbs, finalAbs, boundariesAbs) = ref.forward(q: abs(q), k: abs(k), v: abs(v), logGates: g, initialState: s0.map(abs),
                                                          chunkLength: op.chunkLength(on: device))
        let depth = 4 * (l + dk + dv + op.chunkLength(on: device))
        Self.check(try oT.readFloats(), o, scale: oAbs, depth: depth, seed: seed, "o " + what, rounding: rounding)
        Self.check(try finalT.readFloats(), final, scale: finalAbs, depth: depth, seed: seed, "final " + what, rounding: rounding)
        Self.check(try boundariesT.readFloats(), boundaries, scale: boundariesAbs, depth: depth, seed: seed, "boundaries " + what, rounding: rounding)

        let dO = rng.floats(b * l * h * dv).map(round)
        let dFinal = states ? rng.floats(b * h * dk * dv) : nil
        let dOT = try device.makeTensor(dO, shape: [b, l, h, dv], dtype: dtype)
        let dFinalT = try dFinal.map { try device.makeTensor($0, shape: [b, h, dk, dv]) }
        let dqT = try poisoned([b, l, h, dk], dtype: dtype), dkT = try poisoned([b, l, h, dk], dtype: dtype)
        let dvT = try poisoned([b, l, h, dv], dtype: dtype)
        let dgT = try op.gating == .none ? nil : poisoned(op.gating == .perHead ? [b, l, h] : [b, l, h, dk])
        let ds0T = try poisoned([b, h, dk, dv])
        let backwardPath = try op.backward(q: qT, k: kT, v: vT, logGates: gT, initialState: s0T, dOutput: dOT, dFinalState: dFinalT,
                                           dq: dqT, dk: dkT, dv: dvT, dLogGates: dgT, dInitialState: ds0T, on: stream).path
        if let expectPath { #expect(backwardPath.contains(expectPath), "\(backwardPath): \(what)") }
        try stream.synchronize()
        let grads = ref.backward(q: q, k: k, v: v, logGates: g, initialState: s0, dO: dO, dFinal: dFinal)
        let gradsAbs = ref.backward(q: abs(q), k: abs(k), v: abs(v), logGates: g, initialState: s0.map(abs), dO: abs(dO),
                                    dFinal: dFinal.map(abs))
        Self.check(try dqT.readFloats(), grads.dq, scale: gradsAbs.dq, depth: depth, seed: seed, "dq " + what, rounding: rounding)
        Self.check(try dkT.readFloats(), grads.dk, scale: gradsAbs.dk, depth: depth, seed: seed, "dk " + what, rounding: rounding)
        Self.check(try dvT.readFloats(), grads.dv, scale: gradsAbs.dv, depth: depth, seed: seed, "dv " + what, rounding: rounding)
        Self.check(try ds0T.readFloats(), grads.dInitial, scale: gradsAbs.dInitial, depth: depth, seed: seed, "dInitial " + what, rounding: rounding)
        if let dgT {
            let scale = Self.gateScale(gating: op.gating, b: b, l: l, h: h, dk: dk, dv: dv, q: q, k: k, dFinal: dFinal,
                                       finalAbs: finalAbs, dqAbs: gradsAbs.dq, dkAbs: gradsAbs.dk)
            Self.check(try dgT.readFloats(), grads.dLogGates, scale: scale, depth: depth, seed: seed, "dLogGates " + what, rounding: rounding)
        }
    }
}

@Suite("Gated linear attention")
struct LinearAttentionTests {
    @Test(arguments: GatedLinearAttention.Gating.allCases)
    func awkwardShapesForwardAndBackward(gating: GatedLinearAttention.Gating) throws {
        let seed = testSeed()
        try withDevice { device in
            var h = GLAHarness(device: device, seed: seed)
            for (b, l, heads, dk, dv, chunk) in [(1, 1, 1, 1, 1, nil), (1, 7, 2, 3, 5, 4), (2, 37, 3, 8, 4, 8),
                                                 (1, 70, 2, 16, 16, nil), (1, 33, 1, 5, 9, 16)] as [(Int, Int, Int, Int, Int, Int?)] {
                let op = GatedLinearAttention(gating: gating, chunkLength: chunk)
                try h.run(op, b: b, l: l, h: heads, dk: dk, dv: dv, decay: .mixed, states: l % 2 == 1)
            }
        }
    }

    /// 16-bit q, k, v, dO and outputs (states, gates fp32) on the scalar kernels, which widen
    /// the words exactly.
    @Test(arguments: [DType.f16, .bf16])
    func halfWidthInputsAndOutputs(dtype: DType) throws {
        let seed = testSeed()
        try withDevice { device in
            var h = GLAHarness(device: device, seed: seed)
            for gating in GatedLinearAttention.Gating.allCases {
                for (b, l, heads, dk, dv, chunk) in [(1, 1, 1, 8, 8, nil), (2, 37, 3, 16, 8, 8), (1, 70, 2, 32, 16, nil)] as [(Int, Int, Int, Int, Int, Int?)] {
                    let op = GatedLinearAttention(gating: gating, chunkLength: chunk, preference: .scalar)
                    try h.run(op, b: b, l: l, h: heads, dk: dk, dv: dv, decay: .mixed, states: l % 2 == 1, dtype: dtype,
                              expectPath: "scalar-\(dtype)")
                }
            }
        }
    }

    @Test(arguments: [GatedLinearAttention.Gating.perHead, .perKey])
    func decaysNearZeroAndNearOne(gating: GatedLinearAttention.Gating) throws {
        let seed = testSeed()
        try withDevice { device in
            var h = GLAHarness(device: device, seed: seed)
            for decay in [GLAHarness.Decay.nearZero, .nearOne] {
                try h.run(GatedLinearAttention(gating: gating, chunkLength: 8), b: 1, l: 45, h: 2, dk: 8, dv: 8, decay: decay, states: true)
            }
        }
    }

    /// The backward against central finite differences of the fp64 reference forward, for a
    /// few elements of every input of a tiny problem: checks the gradient formulas themselves
    /// (the reference backward is checked the same way).
    @Test(arguments: GatedLinearAttention.Gating.allCases)
    func backwardMatchesFiniteDifferences(gating: GatedLinearAttention.Gating) throws {
        let seed = testSeed()
        try withDevice { device in
            var rng = SeededRandom(seed: seed)
            let (b, l, h, dk, dv) = (1, 9, 1, 3, 2)
            let ref = GLAReference(gating: gating, batch: b, length: l, heads: h, dk: dk, dv: dv)
            let q = rng.floats(b * l * h * dk), k = rng.floats(b * l * h * dk), v = rng.floats(b * l * h * dv)
            let g: [Float]? = gating == .none ? nil : rng.floats(gating == .perHead ? b * l * h : b * l * h * dk, in: -1 ... -0.05)
            let s0 = rng.floats(b * h * dk * dv)
            let dO = rng.floats(b * l * h * dv), dFinal = rng.floats(b * h * dk * dv)
            enum Input { case q, k, v, gates, s0 }
            // The loss with one input element moved by delta.
            func loss(_ which: Input, _ i: Int, _ delta: Float) -> Double {
                var (q2, k2, v2, g2, s2) = (q, k, v, g, s0)
                switch which {
                case .q: q2[i] += delta
                case .k: k2[i] += delta
                case .v: v2[i] += delta
                case .gates: g2?[i] += delta
                case .s0: s2[i] += delta
                }
                let (o, final, _) = ref.forward(q: q2, k: k2, v: v2, logGates: g2, initialState: s2)
                return zip(o, dO).reduce(0) { $0 + $1.0 * Double($1.1) } + zip(final, dFinal).reduce(0) { $0 + $1.0 * Double($1.1) }
            }
            let eps: Float = 1e-3
            func fd(_ which: Input, _ i: Int) -> Double {
                (loss(which, i, eps) - loss(which, i, -eps)) / Double(2 * eps)
            }
            let op = GatedLinearAttention(gating: gating, chunkLength: 4)
            let t = { (x: [Float], shape: [Int]) in try device.makeTensor(x, shape: shape) }
            let dq = try device.makeTensor(shape: [b, l, h, dk], dtype: .f32), dk_ = try device.makeTensor(shape: [b, l, h, dk], dtype: .f32)
            let dvT = try device.makeTensor(shape: [b, l, h, dv], dtype: .f32), ds0 = try device.makeTensor(shape: [b, h, dk, dv], dtype: .f32)
            let gateShape = gating == .perHead ? [b, l, h] : [b, l, h, dk]
            let dg = try gating == .none ? nil : device.makeTensor(shape: gateShape, dtype: .f32)
            let stream = try device.makeStream()
            try op.backward(q: t(q, [b, l, h, dk]), k: t(k, [b, l, h, dk]), v: t(v, [b, l, h, dv]),
                            logGates: try g.map { try t($0, gateShape) }, initialState: t(s0, [b, h, dk, dv]),
                            dOutput: t(dO, [b, l, h, dv]), dFinalState: t(dFinal, [b, h, dk, dv]),
                            dq: dq, dk: dk_, dv: dvT, dLogGates: dg, dInitialState: ds0, on: stream)
            try stream.synchronize()
            let gpu = (dq: try dq.readFloats(), dk: try dk_.readFloats(), dv: try dvT.readFloats(),
                       dg: try dg?.readFloats() ?? [], ds0: try ds0.readFloats())
            func expectClose(_ gpuValue: Float, _ numeric: Double, _ what: String) {
                #expect(abs(Double(gpuValue) - numeric) <= 2e-3 * max(1, abs(numeric)), "\(gating) \(what): device \(gpuValue), finite difference \(numeric), seed \(seed)")
            }
            for i in [0, 4, q.count - 1] {
                expectClose(gpu.dq[i], fd(.q, i), "dq[\(i)]")
                expectClose(gpu.dk[i], fd(.k, i), "dk[\(i)]")
            }
            for i in [1, v.count - 1] { expectClose(gpu.dv[i], fd(.v, i), "dv[\(i)]") }
            for i in [0, s0.count - 1] { expectClose(gpu.ds0[i], fd(.s0, i), "dInitial[\(i)]") }
            if let g {
                for i in [0, 2, g.count - 1] { expectClose(gpu.dg[i], fd(.gates, i), "dLogGates[\(i)]") }
            }
        }
    }
}

@Suite("Gated linear attention: bad inputs")
struct LinearAttentionValidationTests {
    @Test func badInputsThrowTypedErrors() throws {
        try withDevice { device in
            let stream = try device.makeStream()
            let name = GatedLinearAttention.opName
            let (b, l, h, dk, dv) = (1, 10, 2, 4, 3)
            let q = try device.makeTensor(shape: [b, l, h, dk], dtype: .f32)
            let k = try device.makeTensor(shape: [b, l, h, dk], dtype: .f32)
            let v = try device.makeTensor(shape: [b, l, h, dv], dtype: .f32)
            let o = try device.makeTensor(shape: [b, l, h, dv], dtype: .f32)
            let gk = try device.makeTensor(shape: [b, l, h, dk], dtype: .f32)
            let gh = try device.makeTensor(shape: [b, l, h], dtype: .f32)
            let op = GatedLinearAttention(gating: .perKey)
            #expect(throws: VkAttnError.shapeMismatch(op: name, operand: "q", expected: "[B, L, H, Dk]", actual: "[10, 2, 4]")) {
                try op.forward(q: try device.makeTensor(shape: [l, h, dk], dtype: .f32), k: k, v: v, logGates: gk, output: o, on: stream)
            }
            #expect(throws: VkAttnError.shapeMismatch(op: name, operand: "k", expected: "[1, 10, 2, 4]", actual: "[1, 10, 2, 3]")) {
                try op.forward(q: q, k: v, v: v, logGates: gk, output: o, on: stream)
            }
            #expect(throws: VkAttnError.shapeMismatch(op: name, operand: "v", expected: "[1, 10, 2, Dv]", actual: "[1, 9, 2, 3]")) {
                try op.forward(q: q, k: k, v: try device.makeTensor(shape: [b, 9, h, dv], dtype: .f32), logGates: gk, output: o, on: stream)
            }
            #expect(throws: VkAttnError.invalidValue(op: name, operand: "logGates", reason: "required for per-key gating")) {
                try op.forward(q: q, k: k, v: v, output: o, on: stream)
            }
            #expect(throws: VkAttnError.invalidValue(op: name, operand: "logGates", reason: "given, but the gating is .none")) {
                try GatedLinearAttention(gating: .none).forward(q: q, k: k, v: v, logGates: gk, output: o, on: stream)
            }
            #expect(throws: VkAttnError.shapeMismatch(op: name, operand: "logGates", expected: "[1, 10, 2]", actual: "[1, 10, 2, 4]")) {
                try GatedLinearAttention(gating: .perHead).forward(q: q, k: k, v: v, logGates: gk, output: o, on: stream)
            }
            #expect(throws: VkAttnError.dtypeMismatch(op: name, operand: "v", expected: "f32", actual: "f16")) {
                try op.forward(q: q, k: k, v: try device.makeTensor(shape: [b, l, h, dv], dtype: .f16), logGates: gk, output: o, on: stream)
            }
            #expect(throws: VkAttnError.shapeMismatch(op: name, operand: "initialState", expected: "[1, 2, 4, 3]", actual: "[1, 2, 3, 4]")) {
                try op.forward(q: q, k: k, v: v, logGates: gk, initialState: try device.makeTensor(shape: [b, h, dv, dk], dtype: .f32), output: o, on: stream)
            }
            let chunks = op.chunkCount(length: l, on: device)
            #expect(throws: VkAttnError.shapeMismatch(op: name, operand: "chunkStates", expected: "[1, 2, \(chunks + 1), 4, 3]", actual: "[1, 2, \(chunks), 4, 3]")) {
                try op.forward(q: q, k: k, v: v, logGates: gk, output: o,
                               chunkStates: try device.makeTensor(shape: [b, h, chunks, dk, dv], dtype: .f32), on: stream)
            }
            #expect(throws: VkAttnError.invalidValue(op: name, operand: "output", reason: "overlaps v")) {
                try op.forward(q: q, k: k, v: v, logGates: gk, output: v, on: stream)
            }
            #expect(throws: VkAttnError.self) {
                try GatedLinearAttention(gating: .perKey, chunkLength: 1000).forward(q: q, k: k, v: v, logGates: gk, output: o, on: stream)
            }
            #expect(throws: VkAttnError.invalidValue(op: name, operand: "dLogGates", reason: "required for per-head gating")) {
                try GatedLinearAttention(gating: .perHead).backward(q: q, k: k, v: v, logGates: gh, dOutput: o,
                                                                  dq: try device.makeTensor(shape: [b, l, h, dk], dtype: .f32),
                                                                  dk: try device.makeTensor(shape: [b, l, h, dk], dtype: .f32),
                                                                  dv: try device.makeTensor(shape: [b, l, h, dv], dtype: .f32), on: stream)
            }
            let other = try Device()
            #expect(throws: VkAttnError.deviceMismatch(op: name, operand: "output")) {
                try op.forward(q: q, k: k, v: v, logGates: gk, output: try other.makeTensor(shape: [b, l, h, dv], dtype: .f32), on: stream)
            }
            try stream.synchronize()
        }
    }
}

/// GLA's chunk products on KHR cooperative matrices (f16 q, k, v, dO; fp32 accumulation, gates
/// and states) against the fp64 reference, on devices that offer them.
@Suite("Gated linear attention on cooperative matrices", .enabled(if: CooperativeMatrixProbe.shouldRun, CooperativeMatrixProbe.skipComment))
struct LinearAttentionCoopmatTests {
    @Test(arguments: GatedLinearAttention.Gating.allCases)
    func awkwardShapesForwardAndBackward(gating: GatedLinearAttention.Gating) throws {
        let seed = testSeed()
        try withDevice { device in
            try requireCooperativeMatrix(device)
            var h = GLAHarness(device: device, seed: seed)
            for (b, l, heads, dk, dv, chunk) in [(1, 1, 1, 8, 8, nil), (1, 7, 2, 16, 8, 8), (2, 37, 3, 8, 16, 16),
                                                 (1, 70, 2, 32, 16, nil), (1, 333, 1, 64, 64, nil)] as [(Int, Int, Int, Int, Int, Int?)] {
                let op = GatedLinearAttention(gating: gating, chunkLength: chunk, preference: .cooperativeMatrix)
                try h.run(op, b: b, l: l, h: heads, dk: dk, dv: dv, decay: .mixed, states: l % 2 == 1, dtype: .f16, expectPath: "coopmat-f16")
            }
        }
    }

    @Test(arguments: [GatedLinearAttention.Gating.perHead, .perKey])
    func decaysNearZeroAndNearOne(gating: GatedLinearAttention.Gating) throws {
        let seed = testSeed()
        try withDevice { device in
            try requireCooperativeMatrix(device)
            var h = GLAHarness(device: device, seed: seed)
            for decay in [GLAHarness.Decay.nearZero, .nearOne] {
                try h.run(GatedLinearAttention(gating: gating, chunkLength: 16, preference: .cooperativeMatrix), b: 1, l: 45, h: 2,
                          dk: 16, dv: 8, decay: decay, states: true, dtype: .f16, expectPath: "coopmat-f16")
            }
        }
    }

    /// Shapes the square tiles cannot cover stay scalar and say why; an explicit request is a
    /// typed error.
    @Test func unfitShapesSayWhy() throws {
        try withDevice { device in
            try requireCooperativeMatrix(device)
            let (b, l, h, dk, dv) = (1, 10, 1, 12, 8)
            let q = try device.makeTensor(shape: [b, l, h, dk], dtype: .f16), v = try device.makeTensor(shape: [b, l, h, dv], dtype: .f16)
            let o = try device.makeTensor(shape: [b, l, h, dv], dtype: .f16)
            let stream = try device.makeStream()
            let label = try GatedLinearAttention(gating: .none).forward(q: q, k: q, v: v, output: o, on: stream).path
            #expect(label.contains("scalar-f16") && label.contains("no coopmat"), "\(label)")
            #expect(throws: VkAttnError.self) {
                try GatedLinearAttention(gating: .none, preference: .cooperativeMatrix).forward(q: q, k: q, v: v, output: o, on: stream)
            }
            try stream.synchronize()
        }
    }
}
