import VkAttn
/// Decode across devices (Tree Attention, Shyam et al. 2024): the KV cache is sharded over the
/// ranks (each holds some of every sequence's cached tokens), the few query rows are on every
/// rank. Each rank computes its exact partial (O_r, LSE_r) with split-KV decode; an all-reduce
/// of max(LSE) gives M, then one all-reduce (sum) of [exp(LSE_r - M) O_r | exp(LSE_r - M)]
/// gives numerator and denominator: O = num / den, LSE = M + log(den), exactly the single-device
/// result up to fp32 rounding. Each all-reduce takes log2(N) exchange steps (recursive
/// doubling; two more when N is not a power of two), and every rank ends with the same bits.
///
/// With `ranksPerNode` m the all-reduces run over two levels (nodes of m consecutive ranks):
/// inside each node first, then between the nodes' leaders (position 0), then each leader
/// sends the result to its node. Every rank still ends with the same bits; against the flat
/// all-reduce the max is bit-identical and the sum differs only in its order of additions.
public struct TreeDecode: Sendable, Hashable {
    /// The attention configuration: scale, softcap, output type, kernels (no mask).
    public var attention: FlashAttention
    /// Ranks per node for the two-level all-reduces (consecutive ranks form a node; must divide
    /// the ranks); nil for the flat all-reduce over every rank.
    public var ranksPerNode: Int?

    /// - Parameters:
    ///   - attention: The attention configuration; its mask must be none.
    ///   - ranksPerNode: Ranks per node for the two-level all-reduces, or nil for flat ones.
    public init(attention: FlashAttention = FlashAttention(), ranksPerNode: Int? = nil) {
        self.attention = attention
        self.ranksPerNode = ranksPerNode
    }

