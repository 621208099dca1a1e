import Testing
import VkAttn
import VkAttnParallel
import TestSupport

/// A global GLA problem [B, L, H, *] on the host, sharded contiguously over ranks.
struct LinearProblem: Sendable {
    let gating: GatedLinearAttention.Gating
    let b: Int, l: Int, h: Int, dk: Int, dv: Int
    let q: [Float], k: [Float], v: [Float], g: [Float]?, s0: [Float]?, dO: [Float], dFinal: [Float]?

    init(gating: GatedLinearAttention.Gating, b: Int, l: Int, h: Int, dk: Int, dv: Int, states: Bool, seed: UInt64) {
        var rng = SeededRandom(seed: seed)
        (self.gating, self.b, self.l, self.h, self.dk, self.dv) = (gating, b, l, h, dk, dv)
        q = rng.floats(b * l * h * dk)
        k = rng.floats(b * l * h * dk)
        v = rng.floats(b * l * h * dv)
        g = gating == .none ? nil : rng.floats(gating == .perHead ? b * l * h : b * l * h * dk, in: -1...0)
        s0 = states ? rng.floats(b * h * dk * dv) : nil
        dO = rng.floats(b * l * h * dv)
        dFinal = states ? rng.floats(b * h * dk * dv) : nil
    }

    var gateShapeTail: [Int] { gating == .perKey ? [h, dk] : [h] }
    var reference: GLAReference { GLAReference(gating: gating, batch: b, length: l, heads: h, dk: dk, dv: dv) }

    /// Rank `rank`'s tokens under `split` of every batch entry of x [B, L, width].
    func shard(_ x: [Float], width: Int, _ split: ContiguousSplit, rank: Int) throws -> [Float] {
        try split.shard(x, outer: b, inner: width, rank: rank)
    }

    /// The inverse of `shard` over all ranks.
    func unshard(_ parts: [[Float]], width: Int, _ split: ContiguousSplit) throws -> [Float] {
        try split.unshard(parts, outer: b, inner: width)
    }
}

/// What every rank returns, gathered into global layouts.
struct LinearResult {
    var o: [Float], final: [Float]?, dq: [Float], dk: [Float], dv: [Float], dg: [Float]?, dInitial: [Float]?
    var incoming: [[Float]]
    var paths: [String]
}

struct RankLinearResult: Sendable {
    let o: [Float], final: [Float]?, incoming: [Float], dq: [Float], dk: [Float], dv: [Float], dg: [Float]?, dInitial: [Float]?
    let path: String
}

