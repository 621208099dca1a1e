import Testing
import VkAttn
import VkAttnReference
import TestSupport

/// Sequence lengths that probe a packed batch: empty sequences, length 1, lengths at and
/// around the chunk length `c`, and primes.
func varlenLengths(chunk c: Int) -> [Int] { [0, 1, c - 1, c, c + 1, 0, 2 * c + 3, 7, 1, 13] }

/// Cumulative offsets of `lengths`, from 0.
func cumulative(_ lengths: [Int]) -> [Int32] { lengths.reduce(into: [Int32(0)]) { $0.append($0.last! + Int32($1)) } }

/// Packed (cu_seqlens) GLA against each sequence run on its own by the fp64 reference.
extension GLAHarness {
    mutating func runPacked(_ op: GatedLinearAttention, lengths: [Int], h: Int, dk: Int, dv: Int, states: Bool, dtype: DType = .f32) throws {
        let cu = cumulative(lengths)
        let (n, t) = (lengths.count, lengths.reduce(0, +))
        let round = dtype.rounded
        let rounding = Self.rounding(dtype)
        let q = rng.floats(t * h * dk).map(round), k = rng.floats(t * h * dk).map(round), v = rng.floats(t * h * dv).map(round)
        let gateShape = op.gating == .perHead ? [1, t, h] : [1, t, h, dk]
        let g = op.gating == .none ? nil : logGates(gateShape.reduce(1, *), .mixed)
        let s0 = states ? rng.floats(n * h * dk * dv) : nil
        let what = "packed \(op.gating) chunk \(op.chunkLength(on: device)) lengths \(lengths) H \(h) Dk \(dk) Dv \(dv) states \(states) \(dtype)"
        let qT = try device.makeTensor(q, shape: [1, t, h, dk], dtype: dtype), kT = try device.makeTensor(k, shape: [1, t, h, dk], dtype: dtype)
        let vT = try device.makeTensor(v, shape: [1, t, h, dv], dtype: dtype)
        let gT = try g.map { try device.makeTensor($0, shape: gateShape) }
        let s0T = try s0.map { try device.makeTensor($0, shape: [n, h, dk, dv]) }
        let c = op.chunkLength(on: device)
        let chunks = lengths.reduce(0) { $0 + ($1 + c - 1) / c }
        let oT = try poisoned([1, t, h, dv], dtype: dtype), finalT = try poisoned([n, h, dk, dv])
        let boundariesT = try poisoned([1, h, chunks + n, dk, dv])
        let stream = try device.makeStream()
        let dispatch = try op.forward(q: qT, k: kT, v: vT, logGates: gT, initialState: s0T, output: oT, finalState: finalT,
                                      chunkStates: boundariesT, cuSeqlens: cu, on: stream)
        #expect(dispatch.chunks == chunks, "\(what)")
        try stream.synchronize()
        let abs: ([Float]) -> [Float] = { $0.map { Swift.abs($0) } }
        let ref = GLAReference.packedForward(gating: op.gating, heads: h, dk: dk, dv: dv, cuSeqlens: cu, q: q, k: k, v: v, logGates: g, initialState: s0)
        let refAbs = GLAReference.packedForward(gating: op.gating, heads: h, dk: dk, dv: dv, cuSeqlens: cu, q: abs(q), k: abs(k), v: abs(v),
                                                logGates: g, initialState: s0.map(abs))
        let depth = 4 * ((lengths.max() ?? 0) + dk + dv + c)
        Self.check(try oT.readFloats(), ref.o, scale: refAbs.o, depth: depth, seed: seed, "o " + what, rounding: rounding)
        Self.check(try finalT.readFloats(), ref.final, scale: refAbs.final, depth: depth, seed: seed, "final " + what, rounding: rounding)
        // Boundary states per chunk table: [1, H, chunks + N, Dk, Dv], sequence n owning its chunks + 1 slots.
        var boundaries: [Double] = [], boundariesAbs: [Double] = []
        for hh in 0..<h {
            for s in 0..<n {
                let (a, e) = (Int(cu[s]), Int(cu[s + 1]))
                let one = GLAReference(gating: op.gating, batch: 1, length: e - a, heads: h, dk: dk, dv: dv)
                let gw = op.gating == .perKey ? h * dk : h
                let rows = { (x: [Float], w: Int) in Array(x[(a * w)..<(e * w)]) }
                let slots = (e - a + c - 1) / c + 1
                let width = slots * dk * dv
                let r = one.forward(q: rows(q, h * dk), k: rows(k, h * dk), v: rows(v, h * dv), logGates: g.map { rows($0, gw) },
                                    initialState: s0.map { Array($0[(s * h * dk * dv)..<((s + 1) * h * dk * dv)]) }, chunkLength: c)
                let rAbs = one.forward(q: abs(rows(q, h * dk)), k: abs(rows(k, h * dk)), v: abs(rows(v, h * dv)), logGates: g.map { rows($0, gw) },
                                       initialState: s0.map { abs(Array($0[(s * h * dk * dv)..<((s + 1) * h * dk * dv)])) }, chunkLength: c)
                boundaries += r.boundaries[(hh * width)..<((hh + 1) * width)]
                boundariesAbs += rAbs.boundaries[(hh * width)..<((hh + 1) * width)]
            }
        }
        Self.check(try boundariesT.readFloats(), boundaries, scale: boundariesAbs, depth: depth, seed: seed, "boundaries " + what, rounding: rounding)

        let dO = rng.floats(t * h * dv).map(round)
        let dFinal = states ? rng.floats(n * h * dk * dv) : nil
        let dOT = try device.makeTensor(dO, shape: [1, t, h, dv], dtype: dtype)
        let dFinalT = try dFinal.map { try device.makeTensor($0, shape: [n, h, dk, dv]) }
        let dqT = try poisoned([1, t, h, dk], dtype: dtype), dkT = try poisoned([1, t, h, dk], dtype: dtype)
        let dvT = try poisoned([1, t, h, dv], dtype: dtype)
        let dgT = try op.gating == .none ? nil : poisoned(gateShape)
        let ds0T = try poisoned([n, h, dk, dv])
        try op.backward(q: qT, k: kT, v: vT, logGates: gT, initialState: s0T, dOutput: dOT, dFinalState: dFinalT,
                        dq: dqT, dk: dkT, dv: dvT, dLogGates: dgT, dInitialState: ds0T, cuSeqlens: cu, on: stream)
        try stream.synchronize()
        let grads = GLAReference.packedBackward(gating: op.gating, heads: h, dk: dk, dv: dv, cuSeqlens: cu, q: q, k: k, v: v,
                                                logGates: g, initialState: s0, dO: dO, dFinal: dFinal)
        let gradsAbs = GLAReference.packedBackward(gating: op.gating, heads: h, dk: dk, dv: dv, cuSeqlens: cu, q: abs(q), k: abs(k), v: abs(v),
                                                   logGates: g, initialState: s0.map(abs), dO: abs(dO), dFinal: dFinal.map(abs))
        Self.check(try dqT.readFloats(), grads.dq, scale: gradsAbs.dq, depth: depth, seed: seed, "dq " + what, rounding: rounding)
        Self.check(try dkT.readFloats(), grads.dk, scale: gradsAbs.dk, depth: depth, seed: seed, "dk " + what, rounding: rounding)
        Self.check(try dvT.readFloats(), grads.dv, scale: gradsAbs.dv, depth: depth, seed: seed, "dv " + what, rounding: rounding)
        Self.check(try ds0T.readFloats(), grads.dInitial, scale: gradsAbs.dInitial, depth: depth, seed: seed, "dInitial " + what, rounding: rounding)
        if let dgT {
            var scale: [Double] = []
            for s in 0..<n {
                let (a, e) = (Int(cu[s]), Int(cu[s + 1]))
                let sw = h * dk * dv
                let finalAbs = Array(refAbs.final[(s * sw)..<((s + 1) * sw)])
                scale += Self.gateScale(gating: op.gating, b: 1, l: e - a, h: h, dk: dk, dv: dv,
                                        q: Array(q[(a * h * dk)..<(e * h * dk)]), k: Array(k[(a * h * dk)..<(e * h * dk)]),
                                        dFinal: dFinal.map { Array($0[(s * sw)..<((s + 1) * sw)]) }, finalAbs: finalAbs,
                                        dqAbs: Array(gradsAbs.dq[(a * h * dk)..<(e * h * dk)]), dkAbs: Array(gradsAbs.dk[(a * h * dk)..<(e * h * dk)]))
            }
            Self.check(try dgT.readFloats(), grads.dLogGates, scale: scale, depth: depth, seed: seed, "dLogGates " + what, rounding: rounding)
        }
    }
}

