import VkAttn

/// Star Attention's two-phase prefill across ranks (Acharya et al., NVIDIA 2024): one sequence
/// of context tokens followed by query tokens (the user's prompt), the context split into
/// contiguous blocks, one per rank, the query on the last rank after its block.
///
/// - Phase 1, context encoding (approximate by design): every block attends causally to itself,
///   and every block but the first also to the *anchor block*, the first `anchor` tokens of the
///   context, as if the anchor were prepended to it (rank 0 sends the anchor's K and V to every
///   other rank; only the block's own rows are written). The first block's rows are exact; the
///   others' miss the keys between the anchor and their block.
/// - Phase 2, query encoding (exact): rank `N - 1` sends the query's Q to every rank; each rank
///   attends it to its own block's K and V (the last rank: its block and the query's own tokens,
///   causally) and the partials (O_r, LSE_r) are combined exactly by tree decode's reduction
///   (`TreeDecode`: all-reduce of max(LSE), then of [exp(LSE_r - M) O_r | exp(LSE_r - M)]). The
///   query's rows are global causal attention over the whole sequence.
///
/// Rank r holds Q, K, V [tokens(r), heads, D] (its block's rows, then on the last rank the
/// query's); O [tokens(r), Hq, D] and LSE [Hq, tokens(r)] are written for every row (the
/// context rows' LSE is phase 1's, over the anchor and the block). After the call each rank's
/// K and V are its share of the KV cache for generation (the anchor is not kept): decoding
/// continues across the same ranks with `TreeDecode`.
///
/// Supported: mask causal (the only one: the prefill is causal), scale, softcap, output type;
/// MHA/GQA/MQA; f32 and f16 storage. Every check happens before anything is posted; a
/// failure on one rank after that aborts the group so no peer waits forever.
public struct StarAttention: Sendable, Hashable {
    /// The context's contiguous split: rank r holds context tokens `context.range(rank: r)`
    /// (at least one per rank).
    public var context: ContiguousSplit
    /// Query tokens after the context, held by the last rank (at least one).
    public var queryLength: Int
    /// Anchor tokens (the first tokens of the context) every later block also attends in phase 1;
    /// nil means rank 0's whole block, as in the paper. 0 is blockwise-local attention.
    public var anchor: Int?
    /// The attention configuration: the mask must be `.causal`; scale, softcap, output type
    /// and kernel preference apply to every call.
    public var attention: FlashAttention

    /// The op name in errors.
    public static let opName = "contextParallel.starAttention"

    /// A Star Attention prefill.
    /// - Parameters:
    ///   - context: The context's split over the ranks (`ContiguousSplit(total:ranks:)` for the even one).
    ///   - queryLength: Query tokens, on the last rank after its block.
    ///   - anchor: Anchor tokens; nil means rank 0's block.
    ///   - attention: The attention configuration (mask causal).
    public init(context: ContiguousSplit, queryLength: Int, anchor: Int? = nil, attention: FlashAttention = FlashAttention(mask: .causal)) {
        self.context = context
        self.queryLength = queryLength
        self.anchor = anchor
        self.attention = attention
    }

    /// The ranks the context is split over.
    public var ranks: Int { context.ranks }
    /// Anchor tokens in use: `anchor`, else rank 0's context tokens.
    public var anchorTokens: Int { anchor ?? context.lengths.first ?? 0 }
    /// Tokens of the whole sequence: context then query.
    public var totalTokens: Int { context.total + queryLength }

    /// Rows rank `rank` holds: its context block, plus the query on the last rank.
    /// - Parameter rank: A rank in 0..<ranks (others hold nothing).
    /// - Returns: The first dimension of the rank's Q, K, V and O.
    public func tokens(rank: Int) -> Int {
        guard context.lengths.indices.contains(rank) else { return 0 }
        return context.lengths[rank] + (rank == ranks - 1 ? queryLength : 0)
    }

    /// The whole sequence's split over the ranks (the context's, the query added to the last
    /// rank): how host arrays of all tokens are sharded and gathered (`shard`, `unshard`).
    /// - Returns: The split of `totalTokens` rows.
    /// - Throws: `VkAttnError.invalidValue` for a negative query length.
    public func tokenSplit() throws -> ContiguousSplit {
        try ContiguousSplit(lengths: context.lengths.indices.map { tokens(rank: $0) })
    }

