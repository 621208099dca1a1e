import ArgumentParser
import Foundation
import VkAttn
import VkAttnReference
import VkAttnParallel

struct StarAttentionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "star-attention",
        abstract: "Star Attention prefill across N ranks: context blocks with the anchor block (approximate), then the query's exact global attention.",
        discussion: """
            The sequence is --context tokens then --query tokens; the context is split over the ranks, the query \
            sits on the last rank. Phase 1: each block attends causally to the anchor (the first --anchor context \
            tokens, default rank 0's block) and to itself; phase 2: the query attends to every block and to itself, \
            combined exactly by tree decode's all-reduce. The method is approximate by design (phase 1 skips the \
            keys between the anchor and a block): the context rows' error against exact causal attention on one \
            device is reported on every run, as the method's approximation, not as a failure. --check compares \
            O and LSE with Star Attention's own fp64 reference (O(S^2 Hq D) on the CPU). Columns as `ring`; \
            single_device_ms is exact causal attention over the whole sequence on rank 0's device.
            """)

    @OptionGroup var measure: MeasureOptions
    @Option(help: "Ranks (default VKATTN_RANKS, else 2).") var ranks: Int?
    @Option(help: "Context tokens (split over the ranks; at least one per rank).") var context = 8192
    @Option(help: "Query tokens (on the last rank, after its block).") var query = 64
    @Option(help: "Query heads.") var heads = 8
    @Option(name: .customLong("kv-heads"), help: "Key/value heads (default: --heads).") var kvHeads: Int?
    @Option(help: "Head dimension (32, 64, 96, 128, 256).") var dim = 64
    @Option(help: "Anchor tokens (0 ... rank 0's block; default: rank 0's block).") var anchor: Int?
    @Option(help: "Storage type.") var dtype = ParallelStorageType.f32
    @Option(help: "Transfer path (default: host-mapped where all memory is host-visible, else imported-host where offered, else staged).")
    var path: TransferRoute?
    @Option(help: "Write a Chrome trace of the last timed run to FILE.") var timeline: String?

    func validate() throws {
        let n = try Limits.ranks(ranks)
        try Limits.positive(["--context": context, "--query": query, "--heads": heads, "--dim": dim])
        try Limits.positive("--kv-heads", kvHeads)
        guard context >= n else { throw OptionError("--context must be at least --ranks (\(n)): every rank needs a context token, got \(context)") }
        let (total, overflow) = context.addingReportingOverflow(query)
        guard !overflow, total <= Int(Int32.max) else { throw OptionError("--context + --query is more than 32-bit offsets hold") }
        let firstBlock = (context + n - 1) / n
        if let anchor, !(0...firstBlock).contains(anchor) {
            throw OptionError("--anchor must be in 0...\(firstBlock) (rank 0's block), got \(anchor)")
        }
        let e = dtype.dtype.byteSize
        try Limits.require([("Q", [total, heads, dim], e), ("K", [total, kvHeads ?? heads, dim], e), ("O fp32", [total, heads, dim], 4)])
        try checkWritable(timeline, "--timeline")
    }

    func run() throws {
        let log = BenchTeardown.log()
        let n = try Limits.ranks(ranks)
        let group = try DeviceGroup(ranks: n, instance: Instance(log: log), route: path)
        BenchTeardown.watch(group.devices)
        let hq = heads, hkv = kvHeads ?? heads, d = dim, type = dtype.dtype
        let star = StarAttention(context: try ContiguousSplit(total: context, ranks: n), queryLength: query, anchor: anchor)
        let shape = ContextParallelShape(headsQ: hq, headsKV: hkv, headDim: d, dtype: type)
        try star.validate(shape, ranks: n)
        let total = star.totalTokens
        let dev = group.devices[0]
        for device in group.devices {
            try Limits.require([("Q", [total, hq, d], type.byteSize), ("O fp32", [total, hq, d], 4)],
                               limit: device.capabilities.maxStorageBufferRange)
        }
        var rng = SeededRandom.fresh()
        let round: (Float) -> Float = type == .f16 ? { Float(Float16($0)) } : { $0 }
        let q = rng.floats(total * hq * d).map(round), k = rng.floats(total * hkv * d).map(round), v = rng.floats(total * hkv * d).map(round)
        note("star-attention: \(n) ranks, \(group.placement.rawValue), \(group.route.rawValue), context \(star.context.lengths) + query \(query) on rank \(n - 1), anchor \(star.anchorTokens)")

        // Exact causal attention over the whole sequence on rank 0's device: the time beside the
        // ranks', and what the approximation is measured against.
        let layout = AttentionLayout.packed(cuSeqlensQ: [0, Int32(total)], cuSeqlensK: [0, Int32(total)])
        let qt = try dev.makeTensor(q, shape: [total, hq, d], dtype: type)
        let kt = try dev.makeTensor(k, shape: [total, hkv, d], dtype: type), vt = try dev.makeTensor(v, shape: [total, hkv, d], dtype: type)
        var single: AttentionOutput?
        let exactPlan = try star.attention.forwardPlan(q: qt, k: kt, v: vt, layout: layout)
        let singleTiming = try Timing.measure(dev, warmup: measure.warmup, iterations: measure.iterations) { stream in
            single = try exactPlan.encode(q: qt, k: kt, v: vt, into: single, on: stream)
        }
        guard let single else { throw OptionError("exact attention produced nothing") }

        let comms = try group.communicators()
        let split = try star.tokenSplit()
        struct Shard: Sendable { let q: Tensor, k: Tensor, v: Tensor, out: AttentionOutput }
        let shards: [Shard] = try comms.map { comm in
            let r = comm.rank, t = star.tokens(rank: r), device = comm.device
            func make(_ x: [Float], _ h: Int) throws -> Tensor {
                try device.makeTensor(try split.shard(x, outer: 1, inner: h * d, rank: r), shape: [t, h, d], dtype: type)
            }
            return Shard(q: try make(q, hq), k: try make(k, hkv), v: try make(v, hkv),
                         out: AttentionOutput(o: try device.makeTensor(shape: [t, hq, d], dtype: type),
                                              lse: try device.makeTensor(shape: [hq, t], dtype: .f32)))
        }
        let runs = try timedGroupRuns(group, measure: measure) {
            try await onEveryRank(comms) { comm in
                let s = shards[comm.rank]
                return try await star.forward(q: s.q, k: s.k, v: s.v, into: s.out, communicator: comm).path
            }[0]
        }

        let o = try split.unshard(try shards.map { try $0.out.o.readFloats() }, outer: 1, inner: hq * d)
        let contextRows = star.context.total * hq * d
        let exactO = try single.o.readFloats()
        let approximation = (context: relativeL2(Array(o[..<contextRows]), Array(exactO[..<contextRows]), infinitiesMatch: true),
                             query: relativeL2(Array(o[contextRows...]), Array(exactO[contextRows...]), infinitiesMatch: true))
        var check: Double?
        if measure.check {
            let lse = try split.unshard(try shards.map { try $0.out.lse.readFloats() }, outer: hq, inner: 1)
            let reference = StarAttentionReference(contextLengths: star.context.lengths, queryLength: query, anchor: star.anchorTokens,
                                                   headsQ: hq, headsKV: hkv, headDim: d).forward(q: q, k: k, v: v)
            check = max(relativeError(o, reference.o), relativeError(lse, reference.lse))
        }

        let timing = Timing(samplesMs: runs.runs.map(\.spanMs))
        let median = runs.runs.sorted { $0.spanMs < $1.spanMs }[runs.runs.count / 2]
        let report = OverlapReport(median.intervals)
        let bytes = median.traffic.map(\.bytesSent).max() ?? 0
        let device = "\(dev.capabilities.name) x\(n) (\(group.placement.rawValue), \(group.route.rawValue))"
        let config: [String: ConfigValue] = ["ranks": .int(n), "context": .int(context), "query": .int(query), "heads": .int(hq),
                                             "kv_heads": .int(hkv), "dim": .int(d), "anchor": .int(star.anchorTokens), "dtype": .string(type.rawValue)]
        // Attended (query, key) pairs of the method: each block causally plus the anchor, the query against everything before it.
        let pairs = star.context.lengths.enumerated().reduce(0.0) { sum, block in
            let l = Double(block.element)
            return sum + l * (l + 1) / 2 + (block.offset > 0 ? l * Double(star.anchorTokens) : 0)
        } + Double(query) * Double(star.context.total) + Double(query) * Double(query + 1) / 2
        let row = ParallelRow.measured(
            op: "star-attention", device: device, config: config, path: runs.path, timing: timing, flops: 4 * pairs * Double(hq * d),
            check: check, bound: checkBound(type), ranks: n, single: singleTiming, overlapEfficiency: report.efficiency,
            copyNs: report.copyNs, exposedNs: report.exposedNs, overlapRanks: report.ranks.count, bytesPerRank: bytes,
            expected: star.expectedTraffic(shape))
        try writeGroupTimeline(timeline, group, runs.runs)
        let starRow = StarRow(row: row, contextError: approximation.context, queryError: approximation.query)
        if measure.json {
            print(starRow.jsonLine())
        } else {
            print(ParallelRow.table([row]))
            print("  star-attention: \(row.formula)")
            print("  star-attention: approximate by design: phase 1 attends only the anchor (\(star.anchorTokens) tokens) and the block itself, "
                + "so the context rows differ from exact causal attention (one device) by \(String(format: "%.3e", approximation.context)) "
                + "(relative L2 of O; the method's approximation, not a failure); the query rows (exact global attention) by "
                + "\(String(format: "%.3e", approximation.query)). --check compares with Star Attention's own fp64 reference.")
        }
        let messages = log.drain()
        for message in messages { note("validation: \(message)") }
        if row.base.check == .fail {
            note("error: a --check failed")
            throw ExitCode.failure
        }
        if !messages.isEmpty { throw ExitCode.failure }
    }
}

/// A `star-attention` row: the parallel row plus the method's approximation against exact
/// causal attention (`approx_rel_error` of the context rows, `approx_rel_error_query` of the
/// query rows; `approximate: true`).
struct StarRow: Encodable {
    var row: ParallelRow
    var contextError: Double
    var queryError: Double

    enum Keys: String, CodingKey {
        case approximate, contextError = "approx_rel_error", queryError = "approx_rel_error_query", approximation
    }

    func encode(to encoder: Encoder) throws {
        try row.encode(to: encoder)
        var c = encoder.container(keyedBy: Keys.self)
        try c.encode(true, forKey: .approximate)
        try c.encode(contextError, forKey: .contextError)
        try c.encode(queryError, forKey: .queryError)
        try c.encode("Star Attention is approximate by design: context rows against exact causal attention on one device (relative L2 of O); check compares with Star Attention's own fp64 reference",
                     forKey: .approximation)
    }

    func jsonLine() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(self) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }
}
