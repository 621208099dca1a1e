import Foundation
import Testing
import VkAttn
import TestSupport

/// Random delta-rule problems in the models' regime: q and k L2-normalised per head and row,
/// beta in [0, 1], log-decays in [-1, 0] (so every step is a contraction), values in [-1, 1].
struct DeltaProblem {
    let gated: Bool, lengths: [Int], heads: Int, dk: Int, dv: Int
    let q: [Float], k: [Float], v: [Float], beta: [Float], logDecay: [Float]?, initial: [Float]?, dO: [Float], dFinal: [Float]?
    var rows: Int { lengths.reduce(0, +) }
    var reference: DeltaRuleReference { DeltaRuleReference(gated: gated, lengths: lengths, heads: heads, dk: dk, dv: dv) }

    init(gated: Bool, lengths: [Int], heads: Int, dk: Int, dv: Int, q: [Float], k: [Float], v: [Float], beta: [Float],
         logDecay: [Float]?, initial: [Float]?, dO: [Float], dFinal: [Float]?) {
        (self.gated, self.lengths, self.heads, self.dk, self.dv) = (gated, lengths, heads, dk, dv)
        (self.q, self.k, self.v, self.beta, self.logDecay, self.initial, self.dO, self.dFinal) = (q, k, v, beta, logDecay, initial, dO, dFinal)
    }

    init(rng: inout SeededRandom, gated: Bool, lengths: [Int], heads: Int, dk: Int, dv: Int, dtype: DType = .f32,
         states: Bool = true) {
        (self.gated, self.lengths, self.heads, self.dk, self.dv) = (gated, lengths, heads, dk, dv)
        let t = lengths.reduce(0, +)
        q = DeltaRuleReference.l2Normalised(rng.floats(t * heads * dk), width: dk).map(dtype.rounded)
        k = DeltaRuleReference.l2Normalised(rng.floats(t * heads * dk), width: dk).map(dtype.rounded)
        v = rng.floats(t * heads * dv).map(dtype.rounded)
        beta = rng.floats(t * heads, in: 0...1)
        logDecay = gated ? rng.floats(t * heads, in: -1...0) : nil
        initial = states ? rng.floats(lengths.count * heads * dk * dv) : nil
        dO = rng.floats(t * heads * dv).map(dtype.rounded)
        dFinal = states ? rng.floats(lengths.count * heads * dk * dv) : nil
    }
}

/// Runs a problem on the device, packed (cuSeqlens) or as a dense [B, L] batch when every
/// length is equal and `dense` is set.
struct DeltaRun {
    var o: [Float] = [], final: [Float] = []
    var dq: [Float] = [], dk: [Float] = [], dv: [Float] = [], dbeta: [Float] = [], dlog: [Float] = [], dInitial: [Float] = []
    var path = "", backwardPath = ""

    static func poisoned(_ device: Device, shape: [Int], dtype: DType = .f32) throws -> Tensor {
        let t = try device.makeTensor(shape: shape, dtype: dtype)
        let stream = try device.makeStream()
        if !t.isEmpty {
            try stream.fill(t.slice, word: dtype == .f16 ? 0x7E00_7E00 : dtype == .bf16 ? 0x7FC0_7FC0 : Float.nan.bitPattern)
        }
        try stream.synchronize()
        return t
    }