    /// Checks the configuration for `ranks` ranks (the same on every rank): ranks against the
    /// split, block, query and anchor lengths, mask, options, head dim and dtype.
    /// - Parameters:
    ///   - shape: Heads, head dim and type of the problem (`ContextParallelShape`'s softmax form).
    ///   - ranks: The communicator's size; must equal the split's.
    /// - Throws: `VkAttnError` for a rank count other than the split's, a rank without context
    ///   tokens or no query token (unless there is no token at all: ``isEmpty(_:)``), an anchor outside 0...(rank 0's tokens), a mask other than causal,
    ///   options the attention op refuses, or a type other than f32 or f16.
    public func validate(_ shape: ContextParallelShape, ranks: Int) throws {
        let op = Self.opName
        guard ranks == context.ranks else {
            throw VkAttnError.invalidValue(op: op, operand: "ranks", reason: "the communicator has \(ranks) ranks, the context split \(context.ranks)")
        }
        if totalTokens != 0 || queryLength < 0 {  // no token at all is the empty problem (isEmpty)
            if let r = context.lengths.firstIndex(where: { $0 < 1 }) {
                throw VkAttnError.invalidValue(op: op, operand: "context", reason: "rank \(r) has \(context.lengths[r]) context tokens; every rank needs at least one (phase 1 encodes each rank's block behind the anchor, phase 2 merges one partial per rank)")
            }
            guard queryLength >= 1 else {
                throw VkAttnError.invalidValue(op: op, operand: "queryLength", reason: "\(queryLength) must be >= 1 when there is context (a prefill without a query is one-device attention of the context)")
            }
        }
        let first = context.lengths[0]
        guard (0...first).contains(anchorTokens) else {
            throw VkAttnError.invalidValue(op: op, operand: "anchor", reason: "\(anchorTokens) tokens is outside 0...\(first) (rank 0's context block)")
        }
        guard attention.mask == .causal else {
            throw VkAttnError.unsupported(op: op, reason: "Star Attention is a causal prefill: the mask must be .causal (no window, block mask, anchor or offset)")
        }
        guard shape.dtype == .f32 || shape.dtype == .f16 else {
            throw VkAttnError.dtypeMismatch(op: op, operand: "Q", expected: "f32 or f16", actual: shape.dtype.rawValue)
        }
        let total = try Checked.sum(op: op, operand: "tokens", [context.total, queryLength])
        let g = try AttentionGeometry.resolve(op: op, qShape: [total, shape.headsQ, shape.headDim],
                                              kShape: [total, shape.headsKV, shape.headDim], vShape: [total, shape.headsKV, shape.headDim],
                                              dtype: shape.dtype, layout: .packed(cuSeqlensQ: [0, Int32(clamping: total)], cuSeqlensK: [0, Int32(clamping: total)]))
        _ = try attention.checkOptions(op: op, g)
        _ = try attention.outputType(op: op, input: shape.dtype)
    }

    /// Whether the problem is empty: no query heads, or no token at all (no context and no
    /// query). Every rank sees it alike and returns at once with its (empty) O and LSE, no
    /// kernel and no message.
    /// - Parameter shape: Heads, head dim and type of the problem.
    /// - Returns: True when nothing is computed.
    public func isEmpty(_ shape: ContextParallelShape) -> Bool { shape.headsQ == 0 || totalTokens == 0 }

    static func shape(q: Tensor, k: Tensor) throws -> ContextParallelShape {
        guard q.shape.count == 3, k.shape.count == 3 else {
            throw VkAttnError.shapeMismatch(op: opName, operand: q.shape.count == 3 ? "K" : "Q", expected: "[localTokens, heads, headDim]",
                                            actual: "\(q.shape.count == 3 ? k.shape : q.shape)")
        }
        return ContextParallelShape(headsQ: q.shape[1], headsKV: k.shape[1], headDim: q.shape[2], dtype: q.dtype)
    }

