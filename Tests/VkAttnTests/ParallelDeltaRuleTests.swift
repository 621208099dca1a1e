import Testing
import VkAttn
import VkAttnParallel
import TestSupport

/// The delta rule split over 1 to 4 ranks against the fp64 reference (so against one device),
/// every scheme, forward and backward with initial and final states, and its traffic against
/// the formula.
@Suite("Delta rule across ranks")
struct ParallelDeltaRuleTests {
    struct RankResult: Sendable {
        let o: [Float], final: [Float]?, dq: [Float], dk: [Float], dv: [Float], dbeta: [Float], dlog: [Float]?, dInitial: [Float]?
        let forwardBytes: Int
    }

    static let schemes: [ContextParallelScheme] = [.lasp, .lasp2, .zeco(segments: 3)]

    @Test("1 to 4 ranks, LASP, LASP-2 and ZeCO, gated and not, equal the reference",
          arguments: [1, 2, 3, 4], [true, false])
    func ranks(ranks: Int, gated: Bool) async throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        let (b, l, h, dk, dv) = (2, 37, 2, 8, 12)
        let p = DeltaProblem(rng: &rng, gated: gated, lengths: [l, l], heads: h, dk: dk, dv: dv)
        let fwd = p.reference.forward(q: p.q, k: p.k, v: p.v, beta: p.beta, logDecay: p.logDecay, initialState: p.initial)
        let grads = p.reference.backward(q: p.q, k: p.k, v: p.v, beta: p.beta, logDecay: p.logDecay, initialState: p.initial,
                                         dO: p.dO, dFinal: p.dFinal)
        try await withGroup(ranks: ranks) { group in
            let comms = try group.communicators()
            let lengths = ContextParallelLinearAttention.evenLengths(total: l, ranks: ranks)
            let split = try ContiguousSplit(lengths: lengths)
            for scheme in Self.schemes {
                let op = ContextParallelDeltaRule(lengths: lengths, scheme: scheme, deltaRule: DeltaRule(gated: gated, chunkLength: 4))
                let shape = ContextParallelDeltaRule.Shape(batch: b, heads: h, dk: dk, dv: dv)
                group.resetTraffic()
                let results = try await onEveryRank(comms) { comm -> RankResult in
                    let r = comm.rank, device = comm.device, lr = lengths[r]
                    func shard(_ x: [Float], _ width: Int) throws -> [Float] { try split.shard(x, outer: b, inner: width, rank: r) }
                    let q = try device.makeTensor(shard(p.q, h * dk), shape: [b, lr, h, dk])
                    let k = try device.makeTensor(shard(p.k, h * dk), shape: [b, lr, h, dk])
                    let v = try device.makeTensor(shard(p.v, h * dv), shape: [b, lr, h, dv])
                    let beta = try device.makeTensor(shard(p.beta, h), shape: [b, lr, h])
                    let g = try p.logDecay.map { try device.makeTensor(shard($0, h), shape: [b, lr, h]) }
                    let dO = try device.makeTensor(shard(p.dO, h * dv), shape: [b, lr, h, dv])
                    let state = [b, h, dk, dv]
                    let s0 = r == 0 ? try p.initial.map { try device.makeTensor($0, shape: state) } : nil
                    let dF = r == ranks - 1 ? try p.dFinal.map { try device.makeTensor($0, shape: state) } : nil
                    let out = try await op.forward(q: q, k: k, v: v, beta: beta, logDecay: g, initialState: s0, returnFinalState: true,
                                                   communicator: comm)
                    let sent = comm.traffic.bytesSent
                    let gr = try await op.backward(q: q, k: k, v: v, beta: beta, logDecay: g, incomingState: out.incomingState,
                                                   dOutput: dO, dFinalState: dF, communicator: comm)
                    return RankResult(o: try out.output.readFloats(), final: try out.finalState?.readFloats(), dq: try gr.dq.readFloats(),
                                      dk: try gr.dk.readFloats(), dv: try gr.dv.readFloats(), dbeta: try gr.dBeta.readFloats(),
                                      dlog: try gr.dLogDecay?.readFloats(), dInitial: try gr.dInitialState?.readFloats(), forwardBytes: sent)
                }
                func gather(_ parts: [[Float]], _ width: Int) throws -> [Float] { try split.unshard(parts, outer: b, inner: width) }
                let what = "\(ranks) ranks, \(scheme), gated \(gated), seed \(seed)"
                var pairs: [(String, [Float], [Double])] = [
                    ("o", try gather(results.map(\.o), h * dv), fwd.o), ("final", results.last?.final ?? [], fwd.final),
                    ("dq", try gather(results.map(\.dq), h * dk), grads.dq), ("dk", try gather(results.map(\.dk), h * dk), grads.dk),
                    ("dv", try gather(results.map(\.dv), h * dv), grads.dv), ("dbeta", try gather(results.map(\.dbeta), h), grads.dbeta),
                    ("dInitial", results.first?.dInitial ?? [], grads.dInitial),
                ]
                if gated { pairs.append(("dlogDecay", try gather(results.compactMap(\.dlog), h), grads.dlogDecay)) }
                for (name, got, want) in pairs {
                    let err = relativeError(got, want)
                    #expect(err <= 2e-5, "\(name): relative error \(err), \(what)")
                }
                let total = group.traffic.map(\.bytesSent)
                for r in 0..<ranks {
                    let forward = op.expectedBytesSent(rank: r, shape: shape, backward: false)
                    #expect(results[r].forwardBytes == forward, "rank \(r) sent \(results[r].forwardBytes) bytes forward, expected \(forward), \(what)")
                    let both = forward + op.expectedBytesSent(rank: r, shape: shape, backward: true)
                    #expect(total[r] == both, "rank \(r) sent \(total[r]) bytes in all, expected \(both), \(what)")
                }
            }
        }
    }

    @Test("the pair combine composes maps like the host reference")
    func combine() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        try withDevice { device in
            let scan = MatrixAffineScan(rows: 3, dk: 5, dv: 4)
            let a = rng.floats(scan.byteCount / 4), b = rng.floats(scan.byteCount / 4)
            let ta = try device.makeBuffer(a), tb = try device.makeBuffer(b), out = try device.makeBuffer(byteCount: scan.byteCount)
            let identity = try device.makeBuffer(byteCount: scan.byteCount)
            let stream = try device.makeStream()
            try scan.encode(earlier: ta.whole, later: tb.whole, into: out.whole, rows: 0..<3, on: stream)
            try scan.encodeIdentity(into: identity.whole, rows: 0..<3, on: stream)
            try stream.synchronize()
            let got = try out.read(Float.self, count: scan.byteCount / 4)
            let want = MatrixAffineScan.reference([a, b], dk: 5, dv: 4)
            #expect(relativeError(got, want) <= 1e-6, "seed \(seed)")
            let id = try identity.read(Float.self, count: scan.byteCount / 4)
            #expect(MatrixAffineScan.reference([id, b], dk: 5, dv: 4) == b.map(Double.init), "identity, seed \(seed)")
        }
    }

    @Test("empty problems (B, H, Dk or Dv zero) on 1 to 3 ranks: zero outputs, no kernel, nothing sent")
    func empty() async throws {
        for ranks in 1...3 {
            try await withGroup(ranks: ranks) { group in
                for (b, h, dk, dv) in [(0, 2, 4, 4), (1, 0, 4, 4), (1, 2, 0, 4), (1, 2, 4, 0)] {
                    let lengths = [Int](repeating: 3, count: ranks)
                    let op = ContextParallelDeltaRule(lengths: lengths, deltaRule: DeltaRule(gated: true))
                    #expect(op.isEmpty(ContextParallelDeltaRule.Shape(batch: b, heads: h, dk: dk, dv: dv)))
                    group.resetTraffic()
                    let paths = try await onEveryRank(try group.communicators()) { comm -> [String] in
                        let d = comm.device
                        let q = try d.makeTensor(shape: [b, 3, h, dk], dtype: .f32), v = try d.makeTensor(shape: [b, 3, h, dv], dtype: .f32)
                        let beta = try d.makeTensor(shape: [b, 3, h], dtype: .f32)
                        let out = try await op.forward(q: q, k: q, v: v, beta: beta, logDecay: beta, returnFinalState: true, communicator: comm)
                        let grads = try await op.backward(q: q, k: q, v: v, beta: beta, logDecay: beta, incomingState: out.incomingState,
                                                          dOutput: v, communicator: comm)
                        #expect(try out.output.readFloats().allSatisfy { $0 == 0 } && grads.dq.readFloats().allSatisfy { $0 == 0 })
                        return [out.path, grads.path]
                    }
                    #expect(paths.allSatisfy { $0 == ["empty (no kernel)", "empty (no kernel)"] }, "\(ranks) ranks \((b, h, dk, dv)): \(paths)")
                    #expect(group.traffic.allSatisfy { $0.bytesSent == 0 }, "\(ranks) ranks \((b, h, dk, dv)) sent bytes")
                }
            }
        }
    }

    @Test("bad configurations are typed errors before anything is posted")
    func validation() throws {
        let op = ContextParallelDeltaRule(lengths: [4, 0], deltaRule: DeltaRule(gated: true))
        let shape = ContextParallelDeltaRule.Shape(batch: 1, heads: 2, dk: 8, dv: 8)
        #expect(throws: VkAttnError.self) { try op.validate(shape, ranks: 2) }  // a rank without tokens
        #expect(throws: VkAttnError.self) { try op.validate(shape, ranks: 3) }  // rank count
        let ring = ContextParallelDeltaRule(lengths: [4, 4], scheme: .ring, deltaRule: DeltaRule(gated: true))
        #expect(throws: VkAttnError.self) { try ring.validate(shape, ranks: 2) }
        let zeco = ContextParallelDeltaRule(lengths: [4, 4], scheme: .zeco(segments: 3), deltaRule: DeltaRule(gated: true))
        #expect(throws: VkAttnError.self) { try zeco.validate(shape, ranks: 2) }  // 3 segments of 2 blocks
    }
}