    init(_ p: DeltaProblem, device: Device, dtype: DType = .f32, outputType: DType? = nil, dense: Bool = false,
         chunk: Int? = nil, backward: Bool = true, preference: KernelPreference = .automatic) throws {
        let op = DeltaRule(gated: p.gated, chunkLength: chunk, preference: preference)
        let n = p.lengths.count, h = p.heads
        let (b, l) = dense ? (n, p.lengths.first ?? 0) : (1, p.rows)
        let cu: [Int32]? = dense ? nil : p.reference.cuSeqlens
        let out = outputType ?? dtype
        let q = try device.makeTensor(p.q, shape: [b, l, h, p.dk], dtype: dtype)
        let k = try device.makeTensor(p.k, shape: [b, l, h, p.dk], dtype: dtype)
        let v = try device.makeTensor(p.v, shape: [b, l, h, p.dv], dtype: dtype)
        let beta = try device.makeTensor(p.beta, shape: [b, l, h])
        let g = try p.logDecay.map { try device.makeTensor($0, shape: [b, l, h]) }
        let s0 = try p.initial.map { try device.makeTensor($0, shape: [n, h, p.dk, p.dv]) }
        let o = try Self.poisoned(device, shape: [b, l, h, p.dv], dtype: out)
        let final = try Self.poisoned(device, shape: [n, h, p.dk, p.dv])
        let stream = try device.makeStream()
        path = try op.forward(q: q, k: k, v: v, beta: beta, logDecay: g, initialState: s0, cuSeqlens: cu, output: o,
                              finalState: final, on: stream).path
        try stream.synchronize()
        self.o = try o.readFloats()
        self.final = try final.readFloats()
        guard backward else { return }
        let dO = try device.makeTensor(p.dO, shape: [b, l, h, p.dv], dtype: dtype)
        let dF = try p.dFinal.map { try device.makeTensor($0, shape: [n, h, p.dk, p.dv]) }
        let dq = try Self.poisoned(device, shape: [b, l, h, p.dk], dtype: out), dk = try Self.poisoned(device, shape: [b, l, h, p.dk], dtype: out)
        let dv = try Self.poisoned(device, shape: [b, l, h, p.dv], dtype: out)
        let dbeta = try Self.poisoned(device, shape: [b, l, h])
        let dlog = p.gated ? try Self.poisoned(device, shape: [b, l, h]) : nil
        let ds0 = try Self.poisoned(device, shape: [n, h, p.dk, p.dv])
        backwardPath = try op.backward(q: q, k: k, v: v, beta: beta, logDecay: g, initialState: s0, cuSeqlens: cu, dOutput: dO,
                                       dFinalState: dF, dq: dq, dk: dk, dv: dv, dBeta: dbeta, dLogDecay: dlog, dInitialState: ds0,
                                       on: stream).path
        try stream.synchronize()
        (self.dq, self.dk, self.dv, self.dbeta) = (try dq.readFloats(), try dk.readFloats(), try dv.readFloats(), try dbeta.readFloats())
        self.dlog = try dlog?.readFloats() ?? []
        dInitial = try ds0.readFloats()
    }

    /// Compares every output with the fp64 reference within `bound` (relative L2 error).
    /// `reductionBound` (nil: `bound`) applies to dbeta and the log-decay gradient, sums over Dk
    /// and Dv of terms that can cancel.
    func check(_ p: DeltaProblem, bound: Double, reductionBound: Double? = nil, seed: UInt64, _ what: String, backward: Bool = true) {
        let r = p.reference
        let fwd = r.forward(q: p.q, k: p.k, v: p.v, beta: p.beta, logDecay: p.logDecay, initialState: p.initial)
        var pairs: [(String, [Float], [Double])] = [("o", o, fwd.o), ("final", final, fwd.final)]
        if backward {
            let g = r.backward(q: p.q, k: p.k, v: p.v, beta: p.beta, logDecay: p.logDecay, initialState: p.initial, dO: p.dO, dFinal: p.dFinal)
            pairs += [("dq", dq, g.dq), ("dk", dk, g.dk), ("dv", dv, g.dv), ("dbeta", dbeta, g.dbeta), ("dInitial", dInitial, g.dInitial)]
            if p.gated { pairs.append(("dlogDecay", dlog, g.dlogDecay)) }
        }
        for (name, got, want) in pairs {
            let err = relativeError(got, want)
            let limit = name == "dbeta" || name == "dlogDecay" ? reductionBound ?? bound : bound
            #expect(err <= limit, "\(what): \(name) relative error \(err) > \(limit) (\(path)), seed \(seed)")
            if ProcessInfo.processInfo.environment["VKATTN_PRINT_ERRORS"] == "1" { print("\(what): \(name) \(err) (\(path))") }
        }
    }
}