    /// Checks one rank's tensors (after `validate`).
    func checkRank(_ shape: ContextParallelShape, rank: Int, device: Device, q: Tensor, k: Tensor, v: Tensor, output: AttentionOutput?) throws {
        let t = tokens(rank: rank), op = Self.opName
        let oType = try attention.outputType(op: op, input: shape.dtype)
        try q.expect(op: op, "Q", shape: [t, shape.headsQ, shape.headDim], dtype: shape.dtype, device: device)
        try k.expect(op: op, "K", shape: [t, shape.headsKV, shape.headDim], dtype: shape.dtype, device: device)
        try v.expect(op: op, "V", shape: [t, shape.headsKV, shape.headDim], dtype: shape.dtype, device: device)
        if let output {
            try output.o.expect(op: op, "O", shape: [t, shape.headsQ, shape.headDim], dtype: oType, device: device)
            try output.lse.expect(op: op, "LSE", shape: [shape.headsQ, t], dtype: .f32, device: device)
        }
        if shape.dtype == .f16 && !(device.enabled.shaderFloat16 && device.enabled.storageBuffer16BitAccess) {
            throw VkAttnError.unsupported(op: op, reason: "f16 needs shaderFloat16 and storageBuffer16BitAccess, which \(device.label) lacks")
        }
    }

    // MARK: Forward

    /// One rank's prefill (every rank of `communicator` calls it with its local tensors).
    /// - Parameters:
    ///   - q: This rank's Q [tokens(rank), Hq, D]: its context block, then (last rank) the query.
    ///   - k: This rank's K [tokens(rank), Hkv, D].
    ///   - v: This rank's V, K's shape.
    ///   - output: O [tokens(rank), Hq, D] and LSE [Hq, tokens(rank)] to write; nil allocates them.
    ///   - comm: This rank's communicator; its size must equal the split's ranks.
    /// - Returns: O and LSE of every row of the rank (context rows from phase 1, query rows from
    ///   phase 2), and the schedule's path.
    /// - Throws: `VkAttnError` from ``validate(_:ranks:)`` (on every rank alike, nothing posted)
    ///   or for this rank's tensors (the group is then aborted); transfer and device errors.
    public func forward<C: Communicator>(q: Tensor, k: Tensor, v: Tensor, into output: AttentionOutput? = nil,
                                         communicator comm: C) async throws -> ContextParallelOutput {
        let shape = try Self.shape(q: q, k: k)
        try validate(shape, ranks: comm.size)
        do {
            try checkRank(shape, rank: comm.rank, device: comm.device, q: q, k: k, v: v, output: output)
            if isEmpty(shape) {  // O [t, 0, D] and LSE [0, t], or no rows: every rank returns here, nothing posted
                let t = tokens(rank: comm.rank), oType = try attention.outputType(op: Self.opName, input: shape.dtype)
                let out = try output ?? AttentionOutput(o: comm.device.makeTensor(shape: [t, shape.headsQ, shape.headDim], dtype: oType),
                                                        lse: comm.device.makeTensor(shape: [shape.headsQ, t], dtype: .f32))
                return ContextParallelOutput(output: out.o, lse: out.lse, path: emptyInputPath)
            }
            let run = try StarRank(comm: comm, star: self, shape: shape, q: q, k: k, v: v, output: output)
            return try await run.run()
        } catch {
            comm.abort(error)
            throw error
        }
    }

    /// Every rank's prefill, concurrently (in-process groups); arrays indexed by rank. Checks
    /// every rank's tensors before any rank starts.
    /// - Parameters:
    ///   - q: Each rank's Q, in rank order.
    ///   - k: Each rank's K.
    ///   - v: Each rank's V.
    ///   - outputs: Each rank's O and LSE to write; nil allocates them.
    ///   - communicators: One per rank, in rank order.
    /// - Returns: Each rank's output, in rank order.
    /// - Throws: `VkAttnError` for any rank's tensors before any rank starts (the group stays
    ///   usable); afterwards the first rank's failure, which aborts the group.
    public func forward<C: Communicator>(q: [Tensor], k: [Tensor], v: [Tensor], into outputs: [AttentionOutput]? = nil,
                                         communicators: [C]) async throws -> [ContextParallelOutput] {
        guard !communicators.isEmpty, communicators.enumerated().allSatisfy({ $0.offset == $0.element.rank }) else {
            throw VkAttnError.invalidValue(op: Self.opName, operand: "communicators", reason: "must be one per rank, in rank order")
        }
        for count in [q.count, k.count, v.count, outputs?.count ?? communicators.count] where count != communicators.count {
            throw VkAttnError.invalidValue(op: Self.opName, operand: "tensors", reason: "\(count) tensors for \(communicators.count) ranks")
        }
        for r in communicators.indices {
            let shape = try Self.shape(q: q[r], k: k[r])
            try validate(shape, ranks: communicators.count)
            try checkRank(shape, rank: r, device: communicators[r].device, q: q[r], k: k[r], v: v[r], output: outputs?[r])
        }
        return try await onEveryRank(communicators) { comm in
            try await self.forward(q: q[comm.rank], k: k[comm.rank], v: v[comm.rank], into: outputs?[comm.rank], communicator: comm)
        }
    }

