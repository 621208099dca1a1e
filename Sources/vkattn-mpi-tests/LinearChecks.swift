import VkAttn
import VkAttnReference
import VkAttnMPI
import VkAttnParallel

/// Elementwise bound of the in-process GLA and recurrence tests: |got - ref| <= tol * scale
/// per element. Returns the worst |got - ref| / (tol * scale), so a check passes at <= 1
/// (NaN, a wrong count: infinity).
func boundRatio(_ got: [Float], _ ref: [Double], scale: [Double], tol: Double) -> Double {
    guard got.count == ref.count, got.count == scale.count else { return .infinity }
    var worst = 0.0
    for i in got.indices {
        let err = abs(Double(got[i]) - ref[i])
        guard !err.isNaN else { return .infinity }
        worst = max(worst, err / (tol * scale[i] + 1e-30))
    }
    return worst
}

/// Rows [range) of every batch entry of x [B, L, width]: the middle part of the library's
/// contiguous split [before, range, after].
func rowsOf<T>(_ x: [T], batch: Int, length: Int, width: Int, _ range: Range<Int>) throws -> [T] {
    try ContiguousSplit(lengths: [range.lowerBound, range.count, length - range.upperBound]).shard(x, outer: batch, inner: width, rank: 1)
}

/// One GLA problem [B, L, H, *] with initial state and final-state gradient, the same on
/// every rank (seeded by rank 0's seed).
struct LinearCase {
    let gating: GatedLinearAttention.Gating
    let b: Int, l: Int, h: Int, dk: Int, dv: Int, chunk: Int
    let q: [Float], k: [Float], v: [Float], g: [Float]?, s0: [Float], dO: [Float], dFinal: [Float]

    init(gating: GatedLinearAttention.Gating, b: Int, l: Int, h: Int, dk: Int, dv: Int, chunk: Int, seed: UInt64) {
        var rng = SeededRandom(seed: seed)
        (self.gating, self.b, self.l, self.h, self.dk, self.dv, self.chunk) = (gating, b, l, h, dk, dv, chunk)
        q = rng.floats(b * l * h * dk)
        k = rng.floats(b * l * h * dk)
        v = rng.floats(b * l * h * dv)
        g = gating == .none ? nil : rng.floats(gating == .perHead ? b * l * h : b * l * h * dk, in: -1...0)
        s0 = rng.floats(b * h * dk * dv)
        dO = rng.floats(b * l * h * dv)
        dFinal = rng.floats(b * h * dk * dv)
    }

    var gateWidth: Int { gating == .perKey ? h * dk : h }
    var gateTail: [Int] { gating == .perKey ? [h, dk] : [h] }
    var state: [Int] { [b, h, dk, dv] }
    var attention: GatedLinearAttention { GatedLinearAttention(gating: gating, chunkLength: chunk) }
    /// GLAHarness's depth: 4 (L + Dk + Dv + chunk); the tolerance 8u per unit.
    var tol: Double { 8 * 0x1p-24 * Double(4 * (l + dk + dv + chunk)) }

    func rows<T>(_ x: [T], width: Int, _ range: Range<Int>) throws -> [T] { try rowsOf(x, batch: b, length: l, width: width, range) }

    /// The first `tokens` tokens as a problem of their own (the reference of an incoming state).
    func reference(tokens: Int) -> GLAReference { GLAReference(gating: gating, batch: b, length: tokens, heads: h, dk: dk, dv: dv) }