/// Every rank's forward then backward. `poisoned`: every output is a caller-provided NaN tensor
/// inside guard words (`into:`), so a result that matches proves each element written and none
/// outside.
func runParallelLinear(_ p: LinearProblem, comms: [LocalCommunicator], scheme: ContextParallelScheme, chunk: Int?,
                       lengths custom: [Int]? = nil, poisoned: Bool = false) async throws -> LinearResult {
    let n = comms.count
    let lengths = custom ?? ContextParallelLinearAttention.evenLengths(total: p.l, ranks: n)
    let split = try ContiguousSplit(lengths: lengths)
    let op = ContextParallelLinearAttention(lengths: lengths, scheme: scheme, attention: GatedLinearAttention(gating: p.gating, chunkLength: chunk))
    let ranks = try await onEveryRank(comms) { comm -> RankLinearResult in
        let r = comm.rank, device = comm.device, lr = lengths[r]
        let q = try device.makeTensor(p.shard(p.q, width: p.h * p.dk, split, rank: r), shape: [p.b, lr, p.h, p.dk])
        let k = try device.makeTensor(p.shard(p.k, width: p.h * p.dk, split, rank: r), shape: [p.b, lr, p.h, p.dk])
        let v = try device.makeTensor(p.shard(p.v, width: p.h * p.dv, split, rank: r), shape: [p.b, lr, p.h, p.dv])
        let gw = p.gateShapeTail.reduce(1, *)
        let g = try p.g.map { try device.makeTensor(p.shard($0, width: gw, split, rank: r), shape: [p.b, lr] + p.gateShapeTail) }
        let dO = try device.makeTensor(p.shard(p.dO, width: p.h * p.dv, split, rank: r), shape: [p.b, lr, p.h, p.dv])
        let state = [p.b, p.h, p.dk, p.dv]
        let s0 = r == 0 ? try p.s0.map { try device.makeTensor($0, shape: state) } : nil
        let dFinal = r == n - 1 ? try p.dFinal.map { try device.makeTensor($0, shape: state) } : nil
        func poison(_ shape: [Int], _ given: Bool = true) throws -> Guarded? {
            poisoned && given ? try Guarded(device, shape: shape, dtype: .f32) : nil
        }
        let o = try poison([p.b, lr, p.h, p.dv]), incoming = try poison(state), final = try poison(state, r == n - 1)
        let dq = try poison([p.b, lr, p.h, p.dk]), dk = try poison([p.b, lr, p.h, p.dk]), dv = try poison([p.b, lr, p.h, p.dv])
        let dg = try poison([p.b, lr] + p.gateShapeTail, p.g != nil), dInitial = try poison(state, r == 0)
        let out = try await op.forward(q: q, k: k, v: v, logGates: g, initialState: s0, returnFinalState: true,
                                       into: poisoned ? LinearParallelOutputStorage(output: o?.tensor, incomingState: incoming?.tensor,
                                                                                    finalState: final?.tensor) : nil,
                                       communicator: comm)
        let grads = try await op.backward(q: q, k: k, v: v, logGates: g, incomingState: out.incomingState, dOutput: dO,
                                          dFinalState: dFinal,
                                          into: poisoned ? LinearParallelGradientStorage(dq: dq?.tensor, dk: dk?.tensor, dv: dv?.tensor,
                                                                                         dLogGates: dg?.tensor, dInitialState: dInitial?.tensor) : nil,
                                          communicator: comm)
        #expect((out.finalState != nil) == (r == n - 1))
        #expect((grads.dInitialState != nil) == (r == 0))
        if poisoned {
            let pairs: [(String, Guarded?, Tensor?)] = [("o", o, out.output), ("incoming", incoming, out.incomingState), ("final", final, out.finalState),
                                                         ("dq", dq, grads.dq), ("dk", dk, grads.dk), ("dv", dv, grads.dv),
                                                         ("dLogGates", dg, grads.dLogGates), ("dInitial", dInitial, grads.dInitialState)]
            for (name, given, got) in pairs {
                #expect((given == nil) == (got == nil) && (given.map { $0.tensor.buffer === got?.buffer } ?? true), "\(name) rank \(r) is not the caller's tensor")
                try given?.checkGuards("\(name) rank \(r) of \(n) \(scheme)")
            }
        }
        return RankLinearResult(o: try out.output.readFloats(), final: try out.finalState?.readFloats(), incoming: try #require(out.incomingState).readFloats(),
                                dq: try grads.dq.readFloats(), dk: try grads.dk.readFloats(), dv: try grads.dv.readFloats(),
                                dg: try grads.dLogGates?.readFloats(), dInitial: try grads.dInitialState?.readFloats(),
                                path: out.path + " | " + grads.path)
    }
    let gw = p.gateShapeTail.reduce(1, *)
    return LinearResult(o: try p.unshard(ranks.map(\.o), width: p.h * p.dv, split), final: ranks[n - 1].final,
                        dq: try p.unshard(ranks.map(\.dq), width: p.h * p.dk, split),
                        dk: try p.unshard(ranks.map(\.dk), width: p.h * p.dk, split),
                        dv: try p.unshard(ranks.map(\.dv), width: p.h * p.dv, split),
                        dg: p.g == nil ? nil : try p.unshard(ranks.map { $0.dg ?? [] }, width: gw, split),
                        dInitial: ranks[0].dInitial, incoming: ranks.map(\.incoming), paths: ranks.map(\.path))
}

/// Linear attention across ranks (LASP, LASP-2, ZeCO) against the fp64 reference and the
/// single-device GLA. The bound is the single-device one (GLAHarness: 8u per unit of depth
/// times the sum of absolute terms, depth from L + Dk + Dv + chunk), the same for 1..4 ranks:
/// splitting the sequence only regroups the same sums. Against the single-device GLA the
/// bound is twice that (both err from the reference).
@Suite("Parallel linear attention")
struct ParallelLinearTests {
    static let schemes: [ContextParallelScheme] = [.lasp, .lasp2, .zeco(segments: 4)]