    // MARK: Traffic

    /// Bytes rank `rank` sends in one call, for a configuration `validate` accepts (N ranks,
    /// A anchor tokens, Lq query tokens, b bytes per element of `shape.dtype`):
    /// rank 0 sends the anchor's K and V to each other rank, (N - 1) 2 A Hkv D b; the last
    /// rank sends the query's Q to each other rank, (N - 1) Lq Hq D b; and every rank sends its
    /// share of tree decode's two all-reduces (Lq Hq 4 bytes of max(LSE), Lq Hq (D + 1) 4 bytes
    /// of [num | den], per exchange step: log2 P steps for the P ranks of the largest power of
    /// two, one more for those that fold in a rank beyond it, one for each rank beyond it).
    /// - Parameters:
    ///   - rank: The rank, in 0..<ranks.
    ///   - shape: Heads, head dimension and storage type.
    /// - Returns: The bytes the rank's sends carry; 0 for a rank outside the group.
    public func expectedBytesSent(rank: Int, shape: ContextParallelShape) -> Int {
        let n = ranks
        guard n > 1, (0..<n).contains(rank) else { return 0 }
        let b = shape.dtype.byteSize, hq = shape.headsQ, hkv = shape.headsKV, d = shape.headDim
        var bytes = 0
        if rank == 0 { bytes += (n - 1) * 2 * anchorTokens * hkv * d * b }
        if rank == n - 1 { bytes += (n - 1) * queryLength * hq * d * b }
        var p = 1
        while p * 2 <= n { p *= 2 }
        let sends = rank >= p ? 1 : p.trailingZeroBitCount + (rank + p < n ? 1 : 0)
        let rows = queryLength * hq
        return bytes + sends * (rows * 4 + rows * (d + 1) * 4)
    }

    /// Bytes the busiest rank sends per call (``expectedBytesSent(rank:shape:)`` of every
    /// rank), the communication steps (the anchor's broadcast, the query's, and the
    /// all-reduces' exchange steps) and the formula in words.
    /// - Parameter shape: Heads, head dimension and storage type.
    /// - Returns: The expectation the bench prints beside the measured bytes.
    public func expectedTraffic(_ shape: ContextParallelShape) -> ExpectedTraffic {
        let n = ranks
        guard n > 1 else { return ExpectedTraffic(bytes: 0, steps: 1, formula: "one rank: no traffic (Star Attention on one rank is exact causal attention)") }
        let bytes = (0..<n).map { expectedBytesSent(rank: $0, shape: shape) }.max() ?? 0
        return ExpectedTraffic(
            bytes: Double(bytes), steps: (anchorTokens > 0 ? 1 : 0) + 1 + 2 * TreeDecode.steps(n),
            formula: "Star Attention (Acharya et al.): rank 0 sends the anchor's K, V to each rank, (N-1) 2 A Hkv D b; the last rank sends the query's Q to each, (N-1) Lq Hq D b; "
                + "then tree attention's all-reduces of max(LSE) (Lq Hq 4 B) and [num | den] (Lq Hq (D+1) 4 B), log2 P sends each (+1 beyond P, P the largest power of two <= N)")
    }
}

/// One rank's Star Attention call: its streams, tracer, scratch, plans and posted requests.
/// Lives in the rank's task (Stream is not Sendable).
final class StarRank<C: Communicator>: RankStreams {
    let comm: C
    let star: StarAttention
    let q: Tensor, k: Tensor, v: Tensor
    let out: AttentionOutput
    let stream: Stream
    let post: Stream
    var tracer: RankTracer
    var requests: [C.Request] = []

    let rank: Int, last: Int
    /// Context rows of this rank, query rows, anchor rows received (0 on rank 0).
    let block: Int, queryRows: Int, anchorRows: Int
    let heads: Int, headDim: Int
    /// Phase 1: [anchor; block] K and V (the block's own rows when there is no anchor).
    let contextK: Tensor, contextV: Tensor
    /// Phase 2: the query's Q here (the last rank's rows, or received), and this rank's keys.
    let queryQ: Tensor, queryK: Tensor, queryV: Tensor
    /// fp32 partial O [Lq, Hq, D] and LSE [Hq, Lq]; max(LSE); [num | den]; the all-reduce's scratch.
    let partialO: Tensor, partialLSE: Tensor, maxLSE: Tensor, weights: Tensor, scratch: Tensor
    /// The context rows' LSE when it cannot be written in place (the last rank: its LSE rows
    /// interleave context and query columns).
    let contextLSE: Tensor
    let phase1: AttentionPlan, phase2: AttentionPlan

