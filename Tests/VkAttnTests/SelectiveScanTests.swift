import Testing
import VkAttn
import TestSupport

/// Mamba-1's selective scan against the step-by-step fp64 reference (`MambaReference`).
///
/// Error bound: every output is a sum of products of fp32 inputs, decays and their gradients;
/// evaluated in fp32 in any order it errs by a few units of u = 2^-24 per term on its longest
/// path, relative to the same sum of absolute terms (`MambaReference(absolute: true)`). The
/// depth is below 4 (L + N + Dch + chunk) (the adjoint runs over L, the reductions over N, the
/// channel blocks and the chunks), and 8u per unit of depth leaves room for exp's few ulps.
struct SelectiveScanHarness {
    let device: Device
    let seed: UInt64
    var rng: SeededRandom

    init(device: Device, seed: UInt64) {
        self.device = device
        self.seed = seed
        rng = SeededRandom(seed: seed)
    }

    struct Options {
        var D = true, z = true, bias = true, softplus = true, states = true
    }

    struct Problem {
        var inputs: MambaReference.Inputs
        var dOut: [Float], dFinal: [Float]?
        var cu: [Int]
        var batch: Int, length: Int, channels: Int, state: Int
        var packed: Bool
        /// x, delta, z, B, C, dOut and out (values rounded to it).
        var dtype: DType = .f32
    }

    struct Results {
        var out: [Float], final: [Float]
        var dx: [Float], dDelta: [Float], dA: [Float], dB: [Float], dC: [Float], dD: [Float], dz: [Float], dBias: [Float], dInitial: [Float]
    }

    /// `rounding`: the unit roundoff of a 16-bit output (0 for f32); `floor`: an absolute error
    /// allowed besides (f16's subnormal spacing, 2^-24, for f16 outputs).
    static func check(_ got: [Float], _ ref: [Double], scale: [Double], depth: Int, seed: UInt64, _ what: String, rounding: Double = 0,
                      floor: Double = 0) {
        #expect(got.count == ref.count, "\(what): \(got.count) values, reference \(ref.count), seed \(seed)")
        let tol = 8 * 0x1p-24 * Double(depth) + 8 * rounding
        var bad = -1
        for i in got.indices where i < ref.count && !(abs(Double(got[i]) - ref[i]) <= tol * scale[i] + floor + 1e-30) {
            bad = i
            break
        }
        #expect(bad < 0, "\(what): element \(bad) of \(got.count) is \(bad >= 0 ? got[bad] : 0), reference \(bad >= 0 ? ref[bad] : 0), scale \(bad >= 0 ? scale[bad] : 0), seed \(seed)")
    }

    /// A random problem: a dense batch [batch, length] or, with `lengths`, one packed batch.
    mutating func problem(batch: Int, length: Int, lengths: [Int]? = nil, channels: Int, state: Int, _ o: Options, dtype: DType = .f32) -> Problem {
        let cu: [Int] = lengths.map { l in l.reduce(into: [0]) { $0.append($0.last! + $1) } } ?? (0...batch).map { $0 * length }
        let T = cu.last!, S = cu.count - 1
        let inputs = MambaReference.Inputs(
            x: rng.floats(T * channels), delta: o.softplus ? rng.floats(T * channels, in: -3...1) : rng.floats(T * channels, in: 0.01...0.5),
            A: rng.floats(channels * state, in: -2 ... -0.1), B: rng.floats(T * state), C: rng.floats(T * state),
            D: o.D ? rng.floats(channels) : nil, z: o.z ? rng.floats(T * channels, in: -3...3) : nil,
            deltaBias: o.bias ? rng.floats(channels, in: -0.3...0.3) : nil, initial: o.states ? rng.floats(S * channels * state) : nil)
        let r = dtype.rounded
        var rounded = inputs
        (rounded.x, rounded.delta, rounded.B, rounded.C, rounded.z) = (inputs.x.map(r), inputs.delta.map(r), inputs.B.map(r), inputs.C.map(r), inputs.z?.map(r))
        return Problem(inputs: rounded, dOut: rng.floats(T * channels).map(r), dFinal: o.states ? rng.floats(S * channels * state) : nil, cu: cu,
                       batch: lengths == nil ? batch : 1, length: lengths == nil ? length : T, channels: channels, state: state,
                       packed: lengths != nil, dtype: dtype)
    }