@Suite("Packed variable-length batches (cu_seqlens): gated linear attention")
struct LinearAttentionVarlenTests {
    @Test(arguments: GatedLinearAttention.Gating.allCases)
    func packedEqualsPerSequence(gating: GatedLinearAttention.Gating) throws {
        let seed = testSeed()
        try withDevice { device in
            var h = GLAHarness(device: device, seed: seed)
            for (chunk, heads, dk, dv, states) in [(4, 2, 3, 5, true), (8, 1, 8, 4, false), (16, 3, 5, 9, true)] {
                let op = GatedLinearAttention(gating: gating, chunkLength: chunk)
                try h.runPacked(op, lengths: varlenLengths(chunk: chunk), h: heads, dk: dk, dv: dv, states: states)
            }
            // One sequence, only empty sequences, and a lone length-1 sequence between empties.
            let op = GatedLinearAttention(gating: gating, chunkLength: 8)
            try h.runPacked(op, lengths: [29], h: 2, dk: 4, dv: 4, states: true)
            try h.runPacked(op, lengths: [0, 0, 0], h: 2, dk: 4, dv: 4, states: true)
            try h.runPacked(op, lengths: [0, 1, 0], h: 2, dk: 4, dv: 4, states: false)
        }
    }

    @Test(arguments: [DType.f16, .bf16])
    func packedHalfWidth(dtype: DType) throws {
        let seed = testSeed()
        try withDevice { device in
            var h = GLAHarness(device: device, seed: seed)
            for gating in [GatedLinearAttention.Gating.perHead, .perKey] {
                try h.runPacked(GatedLinearAttention(gating: gating, chunkLength: 16), lengths: varlenLengths(chunk: 16), h: 2, dk: 16, dv: 16,
                                states: true, dtype: dtype)
            }
        }
    }