@Suite("Delta rule")
struct DeltaRuleTests {
    @Test("forward and backward against the fp64 reference at awkward lengths, gated and not",
          arguments: [(true, [1]), (true, [31, 33]), (false, [32, 64]), (true, [97]), (false, [5, 2])])
    func awkwardLengths(gated: Bool, lengths: [Int]) throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        try withDevice { device in
            let p = DeltaProblem(rng: &rng, gated: gated, lengths: lengths, heads: 2, dk: 16, dv: 12)
            let run = try DeltaRun(p, device: device, chunk: 16)
            run.check(p, bound: 2e-5, seed: seed, "lengths \(lengths)")
        }
    }

    @Test("dense [B, L] equals the same batch packed, bit for bit")
    func denseIsPacked() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        try withDevice { device in
            let p = DeltaProblem(rng: &rng, gated: true, lengths: [45, 45, 45], heads: 3, dk: 8, dv: 16)
            let dense = try DeltaRun(p, device: device, dense: true)
            let packed = try DeltaRun(p, device: device)
            #expect(dense.o == packed.o && dense.final == packed.final && dense.dq == packed.dq && dense.dk == packed.dk
                    && dense.dv == packed.dv && dense.dbeta == packed.dbeta && dense.dlog == packed.dlog
                    && dense.dInitial == packed.dInitial, "seed \(seed)")
            dense.check(p, bound: 2e-5, seed: seed, "dense")
        }
    }

    @Test("a packed batch equals each sequence run alone: no state crosses a boundary")
    func packedEqualsPerSequence() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        try withDevice { device in
            let lengths = [7, 0, 1, 16, 17, 33, 1]
            let p = DeltaProblem(rng: &rng, gated: true, lengths: lengths, heads: 2, dk: 12, dv: 8)
            let packed = try DeltaRun(p, device: device, chunk: 16)
            packed.check(p, bound: 2e-5, seed: seed, "packed \(lengths)")
            var row = 0
            let (h, dk, dv) = (p.heads, p.dk, p.dv)
            for (s, n) in lengths.enumerated() {
                func rows(_ x: [Float], _ w: Int) -> [Float] { Array(x[(row * h * w)..<((row + n) * h * w)]) }
                func state(_ x: [Float]?) -> [Float]? { x.map { Array($0[(s * h * dk * dv)..<((s + 1) * h * dk * dv)]) } }
                let one = DeltaProblem(gated: true, lengths: [n], heads: h, dk: dk, dv: dv, q: rows(p.q, dk), k: rows(p.k, dk), v: rows(p.v, dv),
                                       beta: rows(p.beta, 1), logDecay: p.logDecay.map { rows($0, 1) }, initial: state(p.initial),
                                       dO: rows(p.dO, dv), dFinal: state(p.dFinal))
                let alone = try DeltaRun(one, device: device, chunk: 16)
                #expect(alone.o == rows(packed.o, dv) && alone.dq == rows(packed.dq, dk) && alone.dk == rows(packed.dk, dk)
                        && alone.dv == rows(packed.dv, dv) && alone.dbeta == rows(packed.dbeta, 1) && alone.dlog == rows(packed.dlog, 1),
                        "sequence \(s) of \(lengths): rows differ, seed \(seed)")
                #expect(alone.final == state(packed.final) && alone.dInitial == state(packed.dInitial),
                        "sequence \(s) of \(lengths): states differ, seed \(seed)")
                row += n
            }
        }
    }

    @Test("f16 and bf16 inputs, 16-bit and f32 outputs", arguments: [DType.f16, .bf16])
    func halfInputs(dtype: DType) throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        try withDevice { device in
            guard device.enabled.storageBuffer16BitAccess else { return }
            let p = DeltaProblem(rng: &rng, gated: true, lengths: [40, 3], heads: 2, dk: 16, dv: 16, dtype: dtype)
            let wide = try DeltaRun(p, device: device, dtype: dtype, outputType: .f32)
            // The cooperative-matrix kernels (f16 on a device with them) round fp32 operands to
            // f16: the f32 outputs' bound is a few f16 units there.
            let coop = wide.path.contains("coopmat-")
            wide.check(p, bound: coop ? DeltaRuleCoopmatTests.f32OutputBound : 2e-5,
                       reductionBound: coop ? DeltaRuleCoopmatTests.reductionBound : nil, seed: seed, "\(dtype) in, f32 out")
            let rounding = dtype == .f16 ? 2e-3 : 1.6e-2
            try DeltaRun(p, device: device, dtype: dtype).check(p, bound: rounding, seed: seed, "\(dtype) in and out")
        }
    }

    @Test("the reference's backward matches finite differences of its forward")
    func referenceGradients() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        let p = DeltaProblem(rng: &rng, gated: true, lengths: [5, 3], heads: 1, dk: 3, dv: 2)
        let r = p.reference
        let g = r.backward(q: p.q, k: p.k, v: p.v, beta: p.beta, logDecay: p.logDecay, initialState: p.initial, dO: p.dO, dFinal: p.dFinal)
        func loss(q: [Float]? = nil, k: [Float]? = nil, v: [Float]? = nil, beta: [Float]? = nil, logDecay: [Float]? = nil,
                  initial: [Float]? = nil) -> Double {
            let f = r.forward(q: q ?? p.q, k: k ?? p.k, v: v ?? p.v, beta: beta ?? p.beta, logDecay: logDecay ?? p.logDecay,
                              initialState: initial ?? p.initial)
            return zip(f.o, p.dO).reduce(0) { $0 + $1.0 * Double($1.1) } + zip(f.final, p.dFinal ?? []).reduce(0) { $0 + $1.0 * Double($1.1) }
        }
        func numeric(_ x: [Float], _ i: Int, _ f: ([Float]) -> Double) -> Double {
            let h: Float = 1e-2
            var plus = x, minus = x
            plus[i] += h
            minus[i] -= h
            return (f(plus) - f(minus)) / Double(plus[i] - minus[i])
        }
        let checks: [(String, [Float], [Double], ([Float]) -> Double)] = [
            ("q", p.q, g.dq, { loss(q: $0) }), ("k", p.k, g.dk, { loss(k: $0) }), ("v", p.v, g.dv, { loss(v: $0) }),
            ("beta", p.beta, g.dbeta, { loss(beta: $0) }), ("logDecay", p.logDecay ?? [], g.dlogDecay, { loss(logDecay: $0) }),
            ("initial", p.initial ?? [], g.dInitial, { loss(initial: $0) }),
        ]
        for (name, x, analytic, f) in checks {
            for i in x.indices {
                let n = numeric(x, i, f)
                #expect(abs(n - analytic[i]) <= 1e-3 * max(1, abs(n)), "d\(name)[\(i)]: analytic \(analytic[i]), numeric \(n), seed \(seed)")
            }
        }
    }

    @Test("bad inputs are typed errors before anything is recorded")
    func validation() throws {
        try withDevice { device in
            let op = DeltaRule(gated: true)
            let q = try device.makeTensor(shape: [2, 8, 2, 4], dtype: .f32), v = try device.makeTensor(shape: [2, 8, 2, 4], dtype: .f32)
            let beta = try device.makeTensor(shape: [2, 8, 2], dtype: .f32), o = try device.makeTensor(shape: [2, 8, 2, 4], dtype: .f32)
            let stream = try device.makeStream()
            #expect(throws: VkAttnError.self) { try op.forward(q: q, k: q, v: v, beta: beta, output: o, on: stream) }  // no decay
            #expect(throws: VkAttnError.self) {
                try DeltaRule(gated: false).forward(q: q, k: q, v: v, beta: beta, logDecay: beta, output: o, on: stream)
            }
            #expect(throws: VkAttnError.self) {  // cuSeqlens with B = 2
                try op.forward(q: q, k: q, v: v, beta: beta, logDecay: beta, cuSeqlens: [0, 8], output: o, on: stream)
            }
            let qp = try device.makeTensor(shape: [1, 8, 2, 4], dtype: .f32), betap = try device.makeTensor(shape: [1, 8, 2], dtype: .f32)
            let op1 = try device.makeTensor(shape: [1, 8, 2, 4], dtype: .f32)
            for cu: [Int32] in [[0, 9], [1, 8], [0, 5, 3, 8], []] {
                #expect(throws: VkAttnError.self) {
                    try op.forward(q: qp, k: qp, v: qp, beta: betap, logDecay: betap, cuSeqlens: cu, output: op1, on: stream)
                }
            }
            let wrongState = try device.makeTensor(shape: [2, 2, 4, 4], dtype: .f32)
            #expect(throws: VkAttnError.self) {  // 3 sequences need [3, H, Dk, Dv]
                try op.forward(q: qp, k: qp, v: qp, beta: betap, logDecay: betap, initialState: wrongState, cuSeqlens: [0, 2, 5, 8],
                               output: op1, on: stream)
            }
            #expect(throws: VkAttnError.self) {
                try DeltaRule(gated: true, chunkLength: 0).forward(q: qp, k: qp, v: qp, beta: betap, logDecay: betap, output: op1, on: stream)
            }
            #expect(throws: VkAttnError.self) {  // output overlapping q
                try op.forward(q: qp, k: qp, v: qp, beta: betap, logDecay: betap, output: qp, on: stream)
            }
            #expect(stream.dispatchesRecorded == 0)
        }
    }

    @Test("empty batches and empty sequences record no kernel; final state = initial")
    func emptyInputs() throws {
        try withDevice { device in
            let op = DeltaRule(gated: true)
            let q = try device.makeTensor(shape: [1, 0, 2, 4], dtype: .f32), beta = try device.makeTensor(shape: [1, 0, 2], dtype: .f32)
            let s0 = try device.makeTensor([Float](repeating: 3, count: 2 * 2 * 16), shape: [2, 2, 4, 4])
            let final = try DeltaRun.poisoned(device, shape: [2, 2, 4, 4])
            let stream = try device.makeStream()
            let d = try op.forward(q: q, k: q, v: q, beta: beta, logDecay: beta, initialState: s0, cuSeqlens: [0, 0, 0],
                                   output: try device.makeTensor(shape: [1, 0, 2, 4], dtype: .f32),
                                   finalState: final, on: stream)
            try stream.synchronize()
            #expect(stream.dispatchesRecorded == 0 && d.path == "empty (no kernel)")
            #expect(try final.readFloats() == [Float](repeating: 3, count: 64))
        }
    }
}