    func poisoned(_ shape: [Int], dtype: DType = .f32) throws -> Tensor {
        try device.makeTensor([Float](repeating: .nan, count: shape.reduce(1, *)), shape: shape, dtype: dtype)
    }

    /// Runs forward and backward on the device with NaN-prefilled outputs.
    func run(_ op: SelectiveScan, _ p: Problem, expectPath: String? = nil) throws -> Results {
        let (b, l, dc, n, S) = (p.batch, p.length, p.channels, p.state, p.cu.count - 1)
        let i = p.inputs
        let t = { (v: [Float], shape: [Int]) in try device.makeTensor(v, shape: shape) }
        let h = { (v: [Float], shape: [Int]) in try device.makeTensor(v, shape: shape, dtype: p.dtype) }
        let x = try h(i.x, [b, l, dc]), delta = try h(i.delta, [b, l, dc]), A = try t(i.A, [dc, n])
        let B = try h(i.B, [b, l, n]), C = try h(i.C, [b, l, n])
        let D = try i.D.map { try t($0, [dc]) }, z = try i.z.map { try h($0, [b, l, dc]) }
        let bias = try i.deltaBias.map { try t($0, [dc]) }, h0 = try i.initial.map { try t($0, [S, dc, n]) }
        let cu = p.packed ? p.cu.map { Int32($0) } : nil
        let out = try poisoned([b, l, dc], dtype: p.dtype), final = try poisoned([S, dc, n])
        let stream = try device.makeStream()
        let fw = try op.forward(x: x, delta: delta, A: A, B: B, C: C, D: D, z: z, deltaBias: bias, initialState: h0, cuSeqlens: cu,
                                output: out, finalState: final, on: stream)
        if let expectPath { #expect(fw.path.contains(expectPath), "\(fw.path), seed \(seed)") }
        let dOut = try h(p.dOut, [b, l, dc]), dFinal = try p.dFinal.map { try t($0, [S, dc, n]) }
        let dx = try poisoned([b, l, dc]), dDelta = try poisoned([b, l, dc]), dA = try poisoned([dc, n])
        let dB = try poisoned([b, l, n]), dC = try poisoned([b, l, n])
        let dD = try D.map { _ in try poisoned([dc]) }, dz = try z.map { _ in try poisoned([b, l, dc]) }
        let dBias = try bias.map { _ in try poisoned([dc]) }, dInit = try poisoned([S, dc, n])
        try op.backward(x: x, delta: delta, A: A, B: B, C: C, D: D, z: z, deltaBias: bias, initialState: h0, cuSeqlens: cu,
                        dOutput: dOut, dFinalState: dFinal, dx: dx, dDelta: dDelta, dA: dA, dB: dB, dC: dC, dD: dD, dz: dz,
                        dDeltaBias: dBias, dInitialState: dInit, on: stream)
        try stream.synchronize()
        return Results(out: try out.readFloats(), final: try final.readFloats(), dx: try dx.readFloats(), dDelta: try dDelta.readFloats(),
                       dA: try dA.readFloats(), dB: try dB.readFloats(), dC: try dC.readFloats(), dD: try dD?.readFloats() ?? [],
                       dz: try dz?.readFloats() ?? [], dBias: try dBias?.readFloats() ?? [], dInitial: try dInit.readFloats())
    }

    /// Runs `p` and checks every output against the reference.
    @discardableResult
    func runAndCheck(_ op: SelectiveScan, _ p: Problem, _ what: String) throws -> Results {
        let r = try run(op, p, expectPath: "/\(p.dtype.rawValue)")
        let ref = MambaReference(channels: p.channels, state: p.state, deltaSoftplus: op.deltaSoftplus)
        let (o, f) = ref.forward(p.inputs, cuSeqlens: p.cu)
        let (oS, fS) = ref.forward(p.inputs, cuSeqlens: p.cu, absolute: true)
        let longest = zip(p.cu.dropFirst(), p.cu).map { $0 - $1 }.max() ?? 0
        let depth = 4 * (longest + p.state + p.channels + (op.chunkLength ?? 64))
        let w = "\(what) \(p.dtype) [\(p.batch), \(p.length), \(p.channels), \(p.state)] cu \(p.packed ? "\(p.cu)" : "dense")"
        let rounding = p.dtype == .f16 ? 0x1p-11 : p.dtype == .bf16 ? 0x1p-8 : 0
        Self.check(r.out, o, scale: oS, depth: depth, seed: seed, "out " + w, rounding: rounding, floor: p.dtype == .f16 ? 0x1p-24 : 0)
        Self.check(r.final, f, scale: fS, depth: depth, seed: seed, "final " + w)
        let g = ref.backward(p.inputs, cuSeqlens: p.cu, dOut: p.dOut, dFinal: p.dFinal)
        let s = ref.backward(p.inputs, cuSeqlens: p.cu, dOut: p.dOut, dFinal: p.dFinal, absolute: true)
        let bigDepth = depth + 4 * (p.cu.last ?? 0)  // dA, dD and dDeltaBias sum over every row
        Self.check(r.dx, g.dx, scale: s.dx, depth: depth, seed: seed, "dx " + w)
        Self.check(r.dDelta, g.dDelta, scale: s.dDelta, depth: depth, seed: seed, "dDelta " + w)
        Self.check(r.dA, g.dA, scale: s.dA, depth: bigDepth, seed: seed, "dA " + w)
        Self.check(r.dB, g.dB, scale: s.dB, depth: depth, seed: seed, "dB " + w)
        Self.check(r.dC, g.dC, scale: s.dC, depth: depth, seed: seed, "dC " + w)
        Self.check(r.dD, g.dD, scale: s.dD, depth: bigDepth, seed: seed, "dD " + w)
        Self.check(r.dz, g.dz, scale: s.dz, depth: depth, seed: seed, "dz " + w)
        Self.check(r.dBias, g.dDeltaBias, scale: s.dDeltaBias, depth: bigDepth, seed: seed, "dDeltaBias " + w)
        Self.check(r.dInitial, g.dInitial, scale: s.dInitial, depth: depth, seed: seed, "dInitial " + w)
        return r
    }
}

@Suite("Mamba selective scan")
struct SelectiveScanTests {
    /// Awkward sizes (L = 1, primes, chunk boundaries, N not a power of two, channels past a
    /// block of 64), every optional input on and off.
    @Test func awkwardShapesForwardAndBackward() throws {
        let seed = testSeed()
        try withDevice { device in
            var h = SelectiveScanHarness(device: device, seed: seed)
            let all = SelectiveScanHarness.Options()
            let bare = SelectiveScanHarness.Options(D: false, z: false, bias: false, softplus: false, states: false)
            for (b, l, dc, n, chunk, o) in [(1, 1, 1, 1, nil, all), (2, 7, 3, 5, 4, all), (1, 37, 5, 16, 8, bare), (2, 23, 67, 3, nil, all),
                                             (1, 64, 4, 16, 16, all), (1, 29, 2, 70, 5, all), (1, 13, 3, 0, nil, all), (1, 9, 2, 256, nil, all)]
                as [(Int, Int, Int, Int, Int?, SelectiveScanHarness.Options)] {
                let op = SelectiveScan(deltaSoftplus: o.softplus, chunkLength: chunk)
                try h.runAndCheck(op, h.problem(batch: b, length: l, channels: dc, state: n, o), "chunk \(chunk ?? 0)")
            }
        }
    }