    @Test func badCuSeqlensThrowTypedErrors() throws {
        try withDevice { device in
            let stream = try device.makeStream()
            let name = GatedLinearAttention.opName
            let (t, h, dk, dv) = (10, 2, 4, 3)
            let q = try device.makeTensor(shape: [1, t, h, dk], dtype: .f32), k = try device.makeTensor(shape: [1, t, h, dk], dtype: .f32)
            let v = try device.makeTensor(shape: [1, t, h, dv], dtype: .f32), o = try device.makeTensor(shape: [1, t, h, dv], dtype: .f32)
            let g = try device.makeTensor(shape: [1, t, h], dtype: .f32)
            let op = GatedLinearAttention(gating: .perHead)
            #expect(throws: VkAttnError.invalidValue(op: name, operand: "cuSeqlens", reason: "must start at 0, got 1")) {
                try op.forward(q: q, k: k, v: v, logGates: g, output: o, cuSeqlens: [1, 10], on: stream)
            }
            #expect(throws: VkAttnError.invalidValue(op: name, operand: "cuSeqlens", reason: "decreases at index 2 (6 -> 4): not monotonic")) {
                try op.forward(q: q, k: k, v: v, logGates: g, output: o, cuSeqlens: [0, 6, 4, 10], on: stream)
            }
            #expect(throws: VkAttnError.invalidValue(op: name, operand: "cuSeqlens", reason: "ends at 9 but the tensor has 10 tokens")) {
                try op.forward(q: q, k: k, v: v, logGates: g, output: o, cuSeqlens: [0, 9], on: stream)
            }
            #expect(throws: VkAttnError.invalidValue(op: name, operand: "cuSeqlens", reason: "needs batch + 1 entries ([0] for no sequences), got none")) {
                try op.forward(q: q, k: k, v: v, logGates: g, output: o, cuSeqlens: [], on: stream)
            }
            let q2 = try device.makeTensor(shape: [2, 5, h, dk], dtype: .f32)
            #expect(throws: VkAttnError.shapeMismatch(op: name, operand: "q", expected: "[1, T, H, Dk] with cuSeqlens (packed sequences)", actual: "[2, 5, 2, 4]")) {
                try op.forward(q: q2, k: q2, v: try device.makeTensor(shape: [2, 5, h, dv], dtype: .f32),
                               logGates: try device.makeTensor(shape: [2, 5, h], dtype: .f32),
                               output: try device.makeTensor(shape: [2, 5, h, dv], dtype: .f32), cuSeqlens: [0, 5, 10], on: stream)
            }
            #expect(throws: VkAttnError.shapeMismatch(op: name, operand: "initialState", expected: "[3, 2, 4, 3]", actual: "[1, 2, 4, 3]")) {
                try op.forward(q: q, k: k, v: v, logGates: g, initialState: try device.makeTensor(shape: [1, h, dk, dv], dtype: .f32),
                               output: o, cuSeqlens: [0, 3, 3, 10], on: stream)
            }
            #expect(throws: VkAttnError.shapeMismatch(op: name, operand: "finalState", expected: "[3, 2, 4, 3]", actual: "[1, 2, 4, 3]")) {
                try op.forward(q: q, k: k, v: v, logGates: g, output: o, finalState: try device.makeTensor(shape: [1, h, dk, dv], dtype: .f32),
                               cuSeqlens: [0, 3, 3, 10], on: stream)
            }
            #expect(stream.dispatchesRecorded == 0)
            try stream.synchronize()
        }
    }
}