    /// Forward (o, final state, incoming states) and backward (dq, dk, dv, dg, dS0) of every
    /// scheme on 1..4 ranks against the reference and the one-device op.
    func check(_ p: LinearProblem, chunk: Int?, ranks: ClosedRange<Int>, path: TransferRoute? = nil, lengths custom: [Int]? = nil,
               poisoned: Bool = false, seed: UInt64) async throws {
        let ref = p.reference
        let abs: ([Float]) -> [Float] = { $0.map { Swift.abs($0) } }
        let fwd = ref.forward(q: p.q, k: p.k, v: p.v, logGates: p.g, initialState: p.s0)
        let fwdAbs = ref.forward(q: abs(p.q), k: abs(p.k), v: abs(p.v), logGates: p.g, initialState: p.s0.map(abs))
        let bwd = ref.backward(q: p.q, k: p.k, v: p.v, logGates: p.g, initialState: p.s0, dO: p.dO, dFinal: p.dFinal)
        let bwdAbs = ref.backward(q: abs(p.q), k: abs(p.k), v: abs(p.v), logGates: p.g, initialState: p.s0.map(abs), dO: abs(p.dO),
                                  dFinal: p.dFinal.map(abs))
        let gScale = GLAHarness.gateScale(gating: p.gating, b: p.b, l: p.l, h: p.h, dk: p.dk, dv: p.dv, q: p.q, k: p.k, dFinal: p.dFinal,
                                          finalAbs: fwdAbs.final, dqAbs: bwdAbs.dq, dkAbs: bwdAbs.dk)
        let depth = 4 * (p.l + p.dk + p.dv + (chunk ?? 64))
        try await withGroup(ranks: ranks.upperBound, path: path) { group in
            // Without recording no tracer barrier orders the streams: the run's own barriers must.
            group.timeline.isRecording = false
            // The single-device op: the first rank alone.
            let single = try await runParallelLinear(p, comms: try group.communicators(first: 1), scheme: .lasp2, chunk: chunk)
            for n in ranks {
                for scheme in Self.schemes {
                    let got = try await runParallelLinear(p, comms: try group.communicators(first: n), scheme: scheme, chunk: chunk,
                                                          lengths: custom, poisoned: poisoned)
                    let what = "\(p.gating) \(scheme) x\(n) [\(p.b), \(p.l), \(p.h), \(p.dk), \(p.dv)] states \(p.s0 != nil)"
                    #expect(got.paths.allSatisfy { $0.contains("correction kernel") && $0.contains("state-gradient kernel") && $0.contains("\(scheme)") }, "\(got.paths)")
                    func both(_ x: [Float], _ one: [Float], _ r: [Double], _ scale: [Double], _ name: String) {
                        GLAHarness.check(x, r, scale: scale, depth: depth, seed: seed, name + " " + what)
                        GLAHarness.check(x, one.map(Double.init), scale: scale, depth: 2 * depth, seed: seed, name + " vs one device " + what)
                    }
                    both(got.o, single.o, fwd.o, fwdAbs.o, "o")
                    both(got.final ?? [], single.final ?? [], fwd.final, fwdAbs.final, "final")
                    both(got.dq, single.dq, bwd.dq, bwdAbs.dq, "dq")
                    both(got.dk, single.dk, bwd.dk, bwdAbs.dk, "dk")
                    both(got.dv, single.dv, bwd.dv, bwdAbs.dv, "dv")
                    both(got.dInitial ?? [], single.dInitial ?? [], bwd.dInitial, bwdAbs.dInitial, "dInitial")
                    if let dg = got.dg { both(dg, single.dg ?? [], bwd.dLogGates, gScale, "dLogGates") }
                    // Rank r's incoming state is the reference's state after the tokens before it
                    // (rank 0's: the initial state, or zeros).
                    let lengths = custom ?? ContextParallelLinearAttention.evenLengths(total: p.l, ranks: n)
                    let s0 = p.s0 ?? [Float](repeating: 0, count: p.b * p.h * p.dk * p.dv)
                    #expect(got.incoming[0] == s0, "incoming rank 0 \(what), seed \(seed)")
                    for r in 1..<n {
                        let before = lengths.prefix(r).reduce(0, +)
                        let prefix = try LinearProblem.prefix(p, tokens: before)
                        let s = prefix.reference.forward(q: prefix.q, k: prefix.k, v: prefix.v, logGates: prefix.g, initialState: p.s0)
                        let sAbs = prefix.reference.forward(q: abs(prefix.q), k: abs(prefix.k), v: abs(prefix.v), logGates: prefix.g,
                                                            initialState: p.s0.map(abs))
                        GLAHarness.check(got.incoming[r], s.final, scale: sAbs.final, depth: depth, seed: seed, "incoming rank \(r) " + what)
                    }
                }
            }
        }
    }

