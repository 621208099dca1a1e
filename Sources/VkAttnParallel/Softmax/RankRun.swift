import VkAttn

/// One rank's call that computes on `stream`, posts transfers on `post`, traces its compute
/// and collects its posted requests (RankRun, StarRank). Lives in the rank's task.
protocol RankStreams: AnyObject {
    associatedtype C: Communicator
    var comm: C { get }
    var stream: Stream { get }
    var post: Stream { get }
    var tracer: RankTracer { get set }
    var requests: [C.Request] { get }
}

extension RankStreams {
    /// Submits, waits without blocking a pool thread, synchronizes, records the timeline and
    /// surfaces transfer errors.
    func finish() async throws {
        let posted = try post.submit()
        let submission = try stream.submit()
        try await posted.completion()
        try await submission.completion()
        try post.synchronize()
        try stream.synchronize()
        try tracer.collect(stream)
        try comm.collectTimestamps(of: stream)
        try comm.collectTimestamps(of: post)
        for r in requests { try await r.wait() }
    }
}

/// One rank's context-parallel call: its stream, its compute tracer, the requests it posted,
/// and the schedules of each scheme. Lives in the rank's task (Stream is not Sendable).
final class RankRun<C: Communicator>: RankStreams {
    let comm: C
    let plan: ShardPlan
    let pairs: PairAttention
    let shape: ContextParallelAttention.Shape
    /// Compute and everything that consumes transfers.
    let stream: Stream
    /// Posts of transfers that must be released before the next compute batch (same queue,
    /// submitted first).
    let post: Stream
    var tracer: RankTracer
    var requests: [C.Request] = []
    var calls = 0

    init(comm: C, plan: ShardPlan, attention: FlashAttention, shape: ContextParallelAttention.Shape) throws {
        self.comm = comm
        self.plan = plan
        self.pairs = PairAttention(base: attention)
        self.shape = shape
        self.stream = try comm.device.makeStream()
        self.post = try comm.device.makeStream()
        self.tracer = RankTracer(rank: comm.globalRank, clock: comm.clock, timeline: comm.timeline)
    }

    var device: Device { comm.device }
    var rank: Int { comm.rank }
    var d: Int { shape.headDim }
    func set(_ rank: Int) -> PieceSet { PieceSet(plan.pieces(rank: rank)) }

    /// Copies (f32 -> f32) or casts (f32 -> f16) a whole fp32 tensor into `target`.
    func store(_ source: Tensor, into target: Tensor) throws {
        guard source.slice.buffer !== target.slice.buffer || source.slice.offset != target.slice.offset else { return }
        try stream.barrier()
        if target.dtype == .f16 {
            try ParallelKernels.castToHalf(from: source.slice, to: target.slice, count: source.elementCount, on: stream)
        } else {
            try stream.copy(from: source.slice, to: target.slice)
        }
        try stream.barrier()
    }

    /// The scratch `splitLSE` takes for `set`.
    static func lseShapes(set: PieceSet, heads: Int) -> [(shape: [Int], dtype: DType)] {
        set.pieces.map { ([heads, max(1, $0.tokens)], .f32) }
    }

    /// Per-piece LSE tensors [H, pieceTokens] from an [H, tokens] one. `storage`: a buffer to
    /// carve them from (reused from step to step: a barrier first orders the overwrite after
    /// the earlier readers), or nil for a buffer of their own.
    func splitLSE(_ lse: Tensor, set: PieceSet, heads: Int, headOffset: Int = 0, storage: Buffer? = nil) throws -> [Tensor] {
        let shapes = Self.lseShapes(set: set, heads: heads)
        let pieces: [Tensor]
        if let storage {
            try stream.barrier()
            pieces = try ScratchArena.carve(storage, device, shapes)
        } else {
            pieces = try ScratchArena.allocate(device, shapes)
        }
        let total = lse.shape[1]
        for (a, p) in set.pieces.enumerated() where p.tokens > 0 {
            try ParallelKernels.copyRows(from: lse.slice, to: pieces[a].slice, rows: heads, width: p.tokens,
                                         sourceOffset: headOffset * total + set.rowOffsets[a], sourceStride: total,
                                         destinationStride: p.tokens, on: stream)
        }
        try stream.barrier()
        return pieces
    }

    /// Words per element row of `heads` heads (f16 rows are packed two per word).
    func words(_ heads: Int, _ dtype: DType) -> Int { heads * d * dtype.byteSize / 4 }

    // MARK: Forward

    func forward(q: Tensor, k: Tensor, v: Tensor, out: AttentionOutput, scheme: ContextParallelScheme) async throws -> String {
        switch scheme {
        case .ring:
            try ulyssesForward(q: q, k: k, v: v, out: out, ulysses: 1)
        case .allToAll:
            try ulyssesForward(q: q, k: k, v: v, out: out, ulysses: comm.size)
        case let .hierarchical(u):
            try ulyssesForward(q: q, k: k, v: v, out: out, ulysses: u)
        case let .allGather(slices):
            try AllGatherSchedule(run: self, slices: slices).forward(q: q, k: k, v: v, out: out)
        case .tokenRing:
            try TokenRingSchedule(run: self, tag: 600).forward(q: q, k: k, v: v, out: out)
        case let .doubleRing(m):
            try DoubleRingSchedule(run: self, ranksPerNode: m, tag: 700).forward(q: q, k: k, v: v, out: out)
        case .lasp, .lasp2, .zeco:
            try scheme.expect(linear: false, op: ContextParallelAttention.opName)
        }
        try await finish()
        return "\(scheme) x\(comm.size) \(plan.sharding), \(calls) attention calls, \(comm.route.rawValue)"
    }

