import VkAttn

/// One rank's share of a `PlacedAttention` call: its groups in the plan's global order, each
/// on per-group temporaries (a rank's local layout puts its groups' tokens one after another,
/// so a group's rows are a contiguous range but its LSE columns are not; rows are copied,
/// columns moved by `ParallelKernels.copyRows`). A rank with one group uses the caller's
/// tensors directly. Lives in the rank's task (Stream is not Sendable).
final class PlacedRankRun<C: Communicator> {
    let op: PlacedAttention
    let comm: C
    let shape: ContextParallelShape
    let stream: Stream
    var tracer: RankTracer
    /// (index into the plan's groups, first local token, tokens) of each group of this rank.
    let entries: [(group: Int, offset: Int, tokens: Int)]
    let tokens: Int

    init(op: PlacedAttention, comm: C, shape: ContextParallelShape) throws {
        self.op = op
        self.comm = comm
        self.shape = shape
        stream = try comm.device.makeStream()
        tracer = RankTracer(rank: comm.globalRank, clock: comm.clock, timeline: comm.timeline)
        entries = op.plan.localGroups(rank: comm.rank)
        tokens = op.plan.tokens(rank: comm.rank)
    }

    var device: Device { comm.device }
    var direct: Bool { entries.count == 1 }

    /// Submits and waits for this rank's stream without blocking a pool thread, then records
    /// its traced intervals.
    func flush() async throws {
        let submission = try stream.submit()
        try await submission.completion()
        try stream.synchronize()
        try tracer.collect(stream)
    }

    /// Rows `offset ..< offset + count` of a [tokens, heads, D] tensor.
    func rows(_ t: Tensor, _ offset: Int, _ count: Int) throws -> BufferSlice {
        let rowBytes = t.shape.dropFirst().reduce(1, *) * t.dtype.byteSize
        return try t.buffer.slice(offset: t.slice.offset + offset * rowBytes, byteCount: count * rowBytes)
    }

    /// Per group, a tensor of the group's rows of `t` ([groupTokens] + t's other dims), filled
    /// from `t` when `fill` (recorded on the stream); `t` itself for a rank with one group.
    func perGroup(_ t: Tensor, dtype: DType? = nil, fill: Bool) throws -> [Tensor] {
        if direct { return [t] }
        return try entries.map { e in
            let g = try device.makeTensor(shape: [e.tokens] + t.shape.dropFirst(), dtype: dtype ?? t.dtype)
            if fill { try stream.copy(from: rows(t, e.offset, e.tokens), to: g.slice) }
            return g
        }
    }

    /// Per group, LSE columns [Hq, groupTokens] of `lse` [Hq, tokens], gathered when `fill`.
    func perGroupColumns(_ lse: Tensor, fill: Bool) throws -> [Tensor] {
        if direct { return [lse] }
        let hq = shape.headsQ
        return try entries.map { e in
            let g = try device.makeTensor(shape: [hq, e.tokens], dtype: .f32)
            if fill {
                try ParallelKernels.copyRows(from: lse.slice, to: g.slice, rows: hq, width: e.tokens, sourceOffset: e.offset,
                                             sourceStride: tokens, destinationStride: e.tokens, on: stream)
            }
            return g
        }
    }

    /// The groups' rows and columns back into the rank's tensors.
    func scatter(rows parts: [(from: [Tensor], to: Tensor)], columns: (from: [Tensor], to: Tensor)?) throws {
        guard !direct else { return }
        try tracer.begin("placement: scatter", on: stream)
        for (from, to) in parts {
            for (e, g) in zip(entries, from) { try stream.copy(from: g.slice, to: rows(to, e.offset, e.tokens)) }
        }
        if let columns {
            for (e, g) in zip(entries, columns.from) {
                try ParallelKernels.copyRows(from: g.slice, to: columns.to.slice, rows: shape.headsQ, width: e.tokens,
                                             sourceStride: e.tokens, destinationOffset: e.offset, destinationStride: tokens, on: stream)
            }
        }
        try tracer.end(on: stream)
    }