/// Packed (cu_seqlens) recurrences against each sequence run on its own by the fp64 reference.
extension RecurrenceHarness {
    mutating func runPacked(_ op: LinearRecurrence, lengths: [Int], channels: Int, withH0: Bool) throws {
        let cu = cumulative(lengths)
        let (n, t) = (lengths.count, lengths.reduce(0, +))
        let cw = op.complex ? 2 : 1
        let shape = (op.layout == .bld ? [1, t, channels] : [1, channels, t]) + (op.complex ? [2] : [])
        let stateShape = [n, channels] + (op.complex ? [2] : [])
        let a = coefficients(t * channels, complex: op.complex, decay: .mixed)
        let b = rng.floats(t * channels * cw)
        let h0 = withH0 ? rng.floats(n * channels * cw) : nil
        let what = "packed \(op.layout) complex \(op.complex) reverse \(op.reverse) \(op.algorithm.map(\.rawValue) ?? "default") chunk \(op.chunkLength.map(String.init) ?? "auto") lengths \(lengths) D \(channels) h0 \(withH0)"
        let aT = try tensor(a, shape), bT = try tensor(b, shape)
        let h0T = try h0.map { try tensor($0, stateShape) }
        let hT = try poisoned(shape), finalT = try poisoned(stateShape)
        let stream = try device.makeStream()
        try op.forward(a: aT, b: bT, h0: h0T, h: hT, finalState: finalT, cuSeqlens: cu, on: stream)
        try stream.synchronize()
        let ref = PackedRecurrenceReference(layout: op.layout, complex: op.complex, reverse: op.reverse, channels: channels, cuSeqlens: cu)
        let (h, final) = ref.forward(a: a, b: b, h0: h0)
        let m = ref.magnitude(a: a, b: b, h0: h0)
        let steps = lengths.max() ?? 0
        let gotH = try hT.readFloats()
        Self.check(gotH, h, scale: m, steps: steps, seed: seed, "h " + what)
        let mMax = (m + (h0 ?? []).map { Swift.abs(Double($0)) }).max() ?? 1
        Self.check(try finalT.readFloats(), final, scale: final.map { _ in mMax }, steps: steps, seed: seed, "final " + what)

        let dh = rng.floats(t * channels * cw)
        let dFinal = withH0 ? rng.floats(n * channels * cw) : nil
        let dhT = try tensor(dh, shape)
        let dFinalT = try dFinal.map { try tensor($0, stateShape) }
        let daT = try poisoned(shape), dbT = try poisoned(shape), dh0T = try poisoned(stateShape)
        try op.backward(a: aT, h: hT, h0: h0T, dh: dhT, dFinal: dFinalT, da: daT, db: dbT, dh0: dh0T, cuSeqlens: cu, on: stream)
        try stream.synchronize()
        let (da, db, dh0) = ref.backward(a: a, h: gotH, h0: h0, dh: dh, dFinal: dFinal)
        let gScale = ref.gradientMagnitude(a: a, dh: dh, dFinal: dFinal)
        let hMax = (gotH + (h0 ?? [])).map { Swift.abs(Double($0)) }.max() ?? 1
        Self.check(try dbT.readFloats(), db, scale: gScale.map { $0 * 2 }, steps: steps, seed: seed, "db " + what)
        Self.check(try daT.readFloats(), da, scale: gScale.map { $0 * 2 * max(hMax, 1e-3) }, steps: steps, seed: seed, "da " + what)
        let gMax = max(gScale.max() ?? 1, (dFinal ?? []).map { Swift.abs(Double($0)) }.max() ?? 0)
        Self.check(try dh0T.readFloats(), dh0, scale: dh0.map { _ in gMax * 2 }, steps: steps, seed: seed, "dh0 " + what)
    }
}