    /// One rank's call. `q`: dense [B, Sq, Hq, D] or packed [totalQ, Hq, D] (the same on
    /// every rank); `kCache`, `vCache`: this rank's shard in `layout` (packed: this rank's
    /// cache lengths per sequence in cuSeqlensK; a sequence may have none here). Writes O (in
    /// attention.outputDType) and LSE of the whole cache. No query rows (batch 0, no query
    /// heads or no queries, alike on every rank) returns at once with empty O and LSE, no
    /// kernel and no message; a shard with no cached key joins the all-reduces with O = 0 and
    /// LSE = -inf (a row no rank has a key for ends with O = 0, LSE = -inf).
    /// - Parameters:
    ///   - q: The query rows, identical on every rank.
    ///   - kCache: This rank's shard of the K cache (Q's type, or f16/bf16 under any Q;
    ///     [pages, pageSize, Hkv, Dk] with `pages`).
    ///   - vCache: This rank's shard of the V cache, K's shape with Dv.
    ///   - layout: Dense, or packed with this rank's cache lengths (paged shards take packed).
    ///   - pages: The block table of this rank's paged shard; nil for a contiguous one.
    ///   - output: O and LSE to write; nil allocates them.
    ///   - comm: This rank's communicator.
    /// - Returns: O and LSE over the whole cache (the same bits on every rank), and the path.
    /// - Throws: `VkAttnError` for a mask, a tensor the decode does not take, a tensor of
    ///   another device or a `ranksPerNode` that does not divide the ranks (the group is
    ///   aborted once anything was posted); transfer and device errors.
    public func decode<C: Communicator>(q: Tensor, kCache: Tensor, vCache: Tensor, layout: AttentionLayout = .dense,
                                        pages: KVPages? = nil, into output: AttentionOutput? = nil,
                                        communicator comm: C) async throws -> ContextParallelOutput {
        let op = "contextParallel.treeDecode"
        let mask = attention.mask
        guard mask == .none else {
            throw VkAttnError.unsupported(op: op, reason: "decode across ranks takes no mask (every cached key is before the queries)")
        }
        if let m = ranksPerNode, m < 1 || comm.size % m != 0 {
            throw VkAttnError.invalidValue(op: op, operand: "ranksPerNode", reason: "\(m) does not divide \(comm.size) ranks")
        }
        let device = comm.device
        guard q.device === device else { throw VkAttnError.deviceMismatch(op: op, operand: "Q") }
        guard attention.alibiSlopes == nil, attention.sinks == nil else {
            throw VkAttnError.unsupported(op: op, reason: "decode across ranks takes no ALiBi slopes or sinks (each rank's partial would need the global positions, and the sink must join once)")
        }
        let g = try AttentionGeometry.resolveCache(op: op, q: q, k: kCache, v: vCache, layout: layout, scales: nil, pages: pages)
        _ = try attention.checkOptions(op: op, g)
        let oType = try attention.outputType(op: op, input: g.dtype)
        let out = try output ?? AttentionOutput(o: device.makeTensor(shape: g.oShape, dtype: oType),
                                                lse: device.makeTensor(shape: g.lseShape, dtype: .f32))
        try out.o.expect(op: op, "O", shape: g.oShape, dtype: oType, device: device)
        try out.lse.expect(op: op, "LSE", shape: g.lseShape, dtype: .f32, device: device)
        // No query rows (batch 0, no query heads or no queries), the same on every rank: O and
        // LSE are empty, every rank returns here with nothing posted. A shard without cached
        // keys still joins the all-reduces (its partial is O = 0, LSE = -inf, by fills).
        if g.batch == 0 || g.headsQ == 0 || g.totalQ == 0 {
            return ContextParallelOutput(output: out.o, lse: out.lse, path: emptyInputPath)
        }
        let rows = g.totalQ * g.headsQ, d = g.headDimV
        do {
            let stream = try device.makeStream()
            var tracer = RankTracer(rank: comm.globalRank, clock: comm.clock, timeline: comm.timeline)
            let t = try ScratchArena.allocate(device, [(g.oShape, .f32), (g.lseShape, .f32), (g.lseShape, .f32),
                                                       ([rows * (d + 1)], .f32), ([rows * (d + 1)], .f32)])
            let (o, lse, m, w, scratch) = (t[0], t[1], t[2], t[3], t[4])
            try tracer.begin("decode shard", on: stream)
            let partial = FlashAttention(mask: mask, scale: attention.scale, softcap: attention.softcap, outputDType: .f32)
            let local = try partial.decode(q: q, kCache: kCache, vCache: vCache, layout: layout, pages: pages,
                                           into: AttentionOutput(o: o, lse: lse), on: stream)
            try stream.barrier()
            try stream.copy(from: lse.slice, to: m.slice)
            try tracer.end(on: stream)
            let levels = try ranksPerNode.map { try NodeLevels(comm: comm, ranksPerNode: $0) }
            func allReduce(_ buffer: Tensor, count: Int, op: ReduceOp, tag: Int) throws -> [C.Request] {
                guard let levels else { return try comm.allReduce(buffer.slice, count: count, op: op, scratch: scratch.slice, tag: tag, on: stream) }
                return try levels.allReduce(buffer.slice, count: count, op: op, scratch: scratch.slice, tag: tag, on: stream)
            }
            var requests = try allReduce(m, count: rows, op: .max, tag: 900)
            try ParallelKernels.tree(stream, o: o.slice, lse: lse.slice, max: m.slice, w: w.slice, tokens: g.totalQ, heads: g.headsQ,
                                     seqQ: g.maxSq, headDim: d, packed: g.isPacked, finish: false)
            try stream.barrier()
            requests += try allReduce(w, count: rows * (d + 1), op: .sum, tag: 910)
            try ParallelKernels.tree(stream, o: o.slice, lse: lse.slice, max: m.slice, w: w.slice, tokens: g.totalQ, heads: g.headsQ,
                                     seqQ: g.maxSq, headDim: d, packed: g.isPacked, finish: true)
            try stream.barrier()
            if oType == .f16 {
                try ParallelKernels.castToHalf(from: o.slice, to: out.o.slice, count: o.elementCount, on: stream)
            } else {
                try stream.copy(from: o.slice, to: out.o.slice)
            }
            try stream.copy(from: lse.slice, to: out.lse.slice)
            let submission = try stream.submit()
            try await submission.completion()
            try stream.synchronize()
            try tracer.collect(stream)
            try comm.collectTimestamps(of: stream)
            for r in requests { try await r.wait() }
            let reduce = levels.map { "two-level all-reduce max + sum (\($0.description))" }
                ?? "all-reduce max + sum (\(Self.steps(comm.size)) steps each)"
            let path = "tree x\(comm.size): \(local.path), \(reduce)"
            return ContextParallelOutput(output: out.o, lse: out.lse, path: path)
        } catch {
            comm.abort(error)
            throw error
        }
    }

    /// Exchange steps of one all-reduce over `ranks` ranks.
    /// - Parameter ranks: The group's size.
    /// - Returns: log2 of the largest power of two P <= ranks, plus 2 when P < ranks.
    public static func steps(_ ranks: Int) -> Int {
        var p = 1, steps = 0
        while p * 2 <= ranks { p *= 2; steps += 1 }
        return steps + (p < ranks ? 2 : 0)
    }
}
