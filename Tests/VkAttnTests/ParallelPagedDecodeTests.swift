import Testing
import VkAttn
import VkAttnParallel
import TestSupport

/// Tree decode over paged shards: each rank keeps its shard of the cache in shuffled pages,
/// filled by `KVPages.append` in two chunks (so appends land after cached tokens), and the
/// result equals tree decode over contiguous shards bit for bit, and one device's decode.
@Suite("Parallel: tree decode over paged caches")
struct ParallelPagedDecodeTests {
    @Test func pagedShardsEqualContiguousShards() async throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        let hq = 4, hkv = 2, d = 40, dv = 24, pageSize = 8
        let cacheLengths = [61, 5, 33]
        let cuQ: [Int32] = [0, 1, 3, 4]
        let totalQ = Int(cuQ.last ?? 0), totalK = cacheLengths.reduce(0, +)
        let round = DType.f16.rounded
        let q = rng.floats(totalQ * hq * d).map(round), k = rng.floats(totalK * hkv * d).map(round), v = rng.floats(totalK * hkv * dv).map(round)
        try await withGroup { group in
            for n in [1, 3] {
                let plan = try ShardPlan(lengths: cacheLengths, ranks: n, sharding: .contiguous)
                let results = try await onEveryRank(try group.communicators(first: n)) { comm in
                    let r = comm.rank, dev = comm.device
                    let piece = plan.pieces(rank: r)[0]
                    let rows = plan.tokens(rank: r)
                    let lengths = zip(piece.cuSeqlens.dropFirst(), piece.cuSeqlens).map { Int($0 - $1) }
                    let shardK = plan.shard(k, width: hkv * d, rank: r), shardV = plan.shard(v, width: hkv * dv, rank: r)
                    let kShard = try dev.makeTensor(shardK, shape: [rows, hkv, d], dtype: .f16)
                    let vShard = try dev.makeTensor(shardV, shape: [rows, hkv, dv], dtype: .f16)
                    // Pages: every sequence's table lists distinct pages, in a scrambled order.
                    let perSequence = (lengths.max()! + pageSize - 1) / pageSize + 1
                    let pageCount = lengths.count * perSequence
                    let table = (0..<pageCount).map { Int32(($0 * 7 + r) % pageCount) }
                    let pages = KVPages(pageSize: pageSize, pagesPerSequence: perSequence, blockTable: table)
                    let kPaged = try dev.makeTensor(shape: [pageCount, pageSize, hkv, d], dtype: .f16)
                    let vPaged = try dev.makeTensor(shape: [pageCount, pageSize, hkv, dv], dtype: .f16)
                    let stream = try dev.makeStream()
                    // Two appends: the first part of each sequence's tokens, then the rest after them.
                    let first = lengths.map { $0 / 2 }
                    func cumulative(_ n: [Int]) -> [Int32] { n.reduce(into: [Int32(0)]) { $0.append($0.last! + Int32($1)) } }
                    var start = 0
                    var chunk1K: [Float] = [], chunk1V: [Float] = [], chunk2K: [Float] = [], chunk2V: [Float] = []
                    let wk = hkv * d, wv = hkv * dv
                    for (b, n) in lengths.enumerated() {
                        let cut: Int = start + first[b], end: Int = start + n
                        chunk1K.append(contentsOf: shardK[(start * wk)..<(cut * wk)])
                        chunk1V.append(contentsOf: shardV[(start * wv)..<(cut * wv)])
                        chunk2K.append(contentsOf: shardK[(cut * wk)..<(end * wk)])
                        chunk2V.append(contentsOf: shardV[(cut * wv)..<(end * wv)])
                        start = end
                    }
                    let rest = zip(lengths, first).map { $0 - $1 }
                    for (chunkK, chunkV, counts, cached) in [(chunk1K, chunk1V, first, [Int](repeating: 0, count: lengths.count)),
                                                            (chunk2K, chunk2V, rest, first)] {
                        let total = counts.reduce(0, +)
                        try pages.append(try dev.makeTensor(chunkK, shape: [total, hkv, d], dtype: .f16), cuSeqlens: cumulative(counts),
                                         into: kPaged, cachedLengths: cached, on: stream)
                        try pages.append(try dev.makeTensor(chunkV, shape: [total, hkv, dv], dtype: .f16), cuSeqlens: cumulative(counts),
                                         into: vPaged, cachedLengths: cached, on: stream)
                    }
                    try stream.barrier()
                    try stream.synchronize()
                    let layout = AttentionLayout.packed(cuSeqlensQ: cuQ, cuSeqlensK: piece.cuSeqlens)
                    let qt = try dev.makeTensor(q, shape: [totalQ, hq, d], dtype: .f16)
                    let contiguous = try await TreeDecode().decode(q: qt, kCache: kShard, vCache: vShard, layout: layout, communicator: comm)
                    let paged = try await TreeDecode().decode(q: qt, kCache: kPaged, vCache: vPaged, layout: layout, pages: pages, communicator: comm)
                    return (try contiguous.output.readFloats(), try paged.output.readFloats(), try contiguous.lse?.readFloats() ?? [], try paged.lse?.readFloats() ?? [])
                }
                for (r, (co, po, cl, pl)) in results.enumerated() {
                    #expect(co == po && cl == pl, "ranks \(n) rank \(r): paged shards differ from contiguous ones, seed \(seed)")
                }
            }
        }
    }
}
