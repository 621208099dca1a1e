import VkAttn
/// TokenRing (Wang et al. 2024) on one rank: K/V stay where they are; the query-side blocks of
/// rank r - i reach rank r at step i (forwarded one hop per step, r - 1 -> r -> r + 1), rank r
/// computes its own K/V against them and sends the fp32 result straight back to their owner,
/// so the two directions of the links carry different traffic at the same time.
///
/// Forward: Q travels; the partial (O [T, Hq, D], LSE [Hq, T]) returns and the owner merges
/// it with the exact LSE rule (merge_into). Backward: Q, O, dO and LSE travel (the attention
/// backward recomputes D = rowsum(dO * O) from O); the dQ partial of each block returns and
/// the owner adds it; dK/dV of the rank's own keys accumulate locally over every step.
/// Every step sends a partial, even one no pair attends (then O = 0, LSE = -inf or dQ = 0),
/// so the bytes are the formula's for any mask. Each step's block, partial and scratch have
/// buffers of their own, held until the call ends: memory grows with N (about the whole
/// sequence's query-side tensors per rank); a two-slot rotation as the ring's would bound it.
struct TokenRingSchedule<C: Communicator> {
    let run: RankRun<C>
    /// The first of the tags this schedule uses (a block's tensors take tag, tag + 1, ...;
    /// the partials returning take tag + 8, ...).
    let tag: Int

    var comm: C { run.comm }
    var size: Int { comm.size }
    var rank: Int { comm.rank }
    func source(step i: Int) -> Int { (rank - i % size + size) % size }
    func target(step i: Int) -> Int { (rank + i) % size }
    var hq: Int { run.shape.headsQ }
    var d: Int { run.d }

    /// The travelling blocks: per step i >= 1, rank r - i's tensors (shapes from its token
    /// count), received at step i - 1 from r - 1 and forwarded at step i to r + 1.
    struct Travel {
        var blocks: [[Tensor]]
        var received: [[C.Request]]
        var sent: [C.Request] = []
    }

    func travel(_ own: [Tensor], shapes: (Int) -> [([Int], DType)]) throws -> Travel {
        var blocks = [own]
        for i in 1..<max(1, size) {
            let t = run.plan.tokens(rank: source(step: i))
            blocks.append(try ScratchArena.allocate(run.device, shapes(max(1, t))).enumerated().map { j, buffer in
                try Tensor(buffer.buffer, shape: shapes(t)[j].0, dtype: buffer.dtype, byteOffset: buffer.slice.offset)
            })
        }
        return Travel(blocks: blocks, received: [[C.Request]](repeating: [], count: blocks.count))
    }

    /// Step i's block, its arrival completed on `post` (it is forwarded from there; the staged
    /// path copies it out of staging there) and on the compute stream. `post` is submitted
    /// at once: the step's partial send submits the compute stream, which must not run ahead
    /// of that copy (same queue, submission order).
    func arrive(step i: Int, _ travel: Travel) throws -> [Tensor] {
        for r in travel.received[i] {
            try comm.complete(r, on: run.post)
            try comm.complete(r, on: run.stream)
        }
        try run.post.submit()
        try run.stream.barrier()
        return travel.blocks[i]
    }

    /// Posts the forwarding of step i's block to r + 1 and the receive of step i + 1's from
    /// r - 1, on `post`. Empty blocks are not sent (both sides know the plan).
    func pass(step i: Int, _ travel: inout Travel) throws {
        guard i < size - 1 else { return }
        let block = travel.blocks[i], incoming = travel.blocks[i + 1]
        let next = (rank + 1) % size, previous = (rank + size - 1) % size
        for (j, t) in block.enumerated() where t.elementCount > 0 {
            let after = travel.received[i].isEmpty ? [] : [travel.received[i][j]]
            travel.sent.append(try comm.send(t.slice, to: next, tag: tag + j, after: after, on: run.post))
        }
        for (j, t) in incoming.enumerated() where t.elementCount > 0 {
            travel.received[i + 1].append(try comm.receive(into: t.slice, from: previous, tag: tag + j, on: run.post))
        }
        run.requests += travel.received[i + 1]
    }