    /// The single-device GLA over the whole problem: o, final, dq, dk, dv, dg, dInitial.
    func single(_ device: Device) throws -> [String: [Float]] {
        let stream = try device.makeStream()
        let qT = try device.makeTensor(q, shape: [b, l, h, dk]), kT = try device.makeTensor(k, shape: [b, l, h, dk])
        let vT = try device.makeTensor(v, shape: [b, l, h, dv])
        let gT = try g.map { try device.makeTensor($0, shape: [b, l] + gateTail) }
        let s0T = try device.makeTensor(s0, shape: state)
        let o = try device.makeTensor(shape: [b, l, h, dv], dtype: .f32), final = try device.makeTensor(shape: state, dtype: .f32)
        try attention.forward(q: qT, k: kT, v: vT, logGates: gT, initialState: s0T, output: o, finalState: final, on: stream)
        let dq = try device.makeTensor(shape: [b, l, h, dk], dtype: .f32), dk = try device.makeTensor(shape: [b, l, h, dk], dtype: .f32)
        let dvT = try device.makeTensor(shape: [b, l, h, dv], dtype: .f32), ds0 = try device.makeTensor(shape: state, dtype: .f32)
        let dg = try gT.map { _ in try device.makeTensor(shape: [b, l] + gateTail, dtype: .f32) }
        try stream.barrier()
        try attention.backward(q: qT, k: kT, v: vT, logGates: gT, initialState: s0T, dOutput: try device.makeTensor(dO, shape: [b, l, h, dv]),
                               dFinalState: try device.makeTensor(dFinal, shape: state), dq: dq, dk: dk, dv: dvT, dLogGates: dg, dInitialState: ds0, on: stream)
        try stream.synchronize()
        var out = ["o": try o.readFloats(), "final": try final.readFloats(), "dq": try dq.readFloats(), "dk": try dk.readFloats(),
                   "dv": try dvT.readFloats(), "dInitial": try ds0.readFloats()]
        if let dg { out["dLogGates"] = try dg.readFloats() }
        return out
    }

    /// The scale of the gate gradient (GLAHarness.gateScale): the reverse cumulative sum of
    /// |q| |dq| + |k| |dk| plus the final-state term, from the reference run on absolute values.
    func gateScale(finalAbs: [Double], dqAbs: [Double], dkAbs: [Double]) -> [Double] {
        var scale = [Double](repeating: 0, count: b * l * gateWidth)
        for bb in 0..<b {
            for hh in 0..<h {
                var running = [Double](repeating: 0, count: dk)
                for i in 0..<dk {
                    for j in 0..<dv {
                        let e = ((bb * h + hh) * dk + i) * dv + j
                        running[i] += abs(Double(dFinal[e])) * finalAbs[e]
                    }
                }
                for t in stride(from: l - 1, through: 0, by: -1) {
                    var rowTotal = 0.0
                    for i in 0..<dk {
                        let at = ((bb * l + t) * h + hh) * dk + i
                        running[i] += abs(Double(q[at])) * dqAbs[at] + abs(Double(k[at])) * dkAbs[at]
                        if gating == .perKey { scale[at] = running[i] }
                        rowTotal += running[i]
                    }
                    if gating == .perHead { scale[(bb * l + t) * h + hh] = rowTotal }
                }
            }
        }
        return scale
    }
}

/// ContextParallelLinearAttention (LASP, LASP-2, ZeCO) across the processes against the fp64
/// reference and the single-device GLA, each rank checking its shard with the bounds of
/// ParallelLinearTests: 8u per unit of depth times the sum of absolute terms against the
/// reference, twice that against the one-device op.
enum LinearChecks {
    static let schemes: [ContextParallelScheme] = [.lasp, .lasp2, .zeco(segments: 4)]

    /// Uneven splits of `total` over `n` ranks: near-even, or skewed (a single-token shard, one
    /// of exactly one chunk, the rest last).
    static func lengths(total: Int, ranks n: Int, skewed: Bool) -> [Int] {
        guard skewed, n > 1 else { return ContextParallelLinearAttention.evenLengths(total: total, ranks: n) }
        let head = (0..<(n - 1)).map { [1, 8, 3][$0 % 3] }
        return head + [total - head.reduce(0, +)]
    }

    static func run(_ comm: MPICommunicator, _ report: Report) async throws {
        for (i, (gating, skewed)) in [(GatedLinearAttention.Gating.none, false), (.perHead, true), (.perKey, true)].enumerated() {
            let c = LinearCase(gating: gating, b: 2, l: 37, h: 3, dk: 5, dv: 4, chunk: 8, seed: report.seed &+ 10 &+ UInt64(i))
            try await check(comm, report, c, lengths: lengths(total: c.l, ranks: comm.size, skewed: skewed))
        }
    }

