import VkAttn
/// The all-gather variant of context parallelism (as Llama 3's): each rank gathers the K/V
/// pieces its queries attend (under a causal mask, only those before them), one slice of
/// the KV heads at a time: slice h + 1 is packed and in flight while slice h computes. The
/// backward gathers again and returns each remote piece's dK/dV partial to its owner
/// (reduce-scatter), whose sums of slice h finish while slice h + 1 computes.
struct AllGatherSchedule<C: Communicator> {
    let run: RankRun<C>
    let slices: Int

    var comm: C { run.comm }
    var stream: Stream { run.stream }
    var d: Int { run.d }
    var size: Int { comm.size }
    var rank: Int { comm.rank }
    var hs: Int { run.shape.headsKV / slices }
    var hqs: Int { hs * (run.shape.headsQ / run.shape.headsKV) }

    struct Route {
        let peer: Int
        let row: Int
        let tokens: Int
    }

    /// The key set (own pieces, then the remote pieces this rank needs, source by source),
    /// where remote pieces arrive, and which own pieces go to whom.
    struct Plan {
        let keys: PieceSet
        let incoming: [Route]
        let outgoing: [Route]
        let ownTokens: Int
    }

    func needs(_ queries: PieceSet, _ piece: SequencePiece) throws -> Bool {
        guard piece.tokens > 0 else { return false }
        let one = PieceSet([piece])
        return try !run.pairs.pairs(queries: queries, keys: one).isEmpty
    }

    func plan() throws -> Plan {
        let sets = (0..<size).map(run.set)
        let mine = sets[rank]
        var pieces = mine.pieces
        var incoming: [Route] = []
        var row = mine.tokens
        for k in 1..<max(size, 1) {
            let source = (rank + size - k) % size
            for piece in sets[source].pieces where try needs(mine, piece) {
                incoming.append(Route(peer: source, row: row, tokens: piece.tokens))
                pieces.append(piece)
                row += piece.tokens
            }
        }
        var outgoing: [Route] = []
        for k in 1..<max(size, 1) {
            let destination = (rank + k) % size
            for (c, piece) in mine.pieces.enumerated() where try needs(sets[destination], piece) {
                outgoing.append(Route(peer: destination, row: mine.rowOffsets[c], tokens: piece.tokens))
            }
        }
        return Plan(keys: PieceSet(pieces), incoming: incoming, outgoing: outgoing, ownTokens: mine.tokens)
    }

    /// Packs heads [first, first + count) of `source` ([tokens, H, D]) into rows of `target`.
    func pack(_ source: Tensor, first: Int, count: Int, into target: Tensor, on stream: Stream? = nil) throws {
        let words = run.words(count, source.dtype)
        try ParallelKernels.copyRows(from: source.slice, to: target.slice, rows: source.shape[0], width: words,
                                     sourceOffset: first * d * source.dtype.byteSize / 4, sourceStride: run.words(source.shape[1], source.dtype),
                                     destinationStride: words, on: stream ?? self.stream)
    }

    /// Rows [0, tokens) of an fp32 [tokens, slice, D] tensor into heads [first, ...) of `target`.
    func unpack(_ source: Tensor, into target: Tensor, first: Int) throws {
        let words = source.shape[1] * d
        try ParallelKernels.copyRows(from: source.slice, to: target.slice, rows: source.shape[0], width: words,
                                     sourceStride: words, destinationOffset: first * d, destinationStride: target.shape[1] * d, on: stream)
    }

    /// Packs slice h of K and V into the own rows of `k`, `v` and posts its transfers, all on
    /// the post stream (submitted before the compute batch recorded just before, so the
    /// transfers run while it computes).
    func gather(slice h: Int, k: Tensor, v: Tensor, into buffers: (k: Tensor, v: Tensor), plan: Plan,
                after: [C.Request]) throws -> (sends: [C.Request], receives: [C.Request]) {
        let post = run.post
        for r in after { try comm.complete(r, on: post) }
        try post.barrier()
        try pack(k, first: h * hs, count: hs, into: try buffers.k.rows(0, plan.ownTokens), on: post)
        try pack(v, first: h * hs, count: hs, into: try buffers.v.rows(0, plan.ownTokens), on: post)
        try post.barrier()
        var sends: [C.Request] = [], receives: [C.Request] = []
        for route in plan.outgoing {
            sends.append(try comm.send(try buffers.k.rows(route.row, route.tokens).slice, to: route.peer, tag: 500, on: post))
            sends.append(try comm.send(try buffers.v.rows(route.row, route.tokens).slice, to: route.peer, tag: 501, on: post))
        }
        for route in plan.incoming {
            receives.append(try comm.receive(into: try buffers.k.rows(route.row, route.tokens).slice, from: route.peer, tag: 500, on: post))
            receives.append(try comm.receive(into: try buffers.v.rows(route.row, route.tokens).slice, from: route.peer, tag: 501, on: post))
        }
        try post.submit()
        run.requests += sends + receives
        return (sends, receives)
    }

