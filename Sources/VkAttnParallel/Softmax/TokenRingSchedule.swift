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
/// so the bytes are the formula's for any mask. Memory is independent of N: two slot sets
/// for the travelling tensors (sized for the largest block; a slot is received into only
/// after the send still reading its previous block has read it), two slots for the partial
/// being computed and sent (reused once the send of two steps back has read it), two for the
/// partials returning (a receive is posted on the compute stream after the merge or add that
/// consumed the slot's previous partial), and one scratch for the step's accumulator.
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

    /// The largest shard, which every slot holds.
    var maxTokens: Int { max(1, (0..<size).map { run.plan.tokens(rank: $0) }.max() ?? 1) }

    /// The travelling blocks: per step i >= 1, rank r - i's tensors (shapes from its token
    /// count) as views of slot set i % 2, received at step i - 1 from r - 1 and forwarded at
    /// step i to r + 1. Requests per step and tensor (nil: an empty tensor, not sent).
    struct Travel {
        var blocks: [[Tensor]]
        var received: [[C.Request?]]
        var sent: [[C.Request?]]
    }

    func travel(_ own: [Tensor], shapes: (Int) -> [([Int], DType)]) throws -> Travel {
        var blocks = [own]
        if size > 1 {
            let full = shapes(maxTokens)
            let both = try ScratchArena.allocate(run.device, full + full)
            let slots = [Array(both[0..<full.count]), Array(both[full.count...])]
            for i in 1..<size {
                let t = run.plan.tokens(rank: source(step: i))
                blocks.append(try zip(slots[i % 2], shapes(t)).map { slot, shape in
                    try Tensor(slot.buffer, shape: shape.0, dtype: shape.1, byteOffset: slot.slice.offset)
                })
            }
        }
        let none = [[C.Request?]](repeating: [C.Request?](repeating: nil, count: own.count), count: blocks.count)
        return Travel(blocks: blocks, received: none, sent: none)
    }

    /// Step i's block, its arrival completed on `post` (it is forwarded from there; the staged
    /// path copies it out of staging there) and on the compute stream. `post` is submitted
    /// at once: the step's partial send submits the compute stream, which must not run ahead
    /// of that copy (same queue, submission order).
    func arrive(step i: Int, _ travel: Travel) throws -> [Tensor] {
        for r in travel.received[i].compactMap({ $0 }) {
            try comm.complete(r, on: run.post)
            try comm.complete(r, on: run.stream)
        }
        try run.post.submit()
        try run.stream.barrier()
        return travel.blocks[i]
    }

    /// Posts the forwarding of step i's block to r + 1 and the receive of step i + 1's from
    /// r - 1, on `post`. Empty blocks are not sent (both sides know the plan). The receive's
    /// slot held step i - 1's block: it is overwritten only after the send of that block
    /// (posted at step i - 1) has read it; the compute of step i - 1, submitted before `post`
    /// on the same queue, is done by then.
    func pass(step i: Int, _ travel: inout Travel) throws {
        guard i < size - 1 else { return }
        let block = travel.blocks[i], incoming = travel.blocks[i + 1]
        let next = (rank + 1) % size, previous = (rank + size - 1) % size
        for (j, t) in block.enumerated() where t.elementCount > 0 {
            let filled = travel.received[i][j].map { [$0] } ?? []
            travel.sent[i][j] = try comm.send(t.slice, to: next, tag: tag + j, after: filled, on: run.post)
        }
        for (j, t) in incoming.enumerated() where t.elementCount > 0 {
            let reading = i >= 1 ? travel.sent[i - 1][j].map { [$0] } ?? [] : []
            travel.received[i + 1][j] = try comm.receive(into: t.slice, from: previous, tag: tag + j, after: reading, on: run.post)
        }
        run.requests += travel.received[i + 1].compactMap { $0 }
    }

    func finish(_ travel: Travel) throws {
        let sent = travel.sent.flatMap { $0.compactMap { $0 } }
        for s in sent { try comm.complete(s, on: run.stream) }
        run.requests += sent
    }

    /// Attention calls of the whole schedule on this rank.
    func calls() throws -> Int {
        try (0..<size).reduce(0) { $0 + (try run.pairs.pairs(queries: run.set(source(step: $1)), keys: run.set(rank)).count) }
    }

    /// Bytes of the largest scratch `shapes` takes over the ranks' query sets.
    func scratchBytes(_ shapes: (PieceSet) -> [(shape: [Int], dtype: DType)]) -> Int {
        (0..<size).map { ScratchArena.layout(run.device, shapes(run.set($0))).byteCount }.max() ?? 1
    }

    /// A [tokens, ...] view of a slot's rows and an [Hq, tokens] view of its LSE slot.
    func view(_ slot: Tensor, tokens: Int) throws -> Tensor { try slot.rows(0, tokens) }
    func lseView(_ slot: Tensor, tokens: Int) throws -> Tensor {
        try Tensor(slot.buffer, shape: [hq, tokens], dtype: .f32, byteOffset: slot.slice.offset)
    }

    // MARK: Forward

    func forward(q: Tensor, k: Tensor, v: Tensor, out: AttentionOutput) throws {
        let own = run.set(rank), stream = run.stream, t = own.tokens
        let acc = try QueryAccumulator(set: own, headsQ: hq, headDim: d, o: out.o.dtype == .f32 ? out.o : nil, device: run.device)
        var travel = try travel([q], shapes: { [([$0, hq, d], q.dtype)] })
        let many = size > 1
        // Two slots for the partials of the rank's queries: rank r + i's lands in slot i % 2.
        let returning = many && t > 0 ? try ScratchArena.allocate(run.device, [([t, hq, d], .f32), ([hq, t], .f32),
                                                                               ([t, hq, d], .f32), ([hq, t], .f32)]) : []
        let mergeLSE = try run.device.makeBuffer(byteCount: ScratchArena.layout(run.device, RankRun<C>.lseShapes(set: own, heads: hq)).byteCount)
        // Two slots for the partial computed and sent (step i uses slot i % 2) and one scratch
        // for its accumulator.
        let sending = many ? try ScratchArena.allocate(run.device, [([maxTokens, hq, d], .f32), ([hq, maxTokens], .f32),
                                                                    ([maxTokens, hq, d], .f32), ([hq, maxTokens], .f32)]) : []
        let work = try run.device.makeBuffer(byteCount: scratchBytes {
            QueryAccumulator.scratchShapes(set: $0, headsQ: hq, headDim: d, ownsO: false)
        })
        var arriving = [[C.Request]](repeating: [], count: size + 1)
        var sent = [[C.Request]](repeating: [], count: size)
        /// Posts the receive of rank r + i's partial on the compute stream: the slot is
        /// overwritten only after the work recorded there so far (the merge of partial i - 2).
        func expect(_ i: Int) throws {
            guard t > 0, i < size else { return }
            let from = target(step: i), slot = 2 * (i % 2)
            arriving[i] = [try comm.receive(into: returning[slot].slice, from: from, tag: tag + 8, on: stream),
                           try comm.receive(into: returning[slot + 1].slice, from: from, tag: tag + 9, on: stream)]
            run.requests += arriving[i]
        }
        var merged = 0
        /// Merges the partial computed by rank r + i into the running (O, LSE).
        func merge(_ i: Int) throws {
            for r in arriving[i] { try comm.complete(r, on: stream) }
            try stream.barrier()
            let slot = 2 * (i % 2)
            let lse = try run.splitLSE(returning[slot + 1], set: own, heads: hq, storage: mergeLSE)
            for (a, piece) in own.pieces.enumerated() where piece.tokens > 0 {
                let po = try returning[slot].rows(own.rowOffsets[a], piece.tokens)
                try ParallelKernels.mergeInto(stream, accO: try acc.oRows(a).slice, accLSE: acc.lse[a].slice, partO: po.slice,
                                              partLSE: lse[a].slice, tokens: piece.tokens, heads: hq, headDim: d)
            }
            try stream.barrier()
            merged = i
        }
        try expect(1)
        try expect(2)
        for i in 0..<size {
            let s = source(step: i), queries = run.set(s)
            let block = try arrive(step: i, travel)
            try run.tracer.begin("token ring step \(i): queries of rank \(s)", on: stream)
            if i == 0 {
                try acc.accumulate(run.pairs, q: q, k: k, v: v, keys: own, on: stream)
                try acc.finishUnreached(on: stream)  // every piece holds (O, LSE) before the merges
            } else if queries.tokens > 0 {
                // The slot's previous partial (step i - 2) must have been read by its send.
                if i >= 3 { for r in sent[i - 2] { try comm.complete(r, on: stream) } }
                try stream.barrier()
                let slot = 2 * (i % 2)
                let po = try view(sending[slot], tokens: queries.tokens), pl = try lseView(sending[slot + 1], tokens: queries.tokens)
                let partial = try QueryAccumulator(set: queries, headsQ: hq, headDim: d, o: po, device: run.device, storage: work)
                try partial.accumulate(run.pairs, q: block[0], k: k, v: v, keys: own, on: stream)
                try partial.finishUnreached(on: stream)
                try partial.copyLSE(into: pl, on: stream)
                try stream.barrier()
                sent[i] = [try comm.send(po.slice, to: s, tag: tag + 8, on: stream),
                           try comm.send(pl.slice, to: s, tag: tag + 9, on: stream)]
                run.requests += sent[i]
            }
            try run.tracer.end(on: stream)
            try pass(step: i, &travel)
            // The partial of step i - 1 (computed by rank r + i - 1) is merged behind step i's
            // compute; its slot then takes the partial of step i + 1.
            if i >= 2 && t > 0 {
                try merge(i - 1)
                try expect(i + 1)
            }
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
        let many = size > 1
        // Two slots for the dQ partials returning (rank r + i's in slot i % 2), two for the one
        // computed and sent, one scratch for its accumulator and one for the block's LSE pieces.
        let returning = many && t > 0 ? try ScratchArena.allocate(run.device, [([t, hq, d], .f32), ([t, hq, d], .f32)]) : []
        let sending = many ? try ScratchArena.allocate(run.device, [([maxTokens, hq, d], .f32), ([maxTokens, hq, d], .f32)]) : []
        let work = try run.device.makeBuffer(byteCount: scratchBytes {
            GradientAccumulator.scratchShapes(set: $0, headsQ: hq, headsKV: hkv, headDim: d, maxKeyPieceTokens: own.maxPieceTokens,
                                              ownsDQ: false)
        })
        let lseWork = try run.device.makeBuffer(byteCount: scratchBytes { RankRun<C>.lseShapes(set: $0, heads: hq) })
        var arriving = [C.Request?](repeating: nil, count: size + 1)
        var sent = [C.Request?](repeating: nil, count: size)
        /// Posts the receive of rank r + i's dQ partial on the compute stream, after the add
        /// of partial i - 2 that read the slot.
        func expect(_ i: Int) throws {
            guard t > 0, i < size else { return }
            let r = try comm.receive(into: returning[i % 2].slice, from: target(step: i), tag: tag + 8, on: stream)
            run.requests.append(r)
            arriving[i] = r
        }
        var added = 0
        func add(_ i: Int) throws {
            if let r = arriving[i] { try comm.complete(r, on: stream) }
            try stream.barrier()
            try GradientAccumulator.add(returning[i % 2], into: try mine.dq.rows(0, t), on: stream)
            try stream.barrier()
            added = i
        }
        try expect(1)
        try expect(2)
        for i in 0..<size {
            let s = source(step: i), queries = run.set(s)
            let block = try arrive(step: i, travel)
            try run.tracer.begin("token ring backward step \(i): queries of rank \(s)", on: stream)
            if queries.tokens > 0 {
                let lsePieces = try run.splitLSE(block[3], set: queries, heads: hq, storage: lseWork)
                var partial: Tensor?
                if i > 0 {
                    // The slot's previous partial (step i - 2) must have been read by its send.
                    if i >= 3, let r = sent[i - 2] { try comm.complete(r, on: stream) }
                    try stream.barrier()
                    partial = try view(sending[i % 2], tokens: queries.tokens)
                }
                let acc = try partial.map {
                    try GradientAccumulator(set: queries, headsQ: hq, headsKV: hkv, headDim: d, maxKeyPieceTokens: own.maxPieceTokens,
                                            dq: $0, device: run.device, storage: work)
                } ?? mine
                try acc.accumulate(run.pairs, q: block[0], o: block[1], dO: block[2], lse: lsePieces, k: k, v: v, keys: own,
                                   dk: dk, dv: dv, keyStarted: &keyStarted, on: stream)
                try acc.finishUnreached(on: stream)
                if let partial {
                    try stream.barrier()
                    let r = try comm.send(partial.slice, to: s, tag: tag + 8, on: stream)
                    sent[i] = r
                    run.requests.append(r)
                }
            }
            try run.tracer.end(on: stream)
            try pass(step: i, &travel)
            if i >= 2 && t > 0 {
                try add(i - 1)
                try expect(i + 1)
            }
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