    /// A packed batch (sequences of 0 and 1 rows among others) against the reference and
    /// against one run per sequence: row outputs and states equal bit for bit.
    @Test func packedBatchEqualsPerSequenceRuns() throws {
        let seed = testSeed()
        try withDevice { device in
            var h = SelectiveScanHarness(device: device, seed: seed)
            let lengths = [5, 1, 0, 13, 1, 0, 9]
            let (dc, n) = (6, 4)
            let op = SelectiveScan(deltaSoftplus: true, chunkLength: 4)
            let p = h.problem(batch: 1, length: 0, lengths: lengths, channels: dc, state: n, .init())
            let packed = try h.runAndCheck(op, p, "packed")
            for (s, len) in lengths.enumerated() where len > 0 {
                let (lo, hi) = (p.cu[s], p.cu[s + 1])
                let rows = { (v: [Float], w: Int) in Array(v[(lo * w)..<(hi * w)]) }
                let state = { (v: [Float]) in Array(v[(s * dc * n)..<((s + 1) * dc * n)]) }
                let i = p.inputs
                let one = SelectiveScanHarness.Problem(
                    inputs: .init(x: rows(i.x, dc), delta: rows(i.delta, dc), A: i.A, B: rows(i.B, n), C: rows(i.C, n), D: i.D,
                                  z: i.z.map { rows($0, dc) }, deltaBias: i.deltaBias, initial: i.initial.map(state)),
                    dOut: rows(p.dOut, dc), dFinal: p.dFinal.map(state), cu: [0, len], batch: 1, length: len, channels: dc, state: n, packed: false)
                let r = try h.run(op, one)
                let what = "sequence \(s) of \(lengths), seed \(seed)"
                #expect(r.out == rows(packed.out, dc), "out \(what)")
                #expect(r.final == state(packed.final), "final \(what)")
                #expect(r.dx == rows(packed.dx, dc) && r.dDelta == rows(packed.dDelta, dc) && r.dz == rows(packed.dz, dc), "dx/dDelta/dz \(what)")
                #expect(r.dB == rows(packed.dB, n) && r.dC == rows(packed.dC, n), "dB/dC \(what)")
                #expect(r.dInitial == state(packed.dInitial), "dInitial \(what)")
            }
            // Empty sequences pass their states through.
            for s in [2, 5] {
                let range = (s * dc * n)..<((s + 1) * dc * n)
                #expect(Array(packed.final[range]) == Array(p.inputs.initial![range]).map { $0 }, "final of empty sequence \(s), seed \(seed)")
                #expect(Array(packed.dInitial[range]) == Array(p.dFinal![range]), "dInitial of empty sequence \(s), seed \(seed)")
            }
        }
    }