@Suite("Packed variable-length batches (cu_seqlens): linear recurrence")
struct RecurrenceVarlenTests {
    @Test(arguments: 0..<4, RecurrenceAlgorithm.allCases)
    func packedEqualsPerSequence(caseIndex: Int, path: RecurrenceAlgorithm) throws {
        let seed = testSeed()
        let (layout, complex) = RecurrenceTests.cases[caseIndex]
        try withDevice { device in
            var h = RecurrenceHarness(device: device, seed: seed)
            for reverse in [false, true] {
                for (chunk, channels, withH0) in [(8, 3, true), (4, 8, false)] {
                    let op = LinearRecurrence(layout: layout, complex: complex, reverse: reverse, algorithm: path, chunkLength: chunk)
                    try h.runPacked(op, lengths: varlenLengths(chunk: chunk), channels: channels, withH0: withH0)
                }
                let op = LinearRecurrence(layout: layout, complex: complex, reverse: reverse, algorithm: path)
                try h.runPacked(op, lengths: [0, 0], channels: 4, withH0: true)
                try h.runPacked(op, lengths: [1], channels: 4, withH0: true)
                try h.runPacked(op, lengths: [300, 0, 1, 129], channels: 4, withH0: true)
            }
        }
    }

    @Test func badCuSeqlensThrowTypedErrors() throws {
        try withDevice { device in
            let stream = try device.makeStream()
            let name = LinearRecurrence.opName
            let op = LinearRecurrence(layout: .bld)
            let a = try device.makeTensor(shape: [1, 10, 4], dtype: .f32), b = try device.makeTensor(shape: [1, 10, 4], dtype: .f32)
            let h = try device.makeTensor(shape: [1, 10, 4], dtype: .f32)
            #expect(throws: VkAttnError.invalidValue(op: name, operand: "cuSeqlens", reason: "ends at 9 but the tensor has 10 tokens")) {
                try op.forward(a: a, b: b, h: h, cuSeqlens: [0, 9], on: stream)
            }
            #expect(throws: VkAttnError.invalidValue(op: name, operand: "cuSeqlens", reason: "decreases at index 2 (6 -> 4): not monotonic")) {
                try op.forward(a: a, b: b, h: h, cuSeqlens: [0, 6, 4, 10], on: stream)
            }
            #expect(throws: VkAttnError.shapeMismatch(op: name, operand: "h0", expected: "[2, 4]", actual: "[1, 4]")) {
                try op.forward(a: a, b: b, h0: try device.makeTensor(shape: [1, 4], dtype: .f32), h: h, cuSeqlens: [0, 6, 10], on: stream)
            }
            let a2 = try device.makeTensor(shape: [2, 5, 4], dtype: .f32)
            #expect(throws: VkAttnError.shapeMismatch(op: name, operand: "a", expected: "[1, T, D] with cuSeqlens (packed sequences)", actual: "[2, 5, 4]")) {
                try op.forward(a: a2, b: a2, h: try device.makeTensor(shape: [2, 5, 4], dtype: .f32), cuSeqlens: [0, 5, 10], on: stream)
            }
            #expect(throws: VkAttnError.invalidValue(op: name, operand: "h", reason: "overlaps b")) {
                try op.forward(a: a, b: b, h: b, cuSeqlens: [0, 10], on: stream)
            }
            #expect(throws: VkAttnError.invalidValue(op: name, operand: "cuSeqlens", reason: "must start at 0, got 2")) {
                try op.backward(a: a, h: h, dh: b, da: try device.makeTensor(shape: [1, 10, 4], dtype: .f32),
                                db: try device.makeTensor(shape: [1, 10, 4], dtype: .f32), cuSeqlens: [2, 10], on: stream)
            }
            #expect(stream.dispatchesRecorded == 0)
            try stream.synchronize()
        }
    }
}