    @Test(arguments: GatedLinearAttention.Gating.allCases)
    func unevenShardsOddShapesEveryScheme(gating: GatedLinearAttention.Gating) async throws {
        let seed = testSeed()
        // 37 tokens: 19/18, 13/12/12, 10/9/9/9 per rank, none a multiple of the 8-row chunks.
        let p = LinearProblem(gating: gating, b: 2, l: 37, h: 3, dk: 5, dv: 4, states: true, seed: seed)
        try await check(p, chunk: 8, ranks: 1...4, seed: seed)
    }

    /// Caller-provided outputs (`into:`) filled with NaN, inside guard words, on 1..4 ranks of
    /// every scheme: the results match the reference, so every element is written.
    @Test(arguments: GatedLinearAttention.Gating.allCases)
    func poisonedCallerOutputsAreFullyWritten(gating: GatedLinearAttention.Gating) async throws {
        let seed = testSeed()
        // 11 tokens: 6/5, 4/4/3, 3/3/3/2 per rank over 4-row chunks; without states for
        // per-head gating (rank 0's incoming state is then the scan identity's zeros).
        let p = LinearProblem(gating: gating, b: 1, l: 11, h: 2, dk: 3, dv: 5, states: gating != .perHead, seed: seed)
        try await check(p, chunk: 4, ranks: 1...4, poisoned: true, seed: seed)
    }

    @Test func withoutStatesAndWithSeveralCarryChunks() async throws {
        let seed = testSeed()
        // 150 tokens over 2 ranks: 75 each, two 64-row chunks of the carry kernels per rank;
        // the per-head case over 3 ranks through staging buffers.
        let p = LinearProblem(gating: .perKey, b: 1, l: 150, h: 2, dk: 7, dv: 6, states: false, seed: seed)
        try await check(p, chunk: nil, ranks: 2...2, seed: seed)
        let ph = LinearProblem(gating: .perHead, b: 1, l: 150, h: 2, dk: 7, dv: 6, states: false, seed: seed &+ 1)
        try await check(ph, chunk: 16, ranks: 3...3, path: .staged, seed: seed)
    }

    @Test func singleTokenShards() async throws {
        let seed = testSeed()
        let p = LinearProblem(gating: .perKey, b: 1, l: 37, h: 2, dk: 3, dv: 5, states: true, seed: seed)
        try await check(p, chunk: 8, ranks: 3...3, lengths: [1, 30, 6], seed: seed)
        try await check(p, chunk: 8, ranks: 4...4, lengths: [2, 1, 1, 33], seed: seed)
    }