    static var tagAnchorK: Int { 1100 }
    static var tagAnchorV: Int { 1101 }
    static var tagQuery: Int { 1102 }
    static var tagMax: Int { 1110 }
    static var tagSum: Int { 1120 }

    /// Allocates, plans both phases (every check of the attention calls) and posts nothing.
    init(comm: C, star: StarAttention, shape: ContextParallelShape, q: Tensor, k: Tensor, v: Tensor, output: AttentionOutput?) throws {
        let device = comm.device
        (self.comm, self.star, self.q, self.k, self.v) = (comm, star, q, k, v)
        rank = comm.rank
        last = comm.size - 1
        block = star.context.lengths[rank]
        queryRows = star.queryLength
        anchorRows = rank > 0 ? star.anchorTokens : 0
        heads = shape.headsQ
        headDim = shape.headDim
        let tokens = star.tokens(rank: rank), hkv = shape.headsKV, d = headDim, lq = queryRows
        let oType = try star.attention.outputType(op: StarAttention.opName, input: shape.dtype)
        out = try output ?? AttentionOutput(o: device.makeTensor(shape: [tokens, heads, d], dtype: oType),
                                            lse: device.makeTensor(shape: [heads, tokens], dtype: .f32))
        stream = try device.makeStream()
        post = try device.makeStream()
        tracer = RankTracer(rank: comm.globalRank, clock: comm.clock, timeline: comm.timeline)

        var shapes: [(shape: [Int], dtype: DType)] = [
            ([lq, heads, d], .f32), ([heads, lq], .f32), ([heads, lq], .f32), ([lq * heads * (d + 1)], .f32), ([lq * heads * (d + 1)], .f32),
            ([heads, block], .f32),
        ]
        if anchorRows > 0 { shapes += [([anchorRows + block, hkv, d], shape.dtype), ([anchorRows + block, hkv, d], shape.dtype)] }
        if rank != last { shapes.append(([lq, heads, d], shape.dtype)) }
        let t = try ScratchArena.allocate(device, shapes)
        (partialO, partialLSE, maxLSE, weights, scratch, contextLSE) = (t[0], t[1], t[2], t[3], t[4], t[5])
        var next = 6
        if anchorRows > 0 {
            (contextK, contextV) = (t[6], t[7])
            next = 8
        } else {
            (contextK, contextV) = (try k.rows(0, block), try v.rows(0, block))
        }
        queryQ = rank == last ? try q.rows(block, lq) : t[next]
        // The last rank's keys for the query are its block and the query's own rows (causal).
        (queryK, queryV) = rank == last ? (k, v) : (try k.rows(0, block), try v.rows(0, block))

        let base = star.attention
        let local = FlashAttention(mask: .causal, scale: base.scale, softcap: base.softcap, outputDType: oType, preference: base.preference)
        phase1 = try local.forwardPlan(q: try q.rows(0, block), k: contextK, v: contextV,
                                       layout: .packed(cuSeqlensQ: [0, Int32(block)], cuSeqlensK: [0, Int32(anchorRows + block)]))
        let partial = FlashAttention(mask: rank == last ? .causal : .none, scale: base.scale, softcap: base.softcap, outputDType: .f32,
                                     preference: base.preference)
        phase2 = try partial.forwardPlan(q: queryQ, k: queryK, v: queryV,
                                         layout: .packed(cuSeqlensQ: [0, Int32(lq)], cuSeqlensK: [0, Int32(queryK.shape[0])]))
    }

    var device: Device { comm.device }

