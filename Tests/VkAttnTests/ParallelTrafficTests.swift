import Testing
import VkAttn
import VkAttnParallel
import TestSupport

/// The schedulers' expected-traffic formulas (`expectedTraffic`, which the bench prints next to
/// the measured bytes) against the bytes every rank sends, measured by the group's fabric.
/// Splits are even (each sequence a multiple of 2N tokens) where the papers' formulas assume
/// it; the all-gather's count is exact for any split, so it runs on ragged lengths.
@Suite("Parallel: expected traffic")
struct ParallelTrafficTests {
    /// Bytes each rank of `group` sends in one forward, then in one backward, of `c` on the
    /// first `ranks` ranks.
    func measure(_ group: DeviceGroup, _ c: ParallelCase, ranks n: Int, sharding: SequenceSharding,
                 scheme: ContextParallelScheme) async throws -> (op: ContextParallelAttention, forward: [Int], backward: [Int]) {
        let plan = try ShardPlan(lengths: c.lengths, ranks: n, sharding: sharding)
        let op = ContextParallelAttention(plan: plan, scheme: scheme, attention: c.attention)
        let comms = try group.communicators(first: n)
        let (hq, hkv) = (c.headsQ * c.headDim, c.headsKV * c.headDim)
        func tensors(_ x: [Float], width: Int, heads: Int) throws -> [Tensor] {
            try comms.map { comm in
                try comm.device.makeTensor(plan.shard(x, width: width, rank: comm.rank), shape: [plan.tokens(rank: comm.rank), heads, c.headDim],
                                           dtype: c.dtype)
            }
        }
        let q = try tensors(c.q, width: hq, heads: c.headsQ), k = try tensors(c.k, width: hkv, heads: c.headsKV)
        let v = try tensors(c.v, width: hkv, heads: c.headsKV), dO = try tensors(c.dO, width: hq, heads: c.headsQ)
        group.resetTraffic()
        let outs = try await op.forward(q: q, k: k, v: v, communicators: comms)
        let forward = group.traffic.map(\.bytesSent)
        group.resetTraffic()
        _ = try await op.backward(q: q, k: k, v: v, o: outs.map(\.output), lse: outs.compactMap(\.lse), dO: dO, communicators: comms)
        return (op, forward, group.traffic.map(\.bytesSent))
    }