    /// Compute intervals on every rank, copies, and the bytes each rank sends: one value
    /// B H Dk (Dv + 1) fp32 per hop of a chain, N - 1 values per rank for the all-gather; the
    /// backward's chain runs from the last rank to the first.
    @Test(arguments: [ContextParallelScheme.lasp2, .zeco(segments: 3)])
    func timelineAndTraffic(scheme: ContextParallelScheme) async throws {
        let seed = testSeed()
        let p = LinearProblem(gating: .perHead, b: 2, l: 40, h: 3, dk: 4, dv: 5, states: false, seed: seed)
        try await withGroup(ranks: 3) { group in
            let comms = try group.communicators()
            let lengths = ContextParallelLinearAttention.evenLengths(total: p.l, ranks: 3)
            let op = ContextParallelLinearAttention(lengths: lengths, scheme: scheme, attention: GatedLinearAttention(gating: p.gating))
            let shape = ContextParallelLinearAttention.Shape(batch: p.b, heads: p.h, dk: p.dk, dv: p.dv)
            let split = try ContiguousSplit(lengths: lengths)
            struct Shard: Sendable { let q: Tensor, k: Tensor, v: Tensor, g: Tensor, dO: Tensor }
            let shards = try comms.map { comm -> Shard in
                let r = comm.rank, lr = lengths[r], d = comm.device
                return Shard(q: try d.makeTensor(p.shard(p.q, width: p.h * p.dk, split, rank: r), shape: [p.b, lr, p.h, p.dk]),
                             k: try d.makeTensor(p.shard(p.k, width: p.h * p.dk, split, rank: r), shape: [p.b, lr, p.h, p.dk]),
                             v: try d.makeTensor(p.shard(p.v, width: p.h * p.dv, split, rank: r), shape: [p.b, lr, p.h, p.dv]),
                             g: try d.makeTensor(p.shard(p.g ?? [], width: p.h, split, rank: r), shape: [p.b, lr, p.h]),
                             dO: try d.makeTensor(p.shard(p.dO, width: p.h * p.dv, split, rank: r), shape: [p.b, lr, p.h, p.dv]))
            }
            _ = group.timeline.drain()
            group.resetTraffic()
            let outs = try await op.forward(q: shards.map(\.q), k: shards.map(\.k), v: shards.map(\.v), logGates: shards.map(\.g),
                                            communicators: comms)
            let forwardTraffic = group.traffic.map(\.bytesSent)
            let forwardIntervals = group.timeline.drain()
            group.resetTraffic()
            _ = try await op.backward(q: shards.map(\.q), k: shards.map(\.k), v: shards.map(\.v), logGates: shards.map(\.g),
                                      incomingStates: outs.compactMap(\.incomingState), dOutput: shards.map(\.dO), communicators: comms)
            let backwardTraffic = group.traffic.map(\.bytesSent)
            let backwardIntervals = group.timeline.drain()
            for (pass, traffic) in [("forward", forwardTraffic), ("backward", backwardTraffic)] {
                let want = (0..<3).map { op.expectedBytesSent(rank: $0, shape: shape, backward: pass == "backward") }
                #expect(traffic == want, "\(pass) \(traffic), expected \(want), seed \(seed)")
            }
            for (intervals, labels) in [(forwardIntervals, ["local states", "local output", "state correction"]),
                                        (backwardIntervals, ["state gradient", "local states", "local gradients"])] {
                for rank in 0..<3 {
                    for label in labels {
                        #expect(intervals.contains { $0.rank == rank && $0.kind == .compute && $0.label == label }, "rank \(rank) lacks \(label)")
                    }
                    #expect(intervals.contains { $0.rank == rank && $0.kind == .copy }, "rank \(rank) has no copy interval")
                }
                let report = OverlapReport(intervals)
                #expect(report.efficiency >= 0 && report.efficiency <= 1)
            }
        }
    }