    func run() async throws -> ContextParallelOutput {
        let n = comm.size, a = star.anchorTokens, lq = queryRows, d = headDim
        // Broadcasts first (sends before receives), on `post`: the anchor from rank 0, the query from the last rank.
        var anchorReceives: [C.Request] = [], queryReceive: C.Request?
        if rank == 0 && a > 0 {
            for peer in 1..<n {
                requests.append(try comm.send(try k.rows(0, a).slice, to: peer, tag: Self.tagAnchorK, on: post))
                requests.append(try comm.send(try v.rows(0, a).slice, to: peer, tag: Self.tagAnchorV, on: post))
            }
        }
        if rank == last {
            for peer in 0..<last { requests.append(try comm.send(queryQ.slice, to: peer, tag: Self.tagQuery, on: post)) }
        }
        if anchorRows > 0 {
            anchorReceives.append(try comm.receive(into: try contextK.rows(0, anchorRows).slice, from: 0, tag: Self.tagAnchorK, on: post))
            anchorReceives.append(try comm.receive(into: try contextV.rows(0, anchorRows).slice, from: 0, tag: Self.tagAnchorV, on: post))
            requests += anchorReceives
        }
        if rank != last {
            let received = try comm.receive(into: queryQ.slice, from: last, tag: Self.tagQuery, on: post)
            queryReceive = received
            requests.append(received)
        }

        // Phase 1: the block after the anchor, causal; only the block's rows are kept.
        if anchorRows > 0 {
            try stream.copy(from: try k.rows(0, block).slice, to: try contextK.rows(anchorRows, block).slice)
            try stream.copy(from: try v.rows(0, block).slice, to: try contextV.rows(anchorRows, block).slice)
            for r in anchorReceives { try comm.complete(r, on: stream) }
            try stream.barrier()
        }
        try tracer.begin(anchorRows > 0 ? "phase 1: anchor + block" : "phase 1: block", on: stream)
        let inPlace = rank != last
        let p1 = try phase1.encode(q: try q.rows(0, block), k: contextK, v: contextV,
                                   into: AttentionOutput(o: try out.o.rows(0, block), lse: inPlace ? out.lse : contextLSE), on: stream)
        try tracer.end(on: stream)
        try stream.barrier()

        // Phase 2: the query against this rank's keys, then tree decode's exact reduction.
        if let queryReceive { try comm.complete(queryReceive, on: stream) }
        try stream.barrier()
        try tracer.begin("phase 2: query partial", on: stream)
        let p2 = try phase2.encode(q: queryQ, k: queryK, v: queryV, into: AttentionOutput(o: partialO, lse: partialLSE), on: stream)
        try tracer.end(on: stream)
        let rows = lq * heads
        try stream.barrier()
        try stream.copy(from: partialLSE.slice, to: maxLSE.slice)
        try stream.barrier()
        requests += try comm.allReduce(maxLSE.slice, count: rows, op: .max, scratch: scratch.slice, tag: Self.tagMax, on: stream)
        try ParallelKernels.tree(stream, o: partialO.slice, lse: partialLSE.slice, max: maxLSE.slice, w: weights.slice, tokens: lq, heads: heads,
                                 seqQ: lq, headDim: d, packed: true, finish: false)
        try stream.barrier()
        requests += try comm.allReduce(weights.slice, count: rows * (d + 1), op: .sum, scratch: scratch.slice, tag: Self.tagSum, on: stream)
        try ParallelKernels.tree(stream, o: partialO.slice, lse: partialLSE.slice, max: maxLSE.slice, w: weights.slice, tokens: lq, heads: heads,
                                 seqQ: lq, headDim: d, packed: true, finish: true)
        try stream.barrier()
        if rank == last {
            let tokens = block + lq
            let queryO = try out.o.rows(block, lq)
            if queryO.dtype == .f16 {
                try ParallelKernels.castToHalf(from: partialO.slice, to: queryO.slice, count: partialO.elementCount, on: stream)
            } else {
                try stream.copy(from: partialO.slice, to: queryO.slice)
            }
            // LSE [Hq, block + Lq]: the context columns, then the query's.
            try ParallelKernels.copyRows(from: contextLSE.slice, to: out.lse.slice, rows: heads, width: block,
                                         sourceStride: block, destinationStride: tokens, on: stream)
            try ParallelKernels.copyRows(from: partialLSE.slice, to: out.lse.slice, rows: heads, width: lq, sourceStride: lq,
                                         destinationOffset: block, destinationStride: tokens, on: stream)
        }
        try await finish()
        let anchorText = a > 0 ? "anchor \(a) + block" : "block (no anchor)"
        let path = "star x\(n): phase 1 \(anchorText) causal (\(p1.path)), phase 2 query \(lq) x \(n) blocks (\(p2.path)), "
            + "tree all-reduce max + sum (\(TreeDecode.steps(n)) steps each), \(comm.route.rawValue)"
        return ContextParallelOutput(output: out.o, lse: out.lse, path: path)
    }
}