    static func check(_ comm: MPICommunicator, _ report: Report, _ c: LinearCase, lengths: [Int]) async throws {
        let r = comm.rank, n = comm.size, device = comm.device
        let mine = try ContiguousSplit(lengths: lengths).range(rank: r), start = mine.lowerBound
        let absf: ([Float]) -> [Float] = { $0.map { abs($0) } }
        let ref = c.reference(tokens: c.l)
        let fwd = ref.forward(q: c.q, k: c.k, v: c.v, logGates: c.g, initialState: c.s0)
        let fwdAbs = ref.forward(q: absf(c.q), k: absf(c.k), v: absf(c.v), logGates: c.g, initialState: absf(c.s0))
        let bwd = ref.backward(q: c.q, k: c.k, v: c.v, logGates: c.g, initialState: c.s0, dO: c.dO, dFinal: c.dFinal)
        let bwdAbs = ref.backward(q: absf(c.q), k: absf(c.k), v: absf(c.v), logGates: c.g, initialState: absf(c.s0), dO: absf(c.dO),
                                  dFinal: absf(c.dFinal))
        let gScale = c.gateScale(finalAbs: fwdAbs.final, dqAbs: bwdAbs.dq, dkAbs: bwdAbs.dk)
        // The state entering this rank: the reference's state after the tokens before it.
        let prefix = 0..<start
        let pre = c.reference(tokens: start)
        let hk = c.h * c.dk, hv = c.h * c.dv
        let incoming = r == 0 ? (c.s0.map(Double.init), c.s0.map { abs(Double($0)) }) : try (
            pre.forward(q: c.rows(c.q, width: hk, prefix), k: c.rows(c.k, width: hk, prefix), v: c.rows(c.v, width: hv, prefix),
                        logGates: c.g.map { try c.rows($0, width: c.gateWidth, prefix) }, initialState: c.s0).final,
            pre.forward(q: absf(c.rows(c.q, width: hk, prefix)), k: absf(c.rows(c.k, width: hk, prefix)), v: absf(c.rows(c.v, width: hv, prefix)),
                        logGates: c.g.map { try c.rows($0, width: c.gateWidth, prefix) }, initialState: absf(c.s0)).final)
        let single = try c.single(device)
        // Expected values of this rank's outputs: (reference, scale, one device).
        var want: [(String, [Double], [Double], [Float])] = try [
            ("o", c.rows(fwd.o, width: hv, mine), c.rows(fwdAbs.o, width: hv, mine), c.rows(single["o"] ?? [], width: hv, mine)),
            ("dq", c.rows(bwd.dq, width: hk, mine), c.rows(bwdAbs.dq, width: hk, mine), c.rows(single["dq"] ?? [], width: hk, mine)),
            ("dk", c.rows(bwd.dk, width: hk, mine), c.rows(bwdAbs.dk, width: hk, mine), c.rows(single["dk"] ?? [], width: hk, mine)),
            ("dv", c.rows(bwd.dv, width: hv, mine), c.rows(bwdAbs.dv, width: hv, mine), c.rows(single["dv"] ?? [], width: hv, mine)),
        ]
        if c.g != nil {
            let w = c.gateWidth
            want.append(try ("dLogGates", c.rows(bwd.dLogGates, width: w, mine), c.rows(gScale, width: w, mine),
                         c.rows(single["dLogGates"] ?? [], width: w, mine)))
        }
        if r == n - 1 { want.append(("final", fwd.final, fwdAbs.final, single["final"] ?? [])) }
        if r == 0 { want.append(("dInitial", bwd.dInitial, bwdAbs.dInitial, single["dInitial"] ?? [])) }

        let lr = lengths[r]
        let q = try device.makeTensor(c.rows(c.q, width: hk, mine), shape: [c.b, lr, c.h, c.dk])
        let k = try device.makeTensor(c.rows(c.k, width: hk, mine), shape: [c.b, lr, c.h, c.dk])
        let v = try device.makeTensor(c.rows(c.v, width: hv, mine), shape: [c.b, lr, c.h, c.dv])
        let g = try c.g.map { try device.makeTensor(try c.rows($0, width: c.gateWidth, mine), shape: [c.b, lr] + c.gateTail) }
        let dO = try device.makeTensor(c.rows(c.dO, width: hv, mine), shape: [c.b, lr, c.h, c.dv])
        let s0 = r == 0 ? try device.makeTensor(c.s0, shape: c.state) : nil
        let dFinal = r == n - 1 ? try device.makeTensor(c.dFinal, shape: c.state) : nil
        for scheme in schemes {
            let op = ContextParallelLinearAttention(lengths: lengths, scheme: scheme, attention: c.attention)
            let before = comm.traffic.bytesSent
            let out = try await op.forward(q: q, k: k, v: v, logGates: g, initialState: s0, returnFinalState: true, communicator: comm)
            let between = comm.traffic.bytesSent
            let grads = try await op.backward(q: q, k: k, v: v, logGates: g, incomingState: out.incomingState, dOutput: dO,
                                              dFinalState: dFinal, communicator: comm)
            let sent = (forward: between - before, backward: comm.traffic.bytesSent - between)
            var got = ["o": try out.output.readFloats(), "dq": try grads.dq.readFloats(), "dk": try grads.dk.readFloats(),
                       "dv": try grads.dv.readFloats()]
            if let x = grads.dLogGates { got["dLogGates"] = try x.readFloats() }
            if let x = out.finalState { got["final"] = try x.readFloats() }
            if let x = grads.dInitialState { got["dInitial"] = try x.readFloats() }
            let what = "linear \(scheme) \(c.gating) x\(n) lengths \(lengths)"
            report.expect("\(what) paths", out.path.contains("\(scheme)") && out.path.contains("correction kernel")
                            && grads.path.contains("state-gradient kernel") && grads.path.contains("over the reversed ranks"),
                          "\(out.path) | \(grads.path)")
            report.expect("\(what) final state only on the last rank, dInitial only on rank 0",
                          (out.finalState != nil) == (r == n - 1) && (grads.dInitialState != nil) == (r == 0))
            for (name, reference, scale, one) in want {
                let x = got[name] ?? []
                report.expect("\(what) \(name) vs fp64 (error / bound)", error: boundRatio(x, reference, scale: scale, tol: c.tol), bound: 1)
                report.expect("\(what) \(name) vs one device (error / bound)",
                              error: boundRatio(x, one.map(Double.init), scale: scale, tol: 2 * c.tol), bound: 1)
            }
            // Bytes: a chain sends one value B H Dk (Dv + 1) fp32 per hop (none from the rank the
            // flow reaches last: the last rank forward, rank 0 backward); LASP-2 hands its value
            // to MPI_Iexscan on every rank (the point-to-point all-gather would send N - 1).
            let shape = ContextParallelLinearAttention.Shape(batch: c.b, heads: c.h, dk: c.dk, dv: c.dv)
            let want = (forward: MPICommunicator.expectedBytesSent(of: op, rank: r, shape: shape, backward: false),
                        backward: MPICommunicator.expectedBytesSent(of: op, rank: r, shape: shape, backward: true))
            if n > 1 {
                report.expect("\(what) bytes sent", sent == want, "forward \(sent.forward), backward \(sent.backward), expected \(want)")
            }
            report.expect("\(what) incoming state vs fp64 (error / bound)",
                          error: boundRatio(try required(out.incomingState, "incomingState").readFloats(), incoming.0, scale: incoming.1, tol: c.tol), bound: 1)
        }
    }
}

/// A tensor every linear forward returns (the incoming state), or a failure naming it.
func required(_ tensor: Tensor?, _ what: String) throws -> Tensor {
    guard let tensor else { throw VkAttnError.invalidValue(op: ContextParallelLinearAttention.opName, operand: what, reason: "the forward returned none") }
    return tensor
}