    /// Each group in order: a local one records one packed `FlashAttention` call on this
    /// rank's stream; a group of several ranks waits for this rank's earlier work, then runs
    /// `ContextParallelAttention` on the group's subgroup (a communicator context of its own,
    /// so no message of one group matches another's).
    func runGroups(local: (PlacementPlan.Group, Int) throws -> Void,
                   remote: (ContextParallelAttention, Int, C) async throws -> Void) async throws {
        for (i, e) in entries.enumerated() {
            let group = op.plan.groups[e.group]
            if group.isLocal {
                try tracer.begin("placement: local group \(e.group)", on: stream)
                try local(group, i)
                try tracer.end(on: stream)
                try stream.barrier()
            } else {
                try await flush()
                let sub = try comm.subgroup(Array(group.ranks))
                try await remote(op.groupOp(group), i, sub)
            }
        }
    }

    // MARK: Forward

    func forward(q: Tensor, k: Tensor, v: Tensor, out: AttentionOutput) async throws {
        if !direct { try tracer.begin("placement: gather", on: stream) }
        let qs = try perGroup(q, fill: true), ks = try perGroup(k, fill: true), vs = try perGroup(v, fill: true)
        let os = try perGroup(out.o, fill: false), ls = try perGroupColumns(out.lse, fill: false)
        if !direct { try tracer.end(on: stream) }
        try stream.barrier()
        try await runGroups(local: { group, i in
            let cu = group.shardPlan.cuSeqlens
            _ = try op.attention.forward(q: qs[i], k: ks[i], v: vs[i], layout: .packed(cuSeqlensQ: cu, cuSeqlensK: cu),
                                         into: AttentionOutput(o: os[i], lse: ls[i]), on: stream)
        }, remote: { cp, i, sub in
            _ = try await cp.forward(q: qs[i], k: ks[i], v: vs[i], into: AttentionOutput(o: os[i], lse: ls[i]), communicator: sub)
        })
        try stream.barrier()
        try scatter(rows: [(os, out.o)], columns: (ls, out.lse))
        try await flush()
    }

    // MARK: Backward

    func backward(q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, dO: Tensor, grads: AttentionGradients) async throws {
        if !direct { try tracer.begin("placement: gather", on: stream) }
        let qs = try perGroup(q, fill: true), ks = try perGroup(k, fill: true), vs = try perGroup(v, fill: true)
        let os = try perGroup(o, fill: true), dOs = try perGroup(dO, fill: true), ls = try perGroupColumns(lse, fill: true)
        let dqs = try perGroup(grads.dq, fill: false), dks = try perGroup(grads.dk, fill: false), dvs = try perGroup(grads.dv, fill: false)
        if !direct { try tracer.end(on: stream) }
        try stream.barrier()
        let gType = grads.dq.dtype
        try await runGroups(local: { group, i in
            let cu = group.shardPlan.cuSeqlens
            _ = try op.attention.backward(q: qs[i], k: ks[i], v: vs[i], o: os[i], lse: ls[i], dO: dOs[i],
                                          layout: .packed(cuSeqlensQ: cu, cuSeqlensK: cu), gradientDType: gType,
                                          into: AttentionGradients(dq: dqs[i], dk: dks[i], dv: dvs[i]), on: stream)
        }, remote: { cp, i, sub in
            _ = try await cp.backward(q: qs[i], k: ks[i], v: vs[i], o: os[i], lse: ls[i], dO: dOs[i], gradientDType: gType,
                                      into: AttentionGradients(dq: dqs[i], dk: dks[i], dv: dvs[i]), communicator: sub)
        })
        try stream.barrier()
        try scatter(rows: [(dqs, grads.dq), (dks, grads.dk), (dvs, grads.dv)], columns: nil)
        try await flush()
    }
}