    /// 16-bit x, delta, z, B, C, dOut and out (gradients, A, D, the bias and the states f32).
    @Test(arguments: [DType.f16, .bf16])
    func halfWidthInputs(dtype: DType) throws {
        let seed = testSeed()
        try withDevice { device in
            var h = SelectiveScanHarness(device: device, seed: seed)
            for (b, l, dc, n, chunk) in [(1, 1, 2, 3, nil), (2, 19, 5, 16, 4), (1, 70, 3, 8, nil)] as [(Int, Int, Int, Int, Int?)] {
                try h.runAndCheck(SelectiveScan(deltaSoftplus: true, chunkLength: chunk),
                                  h.problem(batch: b, length: l, channels: dc, state: n, .init(), dtype: dtype), "chunk \(chunk ?? 0)")
            }
            try h.runAndCheck(SelectiveScan(deltaSoftplus: true, chunkLength: 4),
                              h.problem(batch: 1, length: 0, lengths: [3, 1, 0, 8], channels: 4, state: 5, .init(), dtype: dtype), "packed")
        }
    }

    /// The optional gradients (dz, dD, dDeltaBias, dInitialState) skipped: the others are the
    /// same bits as with them.
    @Test func optionalGradientsMayBeSkipped() throws {
        let seed = testSeed()
        try withDevice { device in
            var h = SelectiveScanHarness(device: device, seed: seed)
            let p = h.problem(batch: 2, length: 11, channels: 3, state: 4, .init())
            let op = SelectiveScan(deltaSoftplus: true, chunkLength: 4)
            let full = try h.run(op, p)
            let i = p.inputs
            let t = { (v: [Float], shape: [Int]) in try device.makeTensor(v, shape: shape) }
            let (b, l, dc, n) = (2, 11, 3, 4)
            let dx = try h.poisoned([b, l, dc]), dDelta = try h.poisoned([b, l, dc]), dA = try h.poisoned([dc, n])
            let dB = try h.poisoned([b, l, n]), dC = try h.poisoned([b, l, n])
            let stream = try device.makeStream()
            try op.backward(x: t(i.x, [b, l, dc]), delta: t(i.delta, [b, l, dc]), A: t(i.A, [dc, n]), B: t(i.B, [b, l, n]), C: t(i.C, [b, l, n]),
                            D: t(i.D!, [dc]), z: t(i.z!, [b, l, dc]), deltaBias: t(i.deltaBias!, [dc]), initialState: t(i.initial!, [b, dc, n]),
                            dOutput: t(p.dOut, [b, l, dc]), dFinalState: t(p.dFinal!, [b, dc, n]),
                            dx: dx, dDelta: dDelta, dA: dA, dB: dB, dC: dC, on: stream)
            try stream.synchronize()
            #expect(try dx.readFloats() == full.dx && dDelta.readFloats() == full.dDelta && dA.readFloats() == full.dA, "seed \(seed)")
            #expect(try dB.readFloats() == full.dB && dC.readFloats() == full.dC, "seed \(seed)")
        }
    }