    /// Ulysses inside groups of `u` consecutive ranks, ring between the groups (u = 1: ring;
    /// u = N: Ulysses).
    func ulyssesForward(q: Tensor, k: Tensor, v: Tensor, out: AttentionOutput, ulysses u: Int) throws {
        let mesh = try Mesh(run: self, ulysses: u)
        let gathered = try mesh.gatherHeads([(q, .query), (k, .keyValue), (v, .keyValue)], tag: 100)
        let (qg, kg, vg) = (gathered[0], gathered[1], gathered[2])
        let acc = try QueryAccumulator(set: mesh.gathered, headsQ: mesh.hq, headDim: d,
                                       o: u == 1 && out.o.dtype == .f32 ? out.o : nil, device: device)
        let ring = RingSchedule(comm: mesh.ring, members: mesh.ringMembers, pairs: pairs, headsKV: mesh.hkv, headDim: d,
                                dtype: shape.dtype, tag: 1)
        requests += try ring.forward(q: qg, k: kg, v: vg, into: acc, tracer: &tracer, post: post, compute: stream)
        calls += try mesh.ringMembers.reduce(0) { $0 + (try pairs.calls(queries: mesh.gathered, keys: $1)) }
        try acc.finishUnreached(on: stream)
        if u == 1 {
            try store(acc.o, into: out.o)
            try acc.copyLSE(into: out.lse, on: stream)
            return
        }
        try mesh.scatterOutputs(acc, into: out, tag: 200)
    }

    // MARK: Backward

    func backward(q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, dO: Tensor, grads: AttentionGradients,
                  scheme: ContextParallelScheme) async throws -> String {
        switch scheme {
        case .ring:
            try ulyssesBackward(q: q, k: k, v: v, o: o, lse: lse, dO: dO, grads: grads, ulysses: 1)
        case .allToAll:
            try ulyssesBackward(q: q, k: k, v: v, o: o, lse: lse, dO: dO, grads: grads, ulysses: comm.size)
        case let .hierarchical(u):
            try ulyssesBackward(q: q, k: k, v: v, o: o, lse: lse, dO: dO, grads: grads, ulysses: u)
        case let .allGather(slices):
            try AllGatherSchedule(run: self, slices: slices).backward(q: q, k: k, v: v, o: o, lse: lse, dO: dO, grads: grads)
        case .tokenRing:
            try TokenRingSchedule(run: self, tag: 600).backward(q: q, k: k, v: v, o: o, lse: lse, dO: dO, grads: grads)
        case let .doubleRing(m):
            try DoubleRingSchedule(run: self, ranksPerNode: m, tag: 700).backward(q: q, k: k, v: v, o: o, lse: lse, dO: dO, grads: grads)
        case .lasp, .lasp2, .zeco:
            try scheme.expect(linear: false, op: ContextParallelAttention.opName)
        }
        try await finish()
        return "\(scheme) backward x\(comm.size) \(plan.sharding), \(calls) attention calls, \(comm.route.rawValue)"
    }

    func ulyssesBackward(q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, dO: Tensor, grads: AttentionGradients,
                         ulysses u: Int) throws {
        let mesh = try Mesh(run: self, ulysses: u)
        let gathered = try mesh.gatherHeads([(q, .query), (k, .keyValue), (v, .keyValue), (o, .query), (dO, .query)], tag: 300)
        let (qg, kg, vg, og, dOg) = (gathered[0], gathered[1], gathered[2], gathered[3], gathered[4])
        let lsePieces = try mesh.gatherLSE(lse, tag: 320)
        let direct = u == 1
        let maxKey = mesh.ringMembers.map(\.maxPieceTokens).max() ?? 1
        let acc = try GradientAccumulator(set: mesh.gathered, headsQ: mesh.hq, headsKV: mesh.hkv, headDim: d, maxKeyPieceTokens: maxKey,
                                          dq: direct && grads.dq.dtype == .f32 ? grads.dq : nil, device: device)
        let useK = direct && grads.dk.dtype == .f32
        let dkv = try ScratchArena.allocate(device, [([mesh.gathered.tokens, mesh.hkv, d], .f32), ([mesh.gathered.tokens, mesh.hkv, d], .f32)])
        let dk = useK ? grads.dk : dkv[0], dv = useK ? grads.dv : dkv[1]
        let ring = RingSchedule(comm: mesh.ring, members: mesh.ringMembers, pairs: pairs, headsKV: mesh.hkv, headDim: d,
                                dtype: shape.dtype, tag: 1)
        requests += try ring.backward(q: qg, k: kg, v: vg, o: og, dO: dOg, lse: lsePieces, grads: acc, dk: dk, dv: dv,
                                      tracer: &tracer, post: post, compute: stream)
        calls += try mesh.ringMembers.reduce(0) { $0 + (try pairs.calls(queries: mesh.gathered, keys: $1)) }
        try acc.finishUnreached(on: stream)
        if direct {
            try store(acc.dq, into: grads.dq)
            try store(dk, into: grads.dk)
            try store(dv, into: grads.dv)
            return
        }
        try mesh.scatterGradients(dq: acc.dq, dk: dk, dv: dv, into: grads, tag: 400)
    }
}
