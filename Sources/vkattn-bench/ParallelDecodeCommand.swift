import ArgumentParser
import Foundation
import VkAttn
import VkAttnReference
import VkAttnParallel

struct TreeDecodeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tree-decode",
        abstract: "Decode across N ranks (Tree Attention): KV cache sharded, local split-KV decode, all-reduce max and sum.",
        discussion: """
            Columns as `ring`; the expected bytes are the all-reduce's: per exchange step the whole buffer, \
            max(LSE) (rows x 4 bytes) then [num | den] (rows x (D + 1) x 4 bytes), log2(N) steps each. \
            --ranks-per-node K runs each all-reduce inside nodes of K ranks, then between their leaders, then \
            back inside the node (intra- and inter-node bytes printed).
            """)

    @OptionGroup var measure: MeasureOptions
    @Option(help: "Ranks (default VKATTN_RANKS, else 2).") var ranks: Int?
    @Option(help: "Sequences.") var batch = 4
    @Option(help: "Query rows per sequence.") var queries = 1
    @Option(help: "Cache length per sequence.") var cache = 32768
    @Option(help: "Query heads.") var heads = 8
    @Option(name: .customLong("kv-heads"), help: "Key/value heads (default: --heads).") var kvHeads: Int?
    @Option(help: "Head dimension.") var dim = 64
    @Option(help: "Write a Chrome trace of the last timed run to FILE.") var timeline: String?
    @Option(name: .customLong("ranks-per-node"), help: "Two-level all-reduces: ranks per node (must divide --ranks; default flat).")
    var ranksPerNode: Int?

    func validate() throws {
        let n = try Limits.ranks(ranks)
        if let ranksPerNode, ranksPerNode < 1 || ranksPerNode > n || n % ranksPerNode != 0 {
            throw OptionError("--ranks-per-node must divide --ranks \(n), got \(ranksPerNode)")
        }
        try Limits.positive(["--batch": batch, "--queries": queries, "--cache": cache, "--heads": heads, "--dim": dim])
        try Limits.positive("--kv-heads", kvHeads)
        guard batch <= 1 << 20 else { throw OptionError("--batch must be at most 2^20, got \(batch)") }
        try Limits.require([("Q", [batch, queries, heads, dim], 4), ("K cache", [batch, cache, kvHeads ?? heads, dim], 4)])
        try checkWritable(timeline, "--timeline")
    }

    func run() throws {
        let log = BenchTeardown.log()
        let n = try Limits.ranks(ranks)
        let group = try DeviceGroup(ranks: n, instance: Instance(log: log))
        BenchTeardown.watch(group.devices)
        let hkv = kvHeads ?? heads, d = dim
        let lengths = [Int](repeating: cache, count: batch)
        let plan = try ShardPlan(lengths: lengths, ranks: n, sharding: .contiguous)
        let totalK = plan.totalTokens, totalQ = batch * queries
        let cuQ = (0...batch).map { Int32($0 * queries) }
        var rng = SeededRandom.fresh()
        let q = rng.floats(totalQ * heads * d), k = rng.floats(totalK * hkv * d), v = rng.floats(totalK * hkv * d)
        let dev = group.devices[0]
        let qt = try dev.makeTensor(q, shape: [totalQ, heads, d])
        let kt = try dev.makeTensor(k, shape: [totalK, hkv, d]), vt = try dev.makeTensor(v, shape: [totalK, hkv, d])
        var single: AttentionOutput?
        let singleTiming = try Timing.measure(dev, warmup: measure.warmup, iterations: measure.iterations) { stream in
            single = try FlashAttention().decode(q: qt, kCache: kt, vCache: vt, layout: .packed(cuSeqlensQ: cuQ, cuSeqlensK: plan.cuSeqlens),
                                                 into: single, on: stream)
        }
        guard let single else { throw OptionError("decode produced nothing") }
        let comms = try group.communicators()
        struct Shard: Sendable { let q: Tensor, k: Tensor, v: Tensor, cuK: [Int32], out: AttentionOutput }
        let shards: [Shard] = try comms.map { comm in
            let rows = plan.globalTokens(rank: comm.rank), device = comm.device
            return Shard(q: try device.makeTensor(q, shape: [totalQ, heads, d]),
                         k: try device.makeTensor(plan.shard(k, width: hkv * d, rank: comm.rank), shape: [rows.count, hkv, d]),
                         v: try device.makeTensor(plan.shard(v, width: hkv * d, rank: comm.rank), shape: [rows.count, hkv, d]),
                         cuK: plan.pieces(rank: comm.rank)[0].cuSeqlens,
                         out: AttentionOutput(o: try device.makeTensor(shape: [totalQ, heads, d], dtype: .f32),
                                              lse: try device.makeTensor(shape: [heads, totalQ], dtype: .f32)))
        }
        let runs = try timedGroupRuns(group, measure: measure) {
            try await onEveryRank(comms) { comm in
                let s = shards[comm.rank]
                return try await TreeDecode(ranksPerNode: ranksPerNode).decode(q: s.q, kCache: s.k, vCache: s.v, layout: .packed(cuSeqlensQ: cuQ, cuSeqlensK: s.cuK),
                                                     into: s.out, communicator: comm).path
            }[0]
        }
        var check: Double?
        if measure.check {
            let want = try single.o.readFloats()
            check = try shards.map { relativeL2(try $0.out.o.readFloats(), want, infinitiesMatch: true) }.max()
        }
        let timing = Timing(samplesMs: runs.runs.map(\.spanMs))
        let median = runs.runs.sorted { $0.spanMs < $1.spanMs }[runs.runs.count / 2]
        let report = OverlapReport(median.intervals)
        let bytes = median.traffic.map(\.bytesSent).max() ?? 0
        let device = "\(dev.capabilities.name) x\(n) (\(group.placement.rawValue), \(group.route.rawValue))"
        let config: [String: ConfigValue] = ["ranks": .int(n), "batch": .int(batch), "queries": .int(queries), "cache": .int(cache),
                                             "heads": .int(heads), "kv_heads": .int(hkv), "dim": .int(d),
                                             "ranks_per_node": .int(ranksPerNode ?? n)]
        let row = ParallelRow.measured(
            op: "tree-decode", device: device, config: config, path: runs.path, timing: timing,
            flops: 4 * Double(totalQ * cache * heads * d), check: check, bound: 1e-5, ranks: n, single: singleTiming,
            overlapEfficiency: report.efficiency, copyNs: report.copyNs, exposedNs: report.exposedNs, overlapRanks: report.ranks.count,
            bytesPerRank: bytes, expected: ranksPerNode.map { TreeDecode.expectedTraffic(ranks: n, ranksPerNode: $0, queryRows: totalQ * heads, headDim: d) }
                ?? TreeDecode.expectedTraffic(ranks: n, queryRows: totalQ * heads, headDim: d))
        if let timeline, let last = runs.runs.last {
            try ParallelTimeline.chromeTrace(last.intervals).write(toFile: timeline, atomically: true, encoding: .utf8)
        }
        try reportParallel([row], json: measure.json, log: log)
    }
}