    func gatherBuffers(_ plan: Plan) throws -> [(k: Tensor, v: Tensor)] {
        let shape = [max(1, plan.keys.tokens), hs, d]
        let t = try ScratchArena.allocate(run.device, [([Int], DType)](repeating: (shape, run.shape.dtype), count: 4))
        return [(t[0], t[1]), (t[2], t[3])]
    }

    func forward(q: Tensor, k: Tensor, v: Tensor, out: AttentionOutput) throws {
        let plan = try plan()
        let mine = run.set(rank)
        let buffers = try gatherBuffers(plan)
        let qSlice = try ScratchArena.allocate(run.device, [([mine.tokens, hqs, d], run.shape.dtype)])[0]
        let oAll = out.o.dtype == .f32 ? out.o : try ScratchArena.allocate(run.device, [([mine.tokens, run.shape.headsQ, d], .f32)])[0]
        let acc = try QueryAccumulator(set: mine, headsQ: hqs, headDim: d, o: nil, device: run.device)
        var inFlight: [(sends: [C.Request], receives: [C.Request])] = [try gather(slice: 0, k: k, v: v, into: buffers[0], plan: plan, after: [])]
        for h in 0..<slices {
            for r in inFlight[h].receives { try comm.complete(r, on: stream) }
            try stream.barrier()
            try pack(q, first: h * hqs, count: hqs, into: qSlice)
            try run.tracer.begin("all-gather slice \(h)", on: stream)
            acc.reset()
            let b = buffers[h % 2]
            run.calls += try acc.accumulate(run.pairs, q: qSlice, k: try b.k.rows(0, plan.keys.tokens), v: try b.v.rows(0, plan.keys.tokens),
                                            keys: plan.keys, on: stream)
            try acc.finishUnreached(on: stream)
            try run.tracer.end(on: stream)
            try unpack(acc.o, into: oAll, first: h * hqs)
            try acc.copyLSE(into: out.lse, headOffset: h * hqs, on: stream)
            try stream.barrier()
            if h + 1 < slices {
                let reuse = h >= 1 ? inFlight[h - 1].sends : []
                inFlight.append(try gather(slice: h + 1, k: k, v: v, into: buffers[(h + 1) % 2], plan: plan, after: reuse))
            }
            try stream.submit()
        }
        for flight in inFlight.suffix(2) { for r in flight.sends { try comm.complete(r, on: stream) } }
        try run.store(oAll, into: out.o)
    }