    func finish(_ travel: Travel) throws {
        for s in travel.sent { try comm.complete(s, on: run.stream) }
        run.requests += travel.sent
    }

    /// Attention calls of the whole schedule on this rank.
    func calls() throws -> Int {
        try (0..<size).reduce(0) { $0 + (try run.pairs.pairs(queries: run.set(source(step: $1)), keys: run.set(rank)).count) }
    }

    // MARK: Forward

    func forward(q: Tensor, k: Tensor, v: Tensor, out: AttentionOutput) throws {
        let own = run.set(rank), stream = run.stream, t = own.tokens
        let acc = try QueryAccumulator(set: own, headsQ: hq, headDim: d, o: out.o.dtype == .f32 ? out.o : nil, device: run.device)
        var travel = try travel([q], shapes: { [([$0, hq, d], q.dtype)] })
        // The partials of the rank's queries, one pair of buffers per peer, received up front.
        var returning: [(o: Tensor, lse: Tensor, requests: [C.Request])] = []
        if t > 0 {
            for i in 1..<max(1, size) {
                let b = try ScratchArena.allocate(run.device, [([t, hq, d], .f32), ([hq, t], .f32)])
                let from = target(step: i)
                let r = [try comm.receive(into: b[0].slice, from: from, tag: tag + 8, on: run.post),
                         try comm.receive(into: b[1].slice, from: from, tag: tag + 9, on: run.post)]
                run.requests += r
                returning.append((b[0], b[1], r))
            }
        }
        var merged = 0
        /// Merges the partial computed by rank r + i into the running (O, LSE).
        func merge(_ i: Int) throws {
            let p = returning[i - 1]
            for r in p.requests { try comm.complete(r, on: stream) }
            try stream.barrier()
            let lse = try run.splitLSE(p.lse, set: own, heads: hq)
            for (a, piece) in own.pieces.enumerated() where piece.tokens > 0 {
                let po = try p.o.rows(own.rowOffsets[a], piece.tokens)
                try ParallelKernels.mergeInto(stream, accO: try acc.oRows(a).slice, accLSE: acc.lse[a].slice, partO: po.slice,
                                              partLSE: lse[a].slice, tokens: piece.tokens, heads: hq, headDim: d)
            }
            try stream.barrier()
            merged = i
        }
        for i in 0..<size {
            let s = source(step: i), queries = run.set(s)
            let block = try arrive(step: i, travel)
            try run.tracer.begin("token ring step \(i): queries of rank \(s)", on: stream)
            if i == 0 {
                try acc.accumulate(run.pairs, q: q, k: k, v: v, keys: own, on: stream)
                try acc.finishUnreached(on: stream)  // every piece holds (O, LSE) before the merges
            } else if queries.tokens > 0 {
                let b = try ScratchArena.allocate(run.device, [([queries.tokens, hq, d], .f32), ([hq, queries.tokens], .f32)])
                let partial = try QueryAccumulator(set: queries, headsQ: hq, headDim: d, o: b[0], device: run.device)
                try partial.accumulate(run.pairs, q: block[0], k: k, v: v, keys: own, on: stream)
                try partial.finishUnreached(on: stream)
                try partial.copyLSE(into: b[1], on: stream)
                try stream.barrier()
                run.requests += [try comm.send(b[0].slice, to: s, tag: tag + 8, on: stream),
                                 try comm.send(b[1].slice, to: s, tag: tag + 9, on: stream)]
            }
            try run.tracer.end(on: stream)
            try pass(step: i, &travel)
            // The partial of step i - 1 (computed by rank r + i - 1) is merged behind step i's compute.
            if i >= 2 && t > 0 { try merge(i - 1) }
            try run.post.submit()
            try stream.submit()
        }
        if t > 0 { for i in (merged + 1)..<max(merged + 1, size) { try merge(i) } }
        try finish(travel)
        run.calls += try calls()
        try run.store(acc.o, into: out.o)
        try acc.copyLSE(into: out.lse, on: stream)
    }