/// The chunk products on KHR cooperative matrices (f16 q, k, v, dO; f16-rounded tiles of T, S_0,
/// Wk, W, P and R with fp32 accumulation: U and Wk, o forward; W, R and G backward, whose
/// gradients kernel is scalar) against the fp64 reference, on devices that offer them.
@Suite("Delta rule on cooperative matrices", .enabled(if: CooperativeMatrixProbe.shouldRun, CooperativeMatrixProbe.skipComment))
struct DeltaRuleCoopmatTests {
    /// The relative L2 error bound of f32 outputs: the products round T diag(beta), S_0, dS_1,
    /// Wk, W, dW, dWk, P and R to f16 (2^-11 relative each, about 2^-12 on average), so o, the
    /// final state and the gradients carry up to about 5.3e-4 (Mesa 26.2 lavapipe, Dk 16 to 128,
    /// seeds 1 to 16) where the scalar kernels keep fp32's 2e-7: the bound is two f16 units
    /// (2^-10, about 1e-3) instead of 2e-5. f16 outputs keep the f16 bound, 2e-3.
    static let f32OutputBound = 1e-3
    /// dbeta and the log-decay gradient are per-row sums over Dk and Dv whose terms can cancel
    /// (dW . v against exp(g) dWk . k, from f16-rounded operands): their error is the terms' f16
    /// units over a smaller sum, up to about 1.1e-3 with few rows (L = 1, seeds 1 to 16): four
    /// f16 units (2^-9, about 2e-3).
    static let reductionBound = 2e-3

