import Testing
import VkAttn
import VkAttnParallel
import TestSupport

/// Tree decode with two-level all-reduces (`ranksPerNode`): equal to the flat tree decode
/// within fp32 rounding, the same bits on every rank, the leader's bytes as the formula.
@Suite("Parallel: tree decode over nodes")
struct ParallelTreeDecodeLevelsTests {
    @Test func twoLevelTreeDecodeMatchesFlat() async throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        let hq = 4, hkv = 2, d = 32
        let cacheLengths = [101, 7, 40]
        let cuQ: [Int32] = [0, 3, 4, 6]
        let totalQ = Int(cuQ.last ?? 0), totalK = cacheLengths.reduce(0, +)
        let q = rng.floats(totalQ * hq * d), k = rng.floats(totalK * hkv * d), v = rng.floats(totalK * hkv * d)
        try await withGroup { group in
            func run(_ n: Int, _ m: Int?) async throws -> [([Float], [Float])] {
                let plan = try ShardPlan(lengths: cacheLengths, ranks: n, sharding: .contiguous)
                return try await onEveryRank(try group.communicators(first: n)) { comm in
                    let r = comm.rank, dev = comm.device, rows = plan.tokens(rank: r)
                    let o = try Guarded(dev, shape: [totalQ, hq, d], dtype: .f32)
                    let lse = try Guarded(dev, shape: [hq, totalQ], dtype: .f32)
                    _ = try await TreeDecode(ranksPerNode: m).decode(
                        q: try dev.makeTensor(q, shape: [totalQ, hq, d]),
                        kCache: try dev.makeTensor(plan.shard(k, width: hkv * d, rank: r), shape: [rows, hkv, d]),
                        vCache: try dev.makeTensor(plan.shard(v, width: hkv * d, rank: r), shape: [rows, hkv, d]),
                        layout: .packed(cuSeqlensQ: cuQ, cuSeqlensK: plan.pieces(rank: r)[0].cuSeqlens),
                        into: AttentionOutput(o: o.tensor, lse: lse.tensor), communicator: comm)
                    try o.checkGuards("tree O rank \(r)")
                    try lse.checkGuards("tree LSE rank \(r)")
                    return (try o.tensor.readFloats(), try lse.tensor.readFloats())
                }
            }
            let flats = [3: try await run(3, nil), 4: try await run(4, nil)]
            for (n, m) in [(4, 2), (4, 1), (3, 1), (3, 3)] {
                let flat = try #require(flats[n])
                group.resetTraffic()
                let two = try await run(n, m)
                let sent = group.traffic.prefix(n).map(\.bytesSent)
                let want = TreeDecode.expectedTraffic(ranks: n, ranksPerNode: m, queryRows: totalQ * hq, headDim: d)
                #expect(Double(sent.max() ?? 0) == want.bytes, "\(n / m) x \(m): sent \(sent), formula \(want.bytes), seed \(seed)")
                let inter = try #require(want.interNodeBytes)
                #expect(m == n ? inter == 0 : inter > 0, "\(n / m) x \(m): inter-node bytes \(inter)")
                for (r, (o, lse)) in two.enumerated() {
                    let eo = relativeError(o, flat[0].0.map(Double.init)), el = relativeError(lse, flat[0].1.map(Double.init))
                    #expect(eo <= 1e-6 && el <= 1e-6, "\(n / m) x \(m) rank \(r): O error \(eo), LSE error \(el) against flat, seed \(seed)")
                    #expect(o == two[0].0 && lse == two[0].1, "\(n / m) x \(m): rank \(r) differs from rank 0, seed \(seed)")
                }
            }
        }
    }

    @Test func nodeSizeMustDivideTheRanks() async throws {
        try await withGroup { group in
            let comms = try group.communicators(first: 4)
            for m in [0, 3, 5] {
                await #expect(throws: VkAttnError.self) {
                    _ = try await onEveryRank(comms) { comm in
                        try await TreeDecode(ranksPerNode: m).decode(q: try comm.device.makeTensor([Float](repeating: 0, count: 32), shape: [1, 1, 1, 32]),
                                                                    kCache: try comm.device.makeTensor([Float](repeating: 0, count: 32), shape: [1, 1, 1, 32]),
                                                                    vCache: try comm.device.makeTensor([Float](repeating: 0, count: 32), shape: [1, 1, 1, 32]),
                                                                    communicator: comm).path
                    }
                }
            }
        }
    }
}