    /// A longer sequence with the default chunks (several chunks, the carry pass at work).
    @Test func defaultChunksOverALongerSequence() throws {
        let seed = testSeed()
        try withDevice { device in
            var h = SelectiveScanHarness(device: device, seed: seed)
            try h.runAndCheck(SelectiveScan(deltaSoftplus: true), h.problem(batch: 2, length: 211, channels: 8, state: 16, .init()), "default")
        }
    }

    /// The reference backward against central finite differences of the reference forward.
    @Test func referenceBackwardMatchesFiniteDifferences() throws {
        let seed = testSeed()
        try withDevice { device in
        var h = SelectiveScanHarness(device: device, seed: seed)
        let p = h.problem(batch: 1, length: 0, lengths: [4, 0, 3], channels: 2, state: 3, .init())
        let ref = MambaReference(channels: 2, state: 3, deltaSoftplus: true)
        let g = ref.backward(p.inputs, cuSeqlens: p.cu, dOut: p.dOut, dFinal: p.dFinal)
        func loss(_ i: MambaReference.Inputs) -> Double {
            let (o, f) = ref.forward(i, cuSeqlens: p.cu)
            return zip(o, p.dOut).reduce(0) { $0 + $1.0 * Double($1.1) } + zip(f, p.dFinal!).reduce(0) { $0 + $1.0 * Double($1.1) }
        }
        let eps: Float = 1e-3
        func fd(_ k: WritableKeyPath<MambaReference.Inputs, [Float]>, _ j: Int) -> Double {
            var up = p.inputs, down = p.inputs
            up[keyPath: k][j] += eps
            down[keyPath: k][j] -= eps
            return (loss(up) - loss(down)) / Double(2 * eps)
        }
        func fdOpt(_ k: WritableKeyPath<MambaReference.Inputs, [Float]?>, _ j: Int) -> Double {
            var up = p.inputs, down = p.inputs
            up[keyPath: k]![j] += eps
            down[keyPath: k]![j] -= eps
            return (loss(up) - loss(down)) / Double(2 * eps)
        }
        func close(_ a: Double, _ b: Double, _ what: String) {
            #expect(abs(a - b) <= 2e-3 * max(1, abs(b)), "\(what): adjoint \(a), finite difference \(b), seed \(seed)")
        }
        for j in [0, 5, 13] {
            close(g.dx[j], fd(\.x, j), "dx[\(j)]")
            close(g.dDelta[j], fd(\.delta, j), "dDelta[\(j)]")
            close(g.dz[j], fdOpt(\.z, j), "dz[\(j)]")
        }
        for j in [0, 4, 20] {
            close(g.dB[j], fd(\.B, j), "dB[\(j)]")
            close(g.dC[j], fd(\.C, j), "dC[\(j)]")
        }
        for j in [0, 5] { close(g.dA[j], fd(\.A, j), "dA[\(j)]") }
        for j in [0, 1] {
            close(g.dD[j], fdOpt(\.D, j), "dD[\(j)]")
            close(g.dDeltaBias[j], fdOpt(\.deltaBias, j), "dDeltaBias[\(j)]")
        }
        for j in [0, 7, 17] { close(g.dInitial[j], fdOpt(\.initial, j), "dInitial[\(j)]") }
        }
    }
}

@Suite("Mamba selective scan: bad and empty inputs")
struct SelectiveScanValidationTests {
    @Test func badInputsThrowTypedErrors() throws {
        try withDevice { device in
            let stream = try device.makeStream()
            let name = SelectiveScan.opName
            let (b, l, dc, n) = (1, 10, 4, 3)
            let f = { (shape: [Int]) in try device.makeTensor(shape: shape, dtype: .f32) }
            let x = try f([b, l, dc]), delta = try f([b, l, dc]), A = try f([dc, n]), B = try f([b, l, n]), C = try f([b, l, n])
            let out = try f([b, l, dc])
            let op = SelectiveScan()
            #expect(throws: VkAttnError.shapeMismatch(op: name, operand: "x", expected: "[B, L, Dch]", actual: "[10, 4]")) {
                try op.forward(x: try f([l, dc]), delta: delta, A: A, B: B, C: C, output: out, on: stream)
            }
            #expect(throws: VkAttnError.shapeMismatch(op: name, operand: "A", expected: "[4, N]", actual: "[3, 3]")) {
                try op.forward(x: x, delta: delta, A: try f([3, 3]), B: B, C: C, output: out, on: stream)
            }
            #expect(throws: VkAttnError.shapeMismatch(op: name, operand: "C", expected: "[1, 10, 3]", actual: "[1, 10, 4]")) {
                try op.forward(x: x, delta: delta, A: A, B: B, C: try f([b, l, 4]), output: out, on: stream)
            }
            #expect(throws: VkAttnError.dtypeMismatch(op: name, operand: "delta", expected: "f32", actual: "f16")) {
                try op.forward(x: x, delta: try device.makeTensor(shape: [b, l, dc], dtype: .f16), A: A, B: B, C: C, output: out, on: stream)
            }
            #expect(throws: VkAttnError.shapeMismatch(op: name, operand: "D", expected: "[4]", actual: "[3]")) {
                try op.forward(x: x, delta: delta, A: A, B: B, C: C, D: try f([3]), output: out, on: stream)
            }
            #expect(throws: VkAttnError.unsupported(op: name, reason: "state sizes N up to 256 (A is [4, 257])")) {
                try op.forward(x: x, delta: delta, A: try f([dc, 257]), B: try f([b, l, 257]), C: try f([b, l, 257]), output: out, on: stream)
            }
            #expect(throws: VkAttnError.invalidValue(op: name, operand: "output", reason: "overlaps x")) {
                try op.forward(x: x, delta: delta, A: A, B: B, C: C, output: x, on: stream)
            }
            #expect(throws: VkAttnError.shapeMismatch(op: name, operand: "finalState", expected: "[2, 4, 3]", actual: "[1, 4, 3]")) {
                try op.forward(x: x, delta: delta, A: A, B: B, C: C, cuSeqlens: [0, 4, 10], output: out, finalState: try f([1, dc, n]), on: stream)
            }
            #expect(throws: VkAttnError.invalidValue(op: name, operand: "chunkLength", reason: "0 must be at least 1")) {
                try SelectiveScan(chunkLength: 0).forward(x: x, delta: delta, A: A, B: B, C: C, output: out, on: stream)
            }
            // cu_seqlens: not from 0, decreasing, not ending at T, none; a dense batch of 2.
            for (cu, reason) in [([1, 10], "must start at 0, got 1"), ([0, 6, 5, 10], "decreases at index 2 (6 -> 5): not monotonic"),
                                 ([0, 9], "ends at 9 but the tensor has 10 tokens"), ([], "needs batch + 1 entries ([0] for no sequences), got none")]
                as [([Int32], String)] {
                #expect(throws: VkAttnError.invalidValue(op: name, operand: "cuSeqlens", reason: reason)) {
                    try op.forward(x: x, delta: delta, A: A, B: B, C: C, cuSeqlens: cu, output: out, on: stream)
                }
            }
            let x2 = try f([2, 5, dc])
            #expect(throws: VkAttnError.shapeMismatch(op: name, operand: "x", expected: "[1, T, Dch] with cuSeqlens (one packed batch)", actual: "[2, 5, 4]")) {
                try op.forward(x: x2, delta: x2, A: A, B: try f([2, 5, n]), C: try f([2, 5, n]), cuSeqlens: [0, 10], output: try f([2, 5, dc]), on: stream)
            }
            // Backward: gradients of inputs the forward did not have, wrong shapes.
            let g = { try f([b, l, dc]) }
            #expect(throws: VkAttnError.invalidValue(op: name, operand: "dz", reason: "given, but the forward had no z")) {
                try op.backward(x: x, delta: delta, A: A, B: B, C: C, dOutput: out, dx: try g(), dDelta: try g(), dA: try f([dc, n]),
                                dB: try f([b, l, n]), dC: try f([b, l, n]), dz: try g(), on: stream)
            }
            #expect(throws: VkAttnError.shapeMismatch(op: name, operand: "dA", expected: "[4, 3]", actual: "[3, 4]")) {
                try op.backward(x: x, delta: delta, A: A, B: B, C: C, dOutput: out, dx: try g(), dDelta: try g(), dA: try f([n, dc]),
                                dB: try f([b, l, n]), dC: try f([b, l, n]), on: stream)
            }
            #expect(stream.dispatchesRecorded == 0)
            // Lavapipe's loop cap: the carry pass walks a sequence's chunks in one invocation.
            if device.capabilities.type == .cpu {
                let long = try f([1, 60_000, 1]), Bl = try f([1, 60_000, 1])
                let error = #expect(throws: VkAttnError.self) {
                    try SelectiveScan(chunkLength: 1).forward(x: long, delta: long, A: try f([1, 1]), B: Bl, C: Bl, output: try f([1, 60_000, 1]), on: stream)
                }
                #expect("\(error.map { "\($0)" } ?? "")".contains("60000 chunks in one sequence exceed the loop cap"), "\(String(describing: error))")
                try SelectiveScan(chunkLength: 2).forward(x: long, delta: long, A: try f([1, 1]), B: Bl, C: Bl, output: try f([1, 60_000, 1]), on: stream)
                #expect(stream.dispatchesRecorded > 0)
                try stream.synchronize()
            }
        }
    }

    /// No rows or no channels: no kernel; final states are the initial ones (copies) or zero
    /// (fills), gradients of A, B, C, D and the bias zero, dInitial dFinal.
    @Test func emptyInputsRecordNoKernel() throws {
        try withDevice { device in
            let (dc, n) = (3, 2)
            let f = { (shape: [Int]) in try device.makeTensor([Float](repeating: .nan, count: shape.reduce(1, *)), shape: shape) }
            let op = SelectiveScan(deltaSoftplus: true)
            for (b, l, cu) in [(2, 0, nil), (1, 0, [0, 0, 0] as [Int32]?)] as [(Int, Int, [Int32]?)] {
                let S = cu.map { $0.count - 1 } ?? b
                let stream = try device.makeStream()
                let x = try f([b, l, dc]), A = try f([dc, n]), B = try f([b, l, n])
                let h0Values = (0..<(S * dc * n)).map { Float($0) + 0.5 }
                let h0 = try device.makeTensor(h0Values, shape: [S, dc, n])
                let final = try f([S, dc, n]), zeroFinal = try f([S, dc, n])
                try op.forward(x: x, delta: x, A: A, B: B, C: B, D: f([dc]), z: x, deltaBias: f([dc]), initialState: h0, cuSeqlens: cu,
                               output: f([b, l, dc]), finalState: final, on: stream)
                try op.forward(x: x, delta: x, A: A, B: B, C: B, cuSeqlens: cu, output: f([b, l, dc]), finalState: zeroFinal, on: stream)
                let dA = try f([dc, n]), dD = try f([dc]), dBias = try f([dc]), dInit = try f([S, dc, n])
                try op.backward(x: x, delta: x, A: A, B: B, C: B, D: f([dc]), z: x, deltaBias: f([dc]), initialState: h0, cuSeqlens: cu,
                                dOutput: f([b, l, dc]), dFinalState: h0, dx: f([b, l, dc]), dDelta: f([b, l, dc]), dA: dA, dB: f([b, l, n]),
                                dC: f([b, l, n]), dD: dD, dz: f([b, l, dc]), dDeltaBias: dBias, dInitialState: dInit, on: stream)
                try stream.synchronize()
                EmptyInputTests.expectRecorded(stream, fills: 4, copies: 2, "selective scan [\(b), \(l)] cu \(cu ?? [])")
                #expect(try final.readFloats() == h0Values)
                #expect(try zeroFinal.readFloats() == [Float](repeating: 0, count: S * dc * n))
                #expect(try dInit.readFloats() == h0Values)
                #expect(try dA.readFloats() + dD.readFloats() + dBias.readFloats() == [Float](repeating: 0, count: dc * n + 2 * dc))
            }
            // No channels: every tensor but B and C (and their zero gradients) is empty.
            let stream = try device.makeStream()
            let x = try f([1, 4, 0]), B = try f([1, 4, n])
            let dB = try f([1, 4, n])
            try op.forward(x: x, delta: x, A: f([0, n]), B: B, C: B, output: f([1, 4, 0]), finalState: f([1, 0, n]), on: stream)
            try op.backward(x: x, delta: x, A: f([0, n]), B: B, C: B, dOutput: f([1, 4, 0]), dx: f([1, 4, 0]), dDelta: f([1, 4, 0]),
                            dA: f([0, n]), dB: dB, dC: f([1, 4, n]), on: stream)
            try stream.synchronize()
            EmptyInputTests.expectRecorded(stream, fills: 2, "selective scan with no channels")
            #expect(try dB.readFloats() == [Float](repeating: 0, count: 4 * n))
        }
    }
}
