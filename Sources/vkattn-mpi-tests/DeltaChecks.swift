import VkAttn
import VkAttnMPI
import VkAttnParallel
import VkAttnReference

/// The delta rule across processes (`ContextParallelDeltaRule` over MPI): every scheme on near-even
/// and skewed splits, each rank's outputs against the fp64 reference of the whole problem
/// (relative L2 <= 2e-5, ParallelDeltaRuleTests' bound), the final state on the last rank, dS_0 on
/// rank 0, and the bytes each rank sends against the formula (the pairs go point to point).
enum DeltaChecks {
    static func run(_ comm: MPICommunicator, _ report: Report) async throws {
        for (i, (gated, skewed)) in [(true, false), (false, true)].enumerated() {
            try await check(comm, report, gated: gated, seed: report.seed &+ 40 &+ UInt64(i),
                            lengths: LinearChecks.lengths(total: 37, ranks: comm.size, skewed: skewed))
        }
    }

    static func check(_ comm: MPICommunicator, _ report: Report, gated: Bool, seed: UInt64, lengths: [Int]) async throws {
        let (b, l, h, dk, dv) = (2, lengths.reduce(0, +), 2, 6, 5)
        var rng = SeededRandom(seed: seed)
        let q = DeltaRuleReference.l2Normalised(rng.floats(b * l * h * dk), width: dk)
        let k = DeltaRuleReference.l2Normalised(rng.floats(b * l * h * dk), width: dk)
        let v = rng.floats(b * l * h * dv), beta = rng.floats(b * l * h, in: 0...1)
        let g: [Float]? = gated ? rng.floats(b * l * h, in: -1...0) : nil
        let s0 = rng.floats(b * h * dk * dv), dO = rng.floats(b * l * h * dv), dFinal = rng.floats(b * h * dk * dv)
        let ref = DeltaRuleReference(gated: gated, lengths: [l, l], heads: h, dk: dk, dv: dv)
        let fwd = ref.forward(q: q, k: k, v: v, beta: beta, logDecay: g, initialState: s0)
        let bwd = ref.backward(q: q, k: k, v: v, beta: beta, logDecay: g, initialState: s0, dO: dO, dFinal: dFinal)

        let r = comm.rank, n = comm.size, device = comm.device, lr = lengths[r]
        let mine = try ContiguousSplit(lengths: lengths).range(rank: r)
        func rows<T>(_ x: [T], _ width: Int) throws -> [T] { try rowsOf(x, batch: b, length: l, width: width, mine) }
        let qT = try device.makeTensor(rows(q, h * dk), shape: [b, lr, h, dk]), kT = try device.makeTensor(rows(k, h * dk), shape: [b, lr, h, dk])
        let vT = try device.makeTensor(rows(v, h * dv), shape: [b, lr, h, dv]), betaT = try device.makeTensor(rows(beta, h), shape: [b, lr, h])
        let gT = try g.map { try device.makeTensor(rows($0, h), shape: [b, lr, h]) }
        let dOT = try device.makeTensor(rows(dO, h * dv), shape: [b, lr, h, dv])
        let state = [b, h, dk, dv]
        let s0T = r == 0 ? try device.makeTensor(s0, shape: state) : nil
        let dFT = r == n - 1 ? try device.makeTensor(dFinal, shape: state) : nil
        let shape = ContextParallelDeltaRule.Shape(batch: b, heads: h, dk: dk, dv: dv)
        for scheme in LinearChecks.schemes {
            let op = ContextParallelDeltaRule(lengths: lengths, scheme: scheme, deltaRule: DeltaRule(gated: gated, chunkLength: 4))
            let before = comm.traffic.bytesSent
            let out = try await op.forward(q: qT, k: kT, v: vT, beta: betaT, logDecay: gT, initialState: s0T, returnFinalState: true,
                                           communicator: comm)
            let between = comm.traffic.bytesSent
            let grads = try await op.backward(q: qT, k: kT, v: vT, beta: betaT, logDecay: gT, incomingState: out.incomingState,
                                              dOutput: dOT, dFinalState: dFT, communicator: comm)
            let sent = (forward: between - before, backward: comm.traffic.bytesSent - between)
            let what = "delta rule \(scheme) gated \(gated) x\(n) lengths \(lengths)"
            var pairs: [(String, [Float], [Double])] = [
                ("o", try out.output.readFloats(), try rows(fwd.o, h * dv)), ("dq", try grads.dq.readFloats(), try rows(bwd.dq, h * dk)),
                ("dk", try grads.dk.readFloats(), try rows(bwd.dk, h * dk)), ("dv", try grads.dv.readFloats(), try rows(bwd.dv, h * dv)),
                ("dbeta", try grads.dBeta.readFloats(), try rows(bwd.dbeta, h)),
            ]
            if let x = grads.dLogDecay { pairs.append(("dlogDecay", try x.readFloats(), try rows(bwd.dlogDecay, h))) }
            if let x = out.finalState { pairs.append(("final", try x.readFloats(), fwd.final)) }
            if let x = grads.dInitialState { pairs.append(("dInitial", try x.readFloats(), bwd.dInitial)) }
            report.expect("\(what) final state only on the last rank, dInitial only on rank 0",
                          (out.finalState != nil) == (r == n - 1) && (grads.dInitialState != nil) == (r == 0))
            for (name, got, want) in pairs {
                report.expect("\(what) \(name) vs fp64 (relative L2)", error: relativeError(got, want), bound: 2e-5)
            }
            let want = (forward: op.expectedBytesSent(rank: r, shape: shape, backward: false),
                        backward: op.expectedBytesSent(rank: r, shape: shape, backward: true))
            report.expect("\(what) bytes sent", sent == want, "forward \(sent.forward), backward \(sent.backward), expected \(want)")
        }
    }
}