    func backward(q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, dO: Tensor, grads: AttentionGradients) throws {
        let plan = try plan()
        let mine = run.set(rank)
        let t = mine.tokens, dtype = run.shape.dtype
        let buffers = try gatherBuffers(plan)
        let keyShape = [max(1, plan.keys.tokens), hs, d]
        let work = try ScratchArena.allocate(run.device, [
            ([t, hqs, d], dtype), ([t, hqs, d], o.dtype), ([t, hqs, d], dtype),
            (keyShape, .f32), (keyShape, .f32), (keyShape, .f32), (keyShape, .f32),
            ([t, run.shape.headsQ, d], .f32), ([t, run.shape.headsKV, d], .f32), ([t, run.shape.headsKV, d], .f32)])
        let (qS, oS, dOS) = (work[0], work[1], work[2])
        let partials = [(k: work[3], v: work[4]), (k: work[5], v: work[6])]
        let dqAll = grads.dq.dtype == .f32 ? grads.dq : work[7]
        let dkAll = grads.dk.dtype == .f32 ? grads.dk : work[8], dvAll = grads.dv.dtype == .f32 ? grads.dv : work[9]
        // Partials of this rank's pieces from every rank that used them, per slice parity.
        let returning = plan.outgoing.reduce(0) { $0 + $1.tokens }
        let inbox = try ScratchArena.allocate(run.device, [([Int], DType)](repeating: ([max(1, returning), hs, d], .f32), count: 4))
        let acc = try GradientAccumulator(set: mine, headsQ: hqs, headsKV: hs, headDim: d, maxKeyPieceTokens: plan.keys.maxPieceTokens,
                                          dq: nil, device: run.device)

        var inFlight = [try gather(slice: 0, k: k, v: v, into: buffers[0], plan: plan, after: [])]
        var returned: [(sends: [C.Request], receives: [C.Request])] = []

        /// Slice h's own dK/dV rows plus the partials returned by the other ranks, into the
        /// full fp32 gradients.
        func finishSlice(_ h: Int) throws {
            let own = partials[h % 2]
            for r in returned[h].receives { try comm.complete(r, on: stream) }
            try stream.barrier()
            var row = 0
            for route in plan.outgoing {
                for (box, target) in [(inbox[2 * (h % 2)], own.k), (inbox[2 * (h % 2) + 1], own.v)] {
                    try GradientAccumulator.add(try box.rows(row, route.tokens), into: try target.rows(route.row, route.tokens), on: stream)
                }
                try stream.barrier()
                row += route.tokens
            }
            try unpack(try own.k.rows(0, t), into: dkAll, first: h * hs)
            try unpack(try own.v.rows(0, t), into: dvAll, first: h * hs)
            try stream.barrier()
        }

        for h in 0..<slices {
            // Partials of slice h come back into inbox parity h (read by finishSlice(h - 2),
            // submitted before this post).
            var receives: [C.Request] = []
            var row = 0
            for route in plan.outgoing {
                receives.append(try comm.receive(into: try inbox[2 * (h % 2)].rows(row, route.tokens).slice, from: route.peer, tag: 510, on: run.post))
                receives.append(try comm.receive(into: try inbox[2 * (h % 2) + 1].rows(row, route.tokens).slice, from: route.peer, tag: 511, on: run.post))
                row += route.tokens
            }
            for r in inFlight[h].receives { try comm.complete(r, on: stream) }
            try stream.barrier()
            // The partial buffers of parity h were sent back two slices ago.
            if h >= 2 { for r in returned[h - 2].sends { try comm.complete(r, on: stream) } }
            try pack(q, first: h * hqs, count: hqs, into: qS)
            try pack(o, first: h * hqs, count: hqs, into: oS)
            try pack(dO, first: h * hqs, count: hqs, into: dOS)
            let lseS = try run.splitLSE(lse, set: mine, heads: hqs, headOffset: h * hqs)
            try run.tracer.begin("all-gather backward slice \(h)", on: stream)
            let b = buffers[h % 2], part = partials[h % 2]
            var started = [Bool](repeating: false, count: plan.keys.pieces.count)
            acc.dqStarted = acc.dqStarted.map { _ in false }
            try acc.accumulate(run.pairs, q: qS, o: oS, dO: dOS, lse: lseS, k: try b.k.rows(0, plan.keys.tokens),
                               v: try b.v.rows(0, plan.keys.tokens), keys: plan.keys,
                               dk: try part.k.rows(0, plan.keys.tokens), dv: try part.v.rows(0, plan.keys.tokens),
                               keyStarted: &started, on: stream)
            run.calls += try run.pairs.calls(queries: mine, keys: plan.keys)
            try acc.finishUnreached(on: stream)
            try GradientAccumulator.finishUnreached(keys: plan.keys, dk: part.k, dv: part.v, started: started, on: stream)
            try run.tracer.end(on: stream)
            try unpack(acc.dq, into: dqAll, first: h * hqs)
            try stream.barrier()
            if h + 1 < slices {
                let reuse = h >= 1 ? inFlight[h - 1].sends : []
                inFlight.append(try gather(slice: h + 1, k: k, v: v, into: buffers[(h + 1) % 2], plan: plan, after: reuse))
            }
            try stream.submit()
            var sends: [C.Request] = []
            for route in plan.incoming {
                sends.append(try comm.send(try part.k.rows(route.row, route.tokens).slice, to: route.peer, tag: 510, on: stream))
                sends.append(try comm.send(try part.v.rows(route.row, route.tokens).slice, to: route.peer, tag: 511, on: stream))
            }
            returned.append((sends, receives))
            run.requests += sends + receives
            if h >= 1 { try finishSlice(h - 1) }
        }
        try finishSlice(slices - 1)
        for flight in inFlight.suffix(2) + returned.suffix(2) { for r in flight.sends { try comm.complete(r, on: stream) } }
        try stream.barrier()
        try run.store(dqAll, into: grads.dq)
        try run.store(dkAll, into: grads.dk)
        try run.store(dvAll, into: grads.dv)
    }
}
