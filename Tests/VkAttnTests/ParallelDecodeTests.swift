import Testing
import VkAttn
import VkAttnParallel
import TestSupport

/// Tree decode: the KV cache sharded over 1 to 4 ranks (ragged, some ranks without a
/// sequence's tokens) equals single-device decode over the whole cache, on every rank.
@Suite("Parallel: tree decode")
struct ParallelDecodeTests {
    @Test func treeDecodeMatchesOneDeviceAndAgreesAcrossRanks() async throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        let hq = 4, hkv = 2, d = 32
        let cacheLengths = [101, 7, 40]
        let cuQ: [Int32] = [0, 3, 4, 6]
        let totalQ = Int(cuQ.last ?? 0), totalK = cacheLengths.reduce(0, +)
        let q = rng.floats(totalQ * hq * d), k = rng.floats(totalK * hkv * d), v = rng.floats(totalK * hkv * d)
        let cuK = cacheLengths.reduce(into: [Int32(0)]) { $0.append($0[$0.count - 1] + Int32($1)) }
        try await withGroup { group in
            let device = group.devices[0]
            let stream = try device.makeStream()
            let want = try FlashAttention().decode(q: try device.makeTensor(q, shape: [totalQ, hq, d]),
                                                   kCache: try device.makeTensor(k, shape: [totalK, hkv, d]),
                                                   vCache: try device.makeTensor(v, shape: [totalK, hkv, d]),
                                                   layout: .packed(cuSeqlensQ: cuQ, cuSeqlensK: cuK), on: stream)
            try stream.synchronize()
            let wantO = try want.o.readFloats().map(Double.init), wantL = try want.lse.readFloats().map(Double.init)
            for n in 1...4 {
                // Sequence b's cache split contiguously (unevenly) over the ranks.
                let plan = try ShardPlan(lengths: cacheLengths, ranks: n, sharding: .contiguous)
                let results = try await onEveryRank(try group.communicators(first: n)) { comm in
                    let r = comm.rank, dev = comm.device
                    let piece = plan.pieces(rank: r)[0]
                    let rows = plan.tokens(rank: r)
                    let shardK = plan.shard(k, width: hkv * d, rank: r), shardV = plan.shard(v, width: hkv * d, rank: r)
                    let o = try Guarded(dev, shape: [totalQ, hq, d], dtype: .f32)
                    let lse = try Guarded(dev, shape: [hq, totalQ], dtype: .f32)
                    _ = try await TreeDecode().decode(q: try dev.makeTensor(q, shape: [totalQ, hq, d]),
                                                      kCache: try dev.makeTensor(shardK, shape: [rows, hkv, d]),
                                                      vCache: try dev.makeTensor(shardV, shape: [rows, hkv, d]),
                                                      layout: .packed(cuSeqlensQ: cuQ, cuSeqlensK: piece.cuSeqlens),
                                                      into: AttentionOutput(o: o.tensor, lse: lse.tensor), communicator: comm)
                    try o.checkGuards("tree O rank \(r)")
                    try lse.checkGuards("tree LSE rank \(r)")
                    return (try o.tensor.readFloats(), try lse.tensor.readFloats())
                }
                for (r, (o, lse)) in results.enumerated() {
                    let eo = relativeError(o, wantO), el = relativeError(lse, wantL)
                    #expect(eo <= 1e-5 && el <= 1e-5, "ranks \(n) rank \(r): O error \(eo), LSE error \(el), seed \(seed)")
                    #expect(o == results[0].0 && lse == results[0].1, "ranks \(n): rank \(r) differs from rank 0, seed \(seed)")
                }
            }
        }
    }

    @Test func denseBatchWithEqualShards() async throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        let b = 2, sq = 1, sk = 64, h = 2, d = 64, n = 2
        let q = rng.floats(b * sq * h * d), k = rng.floats(b * sk * h * d), v = rng.floats(b * sk * h * d)
        let problem = try AttentionReference.Problem(qShape: [b, sq, h, d], kShape: [b, sk, h, d], attention: FlashAttention())
        let ref = AttentionReference.forward(problem, q: q, k: k, v: v)
        try await withGroup(ranks: n) { group in
            let results = try await onEveryRank(try group.communicators()) { comm in
                let r = comm.rank, dev = comm.device, part = sk / n
                // [B, Sk, H, D] -> this rank's [B, Sk / N, H, D] slice of each sequence.
                let split = try ContiguousSplit(total: sk, ranks: n)
                func shard(_ x: [Float]) throws -> [Float] { try split.shard(x, outer: b, inner: h * d, rank: r) }
                let out = try await TreeDecode().decode(q: try dev.makeTensor(q, shape: [b, sq, h, d]),
                                                        kCache: try dev.makeTensor(try shard(k), shape: [b, part, h, d]),
                                                        vCache: try dev.makeTensor(try shard(v), shape: [b, part, h, d]), communicator: comm)
                return (try out.output.readFloats(), try #require(out.lse).readFloats())
            }
            for (r, (o, lse)) in results.enumerated() {
                let eo = relativeError(o, ref.o), el = relativeError(lse, ref.lse)
                #expect(eo <= 1e-5 && el <= 1e-5, "rank \(r): O error \(eo), LSE error \(el), seed \(seed)")
            }
        }
    }
}