    // MARK: Backward

    func backward(q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, dO: Tensor, grads: AttentionGradients) throws {
        let own = run.set(rank), stream = run.stream, t = own.tokens, hkv = run.shape.headsKV
        let dkv = try ScratchArena.allocate(run.device, [([max(1, t), hkv, d], .f32), ([max(1, t), hkv, d], .f32)])
        let direct = grads.dk.dtype == .f32
        let dk = direct ? grads.dk : try dkv[0].rows(0, t), dv = direct ? grads.dv : try dkv[1].rows(0, t)
        var keyStarted = [Bool](repeating: false, count: own.pieces.count)
        let mine = try GradientAccumulator(set: own, headsQ: hq, headsKV: hkv, headDim: d, maxKeyPieceTokens: own.maxPieceTokens,
                                           dq: grads.dq.dtype == .f32 ? grads.dq : nil, device: run.device)
        var travel = try travel([q, o, dO, lse], shapes: { [([$0, hq, d], q.dtype), ([$0, hq, d], o.dtype), ([$0, hq, d], dO.dtype),
                                                            ([hq, $0], .f32)] })
        var returning: [(dq: Tensor, request: C.Request)] = []
        if t > 0 {
            for i in 1..<max(1, size) {
                let b = try ScratchArena.allocate(run.device, [([t, hq, d], .f32)])[0]
                let r = try comm.receive(into: b.slice, from: target(step: i), tag: tag + 8, on: run.post)
                run.requests.append(r)
                returning.append((b, r))
            }
        }
        var added = 0
        func add(_ i: Int) throws {
            try comm.complete(returning[i - 1].request, on: stream)
            try stream.barrier()
            try GradientAccumulator.add(returning[i - 1].dq, into: try mine.dq.rows(0, t), on: stream)
            try stream.barrier()
            added = i
        }
        for i in 0..<size {
            let s = source(step: i), queries = run.set(s)
            let block = try arrive(step: i, travel)
            try run.tracer.begin("token ring backward step \(i): queries of rank \(s)", on: stream)
            if queries.tokens > 0 {
                let lsePieces = try run.splitLSE(block[3], set: queries, heads: hq)
                let partial = i == 0 ? nil : try ScratchArena.allocate(run.device, [([queries.tokens, hq, d], .f32)])[0]
                let acc = try partial.map {
                    try GradientAccumulator(set: queries, headsQ: hq, headsKV: hkv, headDim: d, maxKeyPieceTokens: own.maxPieceTokens,
                                            dq: $0, device: run.device)
                } ?? mine
                try acc.accumulate(run.pairs, q: block[0], o: block[1], dO: block[2], lse: lsePieces, k: k, v: v, keys: own,
                                   dk: dk, dv: dv, keyStarted: &keyStarted, on: stream)
                try acc.finishUnreached(on: stream)
                if let partial {
                    try stream.barrier()
                    run.requests.append(try comm.send(partial.slice, to: s, tag: tag + 8, on: stream))
                }
            }
            try run.tracer.end(on: stream)
            try pass(step: i, &travel)
            if i >= 2 && t > 0 { try add(i - 1) }
            try run.post.submit()
            try stream.submit()
        }
        if t > 0 { for i in (added + 1)..<max(added + 1, size) { try add(i) } }
        try GradientAccumulator.finishUnreached(keys: own, dk: dk, dv: dv, started: keyStarted, on: stream)
        try stream.barrier()
        try finish(travel)
        run.calls += try calls()
        try run.store(mine.dq, into: grads.dq)
        try run.store(dk, into: grads.dk)
        try run.store(dv, into: grads.dv)
    }
}