    @Test("forward and backward at awkward lengths, packed and dense, gated and not",
          arguments: [(true, [1], 16), (true, [31, 33], 16), (false, [32, 64], 16), (true, [97], 32), (false, [5, 2], 8),
                      (true, [7, 0, 1, 16, 17, 33, 1], 16), (true, [127], 32)] as [(Bool, [Int], Int)])
    func awkwardLengths(gated: Bool, lengths: [Int], chunk: Int) throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        try withDevice { device in
            try requireCooperativeMatrix(device)
            // Few rows: more heads, so dbeta's relative error is not over two numbers.
            let heads = lengths.reduce(0, +) < 8 ? 6 : 2
            let p = DeltaProblem(rng: &rng, gated: gated, lengths: lengths, heads: heads, dk: 16, dv: 24, dtype: .f16)
            let wide = try DeltaRun(p, device: device, dtype: .f16, outputType: .f32, chunk: chunk, preference: .cooperativeMatrix)
            #expect(wide.path.contains("coopmat-f16"), "\(wide.path)")
            #expect(wide.backwardPath.contains("coopmat-f16") && wide.backwardPath.contains("row-sum gradients scalar-f16"), "\(wide.backwardPath)")
            wide.check(p, bound: Self.f32OutputBound, reductionBound: Self.reductionBound, seed: seed, "coopmat \(lengths), f32 out")
            let narrow = try DeltaRun(p, device: device, dtype: .f16, chunk: chunk)
            #expect(narrow.path.contains("coopmat-f16"), "\(narrow.path)")
            narrow.check(p, bound: 2e-3, seed: seed, "coopmat \(lengths), f16 out")
        }
    }

    @Test("dense [B, L] and the device's chunk length, Dk 64 and Dv 32")
    func denseLarger() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        try withDevice { device in
            try requireCooperativeMatrix(device)
            let p = DeltaProblem(rng: &rng, gated: true, lengths: [83, 83], heads: 2, dk: 64, dv: 32, dtype: .f16)
            let run = try DeltaRun(p, device: device, dtype: .f16, outputType: .f32, dense: true)
            #expect(run.path.contains("coopmat-f16"), "\(run.path)")
            run.check(p, bound: Self.f32OutputBound, reductionBound: Self.reductionBound, seed: seed, "coopmat dense")
        }
    }

    @Test("strong decays (exp(g) far below f16's range within a chunk) and head dimensions of 128")
    func strongDecayAndWideHeads() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        try withDevice { device in
            try requireCooperativeMatrix(device)
            let r = DeltaProblem(rng: &rng, gated: true, lengths: [70, 9], heads: 2, dk: 32, dv: 16, dtype: .f16)
            let strong = DeltaProblem(gated: true, lengths: r.lengths, heads: r.heads, dk: r.dk, dv: r.dv, q: r.q, k: r.k, v: r.v,
                                      beta: r.beta, logDecay: r.logDecay?.map { $0 * 12 }, initial: r.initial, dO: r.dO, dFinal: r.dFinal)
            let run = try DeltaRun(strong, device: device, dtype: .f16, outputType: .f32, chunk: 32, preference: .cooperativeMatrix)
            run.check(strong, bound: Self.f32OutputBound, reductionBound: Self.reductionBound, seed: seed, "strong decays")
            let wide = DeltaProblem(rng: &rng, gated: false, lengths: [45], heads: 1, dk: 128, dv: 128, dtype: .f16)
            let wideRun = try DeltaRun(wide, device: device, dtype: .f16, outputType: .f32, preference: .cooperativeMatrix)
            #expect(wideRun.path.contains("coopmat-f16"), "\(wideRun.path)")
            wideRun.check(wide, bound: Self.f32OutputBound, reductionBound: Self.reductionBound, seed: seed, "Dk = Dv = 128")
        }
    }

    @Test(".scalar still runs the scalar kernels; shapes the tiles cannot cover say why; an explicit request is a typed error")
    func scalarAndUnfit() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        try withDevice { device in
            try requireCooperativeMatrix(device)
            let p = DeltaProblem(rng: &rng, gated: true, lengths: [40, 3], heads: 2, dk: 16, dv: 16, dtype: .f16)
            let scalar = try DeltaRun(p, device: device, dtype: .f16, outputType: .f32, chunk: 16, preference: .scalar)
            #expect(scalar.path.contains("scalar-f16") && !scalar.path.contains("coopmat-"), "\(scalar.path)")
            scalar.check(p, bound: 2e-5, seed: seed, "scalar")
            // Dv 12 is no multiple of 8: scalar, saying why.
            let unfit = DeltaProblem(rng: &rng, gated: false, lengths: [9], heads: 1, dk: 16, dv: 12, dtype: .f16)
            let run = try DeltaRun(unfit, device: device, dtype: .f16, outputType: .f32, chunk: 8, backward: false)
            #expect(run.path.contains("scalar-f16") && run.path.contains("no coopmat"), "\(run.path)")
            #expect(throws: VkAttnError.self) {
                _ = try DeltaRun(unfit, device: device, dtype: .f16, outputType: .f32, chunk: 8, backward: false, preference: .cooperativeMatrix)
            }
            // f32 inputs are never rounded to f16: an explicit request is a typed error.
            #expect(throws: VkAttnError.self) {
                _ = try DeltaRun(unfit, device: device, dtype: .f32, chunk: 8, backward: false, preference: .cooperativeMatrix)
            }
        }
    }
}