    /// The busiest rank's measured bytes equal the formula's, forward and backward.
    func expectMatches(_ group: DeviceGroup, _ c: ParallelCase, ranks n: Int, sharding: SequenceSharding,
                       scheme: ContextParallelScheme, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let (op, forward, backward) = try await measure(group, c, ranks: n, sharding: sharding, scheme: scheme)
        let shape = ContextParallelAttention.Shape(headsQ: c.headsQ, headsKV: c.headsKV, headDim: c.headDim, dtype: c.dtype)
        for (pass, sent) in [("forward", forward), ("backward", backward)] {
            let want = try op.expectedTraffic(shape, backward: pass == "backward")
            let busiest = sent.max() ?? 0
            #expect(Double(busiest) == want.bytes, "\(scheme) \(pass) x\(n) \(sharding): sent \(sent), formula \(want.bytes) (\(want.formula)); \(c)",
                    sourceLocation: sourceLocation)
            #expect(want.steps >= 1 && want.bytesPerStep == want.bytes / Double(want.steps), sourceLocation: sourceLocation)
        }
    }

    @Test func ringSendsTheBlocksOfItsFormula() async throws {
        let seed = testSeed()
        try await withGroup { group in
            // 24 and 48 tokens: zigzag chunks of 2N equal sizes at N = 1...4, a striped split too.
            for (n, sharding, dtype) in [(1, SequenceSharding.zigzag, DType.f32), (2, .zigzag, .f32), (3, .zigzag, .f16), (4, .striped, .f32)] {
                let c = ParallelCase(seed: seed, lengths: [24, 48], causal: true, dtype: dtype)
                try await expectMatches(group, c, ranks: n, sharding: sharding, scheme: .ring)
            }
        }
    }

    @Test func ulyssesSendsTheShareOfItsFormula() async throws {
        let seed = testSeed()
        try await withGroup { group in
            // Hkv = 2: divided over 2 ranks, one replicated head per rank over 4; f16 O and LSE.
            for (n, kvHeads, dtype) in [(2, 2, DType.f32), (4, 2, .f32), (4, 4, .f16)] {
                let c = ParallelCase(seed: seed, lengths: [32, 16], headsQ: 4, headsKV: kvHeads, causal: false, dtype: dtype)
                try await expectMatches(group, c, ranks: n, sharding: .zigzag, scheme: .allToAll)
            }
        }
    }

    @Test func hybridSendsUlyssesPlusTheRingBetweenGroups() async throws {
        let seed = testSeed()
        try await withGroup { group in
            for (n, u, sharding) in [(4, 2, SequenceSharding.contiguous), (4, 4, .zigzag), (2, 1, .zigzag)] {
                let c = ParallelCase(seed: seed, lengths: [32], headsQ: 4, headsKV: 2, causal: true)
                try await expectMatches(group, c, ranks: n, sharding: sharding, scheme: .hierarchical(ulysses: u))
            }
        }
    }

    @Test func allGatherSendsOnlyTheAttendedPieces() async throws {
        let seed = testSeed()
        try await withGroup { group in
            // Ragged, one empty sequence: the count comes from the plan, exact for any split.
            for (causal, sharding, slices) in [(true, SequenceSharding.zigzag, 2), (false, .contiguous, 1), (true, .striped, 1)] {
                let c = ParallelCase(seed: seed, lengths: [41, 0, 30], causal: causal)
                try await expectMatches(group, c, ranks: 3, sharding: sharding, scheme: .allGather(headSlices: slices))
            }
        }
    }

    @Test func treeDecodeSendsItsAllReduces() async throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        let (b, sq, cache, hq, hkv, d) = (2, 3, 40, 4, 2, 32)
        let q = rng.floats(b * sq * hq * d), k = rng.floats(b * cache * hkv * d), v = rng.floats(b * cache * hkv * d)
        let cuQ = (0...b).map { Int32($0 * sq) }
        try await withGroup { group in
            for n in 1...4 {
                let plan = try ShardPlan(lengths: [cache, cache], ranks: n, sharding: .contiguous)
                let comms = try group.communicators(first: n)
                group.resetTraffic()
                _ = try await onEveryRank(comms) { comm in
                    let r = comm.rank, dev = comm.device, tokens = plan.tokens(rank: r)
                    return try await TreeDecode().decode(q: try dev.makeTensor(q, shape: [b * sq, hq, d]),
                                                         kCache: try dev.makeTensor(plan.shard(k, width: hkv * d, rank: r), shape: [tokens, hkv, d]),
                                                         vCache: try dev.makeTensor(plan.shard(v, width: hkv * d, rank: r), shape: [tokens, hkv, d]),
                                                         layout: .packed(cuSeqlensQ: cuQ, cuSeqlensK: plan.pieces(rank: r)[0].cuSeqlens),
                                                         communicator: comm).path
                }
                let sent = group.traffic.map(\.bytesSent)
                let want = TreeDecode.expectedTraffic(ranks: n, queryRows: b * sq * hq, headDim: d)
                #expect(Double(sent.max() ?? 0) == want.bytes, "x\(n): sent \(sent), formula \(want.bytes), seed \(seed)")
                #expect(want.steps == 2 * TreeDecode.steps(n))
            }
        }
    }

    /// The per-rank counts of every linear scheme, and the busiest rank's in `expectedTraffic`
    /// (the measured side is ParallelLinearTests.timelineAndTraffic).
    @Test func linearFormulas() {
        let shape = ContextParallelLinearAttention.Shape(batch: 2, heads: 3, dk: 4, dv: 5)
        let value = 2 * 3 * 4 * 6 * 4
        #expect(ContextParallelLinearAttention.valueBytes(shape) == value)
        for scheme in [ContextParallelScheme.lasp, .lasp2, .zeco(segments: 3)] {
            for n in 1...4 {
                let op = ContextParallelLinearAttention(lengths: [Int](repeating: 5, count: n), scheme: scheme,
                                                        attention: GatedLinearAttention(gating: .perHead))
                let forward = (0..<n).map { op.expectedBytesSent(rank: $0, shape: shape, backward: false) }
                let backward = (0..<n).map { op.expectedBytesSent(rank: $0, shape: shape, backward: true) }
                if scheme == .lasp2 {
                    #expect(forward == [Int](repeating: (n - 1) * value, count: n) && backward == forward)
                } else {
                    #expect(forward == (0..<n).map { $0 < n - 1 ? value : 0 }, "\(scheme) x\(n) \(forward)")
                    #expect(backward == (0..<n).map { $0 > 0 ? value : 0 }, "\(scheme) x\(n) \(backward)")
                }
                #expect(op.expectedTraffic(shape: shape).bytes == Double(forward.max() ?? 0), "\(scheme) x\(n)")
                #expect(op.expectedBytesSent(rank: n, shape: shape, backward: false) == 0)
            }
        }
    }
}