@Suite("Packed variable-length batches (cu_seqlens): no tokens")
struct VarlenEmptyTests {
    /// Only empty sequences (T = 0): no dispatch; the final states are the initial ones
    /// (copies), the initial states' gradients the final states' (copies).
    @Test func onlyEmptySequencesRecordNoDispatch() throws {
        try withDevice { device in
            let cu: [Int32] = [0, 0, 0]
            let (h, dk, dv, d) = (2, 3, 4, 5)
            let stream = try device.makeStream()
            let gla = GatedLinearAttention(gating: .perHead)
            let q = try device.makeTensor(shape: [1, 0, h, dk], dtype: .f32), v = try device.makeTensor(shape: [1, 0, h, dv], dtype: .f32)
            let g = try device.makeTensor(shape: [1, 0, h], dtype: .f32)
            let s0 = try device.makeTensor((0..<(2 * h * dk * dv)).map(Float.init), shape: [2, h, dk, dv])
            let final = try device.makeTensor(shape: [2, h, dk, dv], dtype: .f32)
            try gla.forward(q: q, k: q, v: v, logGates: g, initialState: s0, output: v, finalState: final, cuSeqlens: cu, on: stream)
            let rec = LinearRecurrence(layout: .bld)
            let a = try device.makeTensor(shape: [1, 0, d], dtype: .f32)
            let h0 = try device.makeTensor((0..<(2 * d)).map(Float.init), shape: [2, d]), hf = try device.makeTensor(shape: [2, d], dtype: .f32)
            try rec.forward(a: a, b: a, h0: h0, h: try device.makeTensor(shape: [1, 0, d], dtype: .f32), finalState: hf, cuSeqlens: cu, on: stream)
            let dh0 = try device.makeTensor(shape: [2, d], dtype: .f32)
            try rec.backward(a: a, h: a, h0: h0, dh: a, dFinal: h0, da: try device.makeTensor(shape: [1, 0, d], dtype: .f32),
                             db: try device.makeTensor(shape: [1, 0, d], dtype: .f32), dh0: dh0, cuSeqlens: cu, on: stream)
            #expect(stream.dispatchesRecorded == 0)
            try stream.synchronize()
            #expect(try final.readFloats() == s0.readFloats())
            #expect(try hf.readFloats() == h0.readFloats() && dh0.readFloats() == h0.readFloats())
        }
    }
}