    @Test func badConfigurationsAreTypedErrors() async throws {
        try await withGroup(ranks: 2) { group in
            let comms = try group.communicators()
            let device = comms[0].device, device1 = comms[1].device
            let gla = GatedLinearAttention(gating: .perKey, chunkLength: 8)
            func tensors(_ d: Device, _ l: Int, dk: Int = 4) throws -> (Tensor, Tensor, Tensor, Tensor) {
                (try d.makeTensor(shape: [1, l, 2, dk], dtype: .f32), try d.makeTensor(shape: [1, l, 2, dk], dtype: .f32),
                 try d.makeTensor(shape: [1, l, 2, 3], dtype: .f32), try d.makeTensor(shape: [1, l, 2, dk], dtype: .f32))
            }
            let (q0, k0, v0, g0) = try tensors(device, 5), (q1, k1, v1, g1) = try tensors(device1, 4)
            func expectError(_ op: ContextParallelLinearAttention, q: [Tensor] = [q0, q1], g: [Tensor]? = [g0, g1],
                             _ needle: String, sourceLocation: SourceLocation = #_sourceLocation) async {
                do {
                    _ = try await op.forward(q: q, k: [k0, k1], v: [v0, v1], logGates: g, communicators: comms)
                    Issue.record("expected an error containing \(needle)", sourceLocation: sourceLocation)
                } catch let error as VkAttnError {
                    #expect("\(error)".contains(needle), "\(error)", sourceLocation: sourceLocation)
                } catch {
                    Issue.record("untyped error \(error)", sourceLocation: sourceLocation)
                }
            }
            // Lengths for 3 ranks on a group of 2.
            await expectError(ContextParallelLinearAttention(lengths: [5, 4, 1], attention: gla), "ranks")
            // A rank without tokens.
            await expectError(ContextParallelLinearAttention(lengths: [9, 0], attention: gla), "lengths")
            // Rank 1's q is not its 4 tokens.
            await expectError(ContextParallelLinearAttention(lengths: [4, 5], attention: gla), "q")
            // Mismatched head dim between q and k on rank 1.
            let (qBad, _, _, _) = try tensors(device1, 4, dk: 6)
            await expectError(ContextParallelLinearAttention(lengths: [5, 4], attention: gla), q: [q0, qBad], "k")
            // Gates missing for per-key gating, and given for none.
            await expectError(ContextParallelLinearAttention(lengths: [5, 4], attention: gla), g: nil, "logGates")
            await expectError(ContextParallelLinearAttention(lengths: [5, 4], attention: GatedLinearAttention(gating: .none)), "logGates")
            // ZeCO segments beyond the state rows (1 * 2 * 4 = 8).
            await expectError(ContextParallelLinearAttention(lengths: [5, 4], scheme: .zeco(segments: 9), attention: gla), "segments")
            await expectError(ContextParallelLinearAttention(lengths: [5, 4], scheme: .zeco(segments: 0), attention: gla), "segments")
            // Wrong incoming-state shape in the backward.
            let op = ContextParallelLinearAttention(lengths: [5, 4], attention: gla)
            let bad = [try device.makeTensor(shape: [1, 2, 4, 4], dtype: .f32), try device1.makeTensor(shape: [1, 2, 4, 3], dtype: .f32)]
            let dO = [try device.makeTensor(shape: [1, 5, 2, 3], dtype: .f32), try device1.makeTensor(shape: [1, 4, 2, 3], dtype: .f32)]
            await #expect(throws: VkAttnError.self) {
                _ = try await op.backward(q: [q0, q1], k: [k0, k1], v: [v0, v1], logGates: [g0, g1], incomingStates: bad, dOutput: dO,
                                          communicators: comms)
            }
            #expect(group.abortError == nil, "a configuration error must be found before anything is posted")
        }
    }

    /// Bad caller-provided outputs (shape, dtype, device, rank, overlap with an input or
    /// another output, count) are typed errors naming the operand, found before any rank posts.
    @Test func badCallerOutputsAreTypedErrors() async throws {
        try await withGroup(ranks: 2) { group in
            let comms = try group.communicators()
            let d = comms.map(\.device)
            let op = ContextParallelLinearAttention(lengths: [5, 4], attention: GatedLinearAttention(gating: .perHead, chunkLength: 4))
            let l = [5, 4]
            func t(_ r: Int, _ shape: [Int], _ dtype: DType = .f32) throws -> Tensor { try d[r].makeTensor(shape: shape, dtype: dtype) }
            // Rank 1's q lies at the start of a larger buffer, so a view of it can be shaped as o.
            let qBuffer = try d[1].makeBuffer(byteCount: 256)
            let q = [try t(0, [1, 5, 2, 3]), try Tensor(qBuffer, shape: [1, 4, 2, 3], dtype: .f32)]
            let k = try (0..<2).map { try t($0, [1, l[$0], 2, 3]) }
            let v = try (0..<2).map { try t($0, [1, l[$0], 2, 4]) }, g = try (0..<2).map { try t($0, [1, l[$0], 2]) }
            let dO = try (0..<2).map { try t($0, [1, l[$0], 2, 4]) }, incoming = try (0..<2).map { try t($0, [1, 2, 3, 4]) }
            let oShape = [1, 4, 2, 4], state = [1, 2, 3, 4]
            let qView = try Tensor(qBuffer, shape: oShape, dtype: .f32)
            let shared = try d[1].makeBuffer(byteCount: 2 * 4 * 32 * 4)
            let oInShared = try Tensor(shared, shape: oShape, dtype: .f32)
            let stateOverlappingO = try Tensor(shared, shape: state, dtype: .f32, byteOffset: 64)
            func forward(_ rank1: LinearParallelOutputStorage, rank0: LinearParallelOutputStorage = .init(), count: Int = 2,
                         _ needle: String, sourceLocation: SourceLocation = #_sourceLocation) async {
                do {
                    _ = try await op.forward(q: q, k: k, v: v, logGates: g, returnFinalState: true,
                                             into: Array([rank0, rank1].prefix(count)), communicators: comms)
                    Issue.record("expected an error containing \(needle)", sourceLocation: sourceLocation)
                } catch let error as VkAttnError {
                    #expect("\(error)".contains(needle), "\(error)", sourceLocation: sourceLocation)
                } catch {
                    Issue.record("untyped error \(error)", sourceLocation: sourceLocation)
                }
            }
            func backward(_ storage: LinearParallelGradientStorage, rank: Int = 1, _ needle: String,
                          sourceLocation: SourceLocation = #_sourceLocation) async {
                var all = [LinearParallelGradientStorage(), LinearParallelGradientStorage()]
                all[rank] = storage
                do {
                    _ = try await op.backward(q: q, k: k, v: v, logGates: g, incomingStates: incoming, dOutput: dO, into: all,
                                              communicators: comms)
                    Issue.record("expected an error containing \(needle)", sourceLocation: sourceLocation)
                } catch let error as VkAttnError {
                    #expect("\(error)".contains(needle), "\(error)", sourceLocation: sourceLocation)
                } catch {
                    Issue.record("untyped error \(error)", sourceLocation: sourceLocation)
                }
            }
            await forward(.init(output: try t(1, [1, 5, 2, 4])), "output has shape")                      // rank 0's length
            await forward(.init(output: try t(1, oShape, .f16)), "output is f16")                          // dtype
            await forward(.init(output: try t(0, oShape)), "output belongs to a different device")                             // rank 0's device
            await forward(.init(incomingState: try t(1, [1, 2, 4, 3])), "incomingState has shape") // Dk, Dv swapped
            await forward(.init(output: qView), "overlaps q")
            await forward(.init(output: oInShared, incomingState: stateOverlappingO), "overlaps output")
            await forward(.init(), rank0: .init(finalState: try t(0, state)), "finalState: given on rank 0") // not the last rank
            await forward(.init(), count: 1, "into")                                             // one set for two ranks
            await backward(.init(dq: try t(1, [1, 4, 2, 4])), "dq has shape")
            await backward(.init(dv: try t(1, [1, 4, 2, 4], .i32)), "dv is i32")
            await backward(.init(dLogGates: try t(1, [1, 4, 2, 3])), "dLogGates has shape")      // per-key shape for per-head gates
            await backward(.init(dInitialState: try t(1, state)), "dInitialState: given on rank 1") // only rank 0
            await backward(.init(dv: dO[1]), "overlaps dOutput")
            await backward(.init(dInitialState: incoming[0]), rank: 0, "overlaps incomingState")
            let dqk = try d[1].makeTensor(shape: [1, 4, 2, 3], dtype: .f32)
            await backward(.init(dq: dqk, dk: dqk), "overlaps dq")
            #expect(group.abortError == nil, "a bad output must be found before anything is posted")
        }
    }
}

extension LinearProblem {
    /// The first `tokens` tokens of `p` (for incoming-state references).
    static func prefix(_ p: LinearProblem, tokens: Int) throws -> LinearProblem {
        try LinearProblem(p, length: tokens)
    }

    init(_ p: LinearProblem, length: Int) throws {
        let split = try ContiguousSplit(lengths: [length, p.l - length])
        (gating, b, l, h, dk, dv) = (p.gating, p.b, length, p.h, p.dk, p.dv)
        q = try p.shard(p.q, width: p.h * p.dk, split, rank: 0)
        k = try p.shard(p.k, width: p.h * p.dk, split, rank: 0)
        v = try p.shard(p.v, width: p.h * p.dv, split, rank: 0)
        let gw = p.gateShapeTail.reduce(1, *)
        g = try p.g.map { try p.shard($0, width: gw, split, rank: 0) }
        s0 = p.s0
        dO = try p.shard(p.dO, width: p.h * p.dv, split, rank: 0)
        dFinal = p.dFinal
    }
}
