import VkAttn
/// The double ring (LoongTrain, Gu et al. 2024) on one rank: the N ranks form N / m nodes of m
/// consecutive ranks. At node step j the rank at position p of node g holds the K/V block of
/// position p of node g - j (its own at j = 0), which arrived over the outer ring (the ranks
/// at position p of every node) while node step j - 1 computed; the inner ring (the node's m
/// ranks) then circulates the node step's m blocks as the plain ring does (`RingSchedule`).
/// So each node step moves one block between nodes and m - 1 inside each node.
///
/// Backward: the inner ring carries each block's fp32 dK/dV accumulator as the ring does, so
/// at the end of node step j it holds the node's whole contribution to block (g - j, p); that
/// goes straight back to the owner over the outer communicator, which adds the N / m - 1 it
/// receives to its own node's sum. Each node step's outer block and returning sums have
/// buffers of their own (N / m - 1 blocks held until the call ends).
struct DoubleRingSchedule<C: Communicator> {
    let run: RankRun<C>
    let m: Int
    let inner: C
    let outer: C?
    let tag: Int

    /// Subgroups are formed in the same order on every rank: the node, then the position's
    /// outer ring.
    init(run: RankRun<C>, ranksPerNode m: Int, tag: Int) throws {
        let comm = run.comm, n = comm.size
        let g = comm.rank / m, p = comm.rank % m
        self.run = run
        self.m = m
        self.tag = tag
        inner = m == n ? comm : try comm.subgroup(Array(g * m..<(g + 1) * m))
        outer = m == n ? nil : try comm.subgroup((0..<(n / m)).map { $0 * m + p })
    }

    var nodes: Int { run.comm.size / m }
    var node: Int { run.comm.rank / m }
    var position: Int { run.comm.rank % m }
    /// The node whose blocks this node works on at node step j.
    func sourceNode(step j: Int) -> Int { (node - j % nodes + nodes) % nodes }
    func members(node h: Int) -> [PieceSet] { (0..<m).map { run.set(h * m + $0) } }
    func ring(step j: Int) -> RingSchedule<C> {
        RingSchedule(comm: inner, members: members(node: sourceNode(step: j)), pairs: run.pairs, headsKV: run.shape.headsKV,
                     headDim: run.d, dtype: run.shape.dtype, tag: tag + 8 + 4 * j,
                     queries: members(node: node), wholeRing: true)
    }

    /// Per node step j >= 1 the block of rank (g - j, p): K, V buffers of its token count.
    func outerBuffers() throws -> [(k: Tensor, v: Tensor)] {
        try (1..<max(1, nodes)).map { j in
            let t = run.plan.tokens(rank: sourceNode(step: j) * m + position)
            let b = try ScratchArena.allocate(run.device, [([max(1, t), run.shape.headsKV, run.d], run.shape.dtype),
                                                           ([max(1, t), run.shape.headsKV, run.d], run.shape.dtype)])
            return (try b[0].rows(0, t), try b[1].rows(0, t))
        }
    }

    /// The node step's block, its outer arrival completed on `post` (the inner ring forwards
    /// it from there) and on the compute stream; then posts its forwarding to the next node and
    /// the receive of the next node step's block.
    func advance(step j: Int, own: (k: Tensor, v: Tensor), buffers: [(k: Tensor, v: Tensor)],
                 received: inout [[C.Request]], sent: inout [C.Request]) throws -> (k: Tensor, v: Tensor) {
        let block = j == 0 ? own : buffers[j - 1]
        for r in received[j] {
            try outer?.complete(r, on: run.post)
            try outer?.complete(r, on: run.stream)
        }
        try run.stream.barrier()
        guard let outer, j < nodes - 1 else { return block }
        let next = (node + 1) % nodes, previous = (node + nodes - 1) % nodes
        let incoming = buffers[j]
        for (i, (t, slot)) in [(block.k, incoming.k), (block.v, incoming.v)].enumerated() {
            if t.elementCount > 0 {
                let after = received[j].isEmpty ? [] : [received[j][i]]
                sent.append(try outer.send(t.slice, to: next, tag: tag + i, after: after, on: run.post))
            }
            if slot.elementCount > 0 {
                received[j + 1].append(try outer.receive(into: slot.slice, from: previous, tag: tag + i, on: run.post))
            }
        }
        run.requests += received[j + 1]
        return block
    }

    func calls() throws -> Int {
        let own = run.set(run.comm.rank)
        return try (0..<run.comm.size).reduce(0) { $0 + (try run.pairs.pairs(queries: own, keys: run.set($1)).count) }
    }

    // MARK: Forward

    func forward(q: Tensor, k: Tensor, v: Tensor, out: AttentionOutput) throws {
        let own = run.set(run.comm.rank), stream = run.stream
        let acc = try QueryAccumulator(set: own, headsQ: run.shape.headsQ, headDim: run.d,
                                       o: out.o.dtype == .f32 ? out.o : nil, device: run.device)
        let buffers = try outerBuffers()
        var received = [[C.Request]](repeating: [], count: nodes + 1), sent: [C.Request] = []
        for j in 0..<nodes {
            let block = try advance(step: j, own: (k, v), buffers: buffers, received: &received, sent: &sent)
            try run.post.submit()
            run.requests += try ring(step: j).forward(q: q, k: block.k, v: block.v, into: acc, tracer: &run.tracer,
                                                      post: run.post, compute: stream)
        }
        for s in sent { try outer?.complete(s, on: stream) }
        run.requests += sent
        run.calls += try calls()
        try acc.finishUnreached(on: stream)
        try run.store(acc.o, into: out.o)
        try acc.copyLSE(into: out.lse, on: stream)
    }

    // MARK: Backward

    func backward(q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, dO: Tensor, grads: AttentionGradients) throws {
        let own = run.set(run.comm.rank), stream = run.stream, t = own.tokens
        let hkv = run.shape.headsKV, d = run.d
        let lsePieces = try run.splitLSE(lse, set: own, heads: run.shape.headsQ)
        let maxKey = (0..<run.comm.size).map { run.set($0).maxPieceTokens }.max() ?? 1
        let acc = try GradientAccumulator(set: own, headsQ: run.shape.headsQ, headsKV: hkv, headDim: d, maxKeyPieceTokens: maxKey,
                                          dq: grads.dq.dtype == .f32 ? grads.dq : nil, device: run.device)
        let direct = grads.dk.dtype == .f32
        let scratch = try ScratchArena.allocate(run.device, [([max(1, t), hkv, d], .f32), ([max(1, t), hkv, d], .f32)])
        let dk = direct ? grads.dk : try scratch[0].rows(0, t), dv = direct ? grads.dv : try scratch[1].rows(0, t)
        // The other nodes' sums for this rank's block, received up front, one pair per node.
        var returning: [(k: Tensor, v: Tensor, requests: [C.Request])] = []
        if let outer, t > 0 {
            for j in 1..<nodes {
                let b = try ScratchArena.allocate(run.device, [([t, hkv, d], .f32), ([t, hkv, d], .f32)])
                let from = (node + j) % nodes
                let r = [try outer.receive(into: b[0].slice, from: from, tag: tag + 4, on: run.post),
                         try outer.receive(into: b[1].slice, from: from, tag: tag + 5, on: run.post)]
                run.requests += r
                returning.append((b[0], b[1], r))
            }
        }
        let buffers = try outerBuffers()
        var received = [[C.Request]](repeating: [], count: nodes + 1), sent: [C.Request] = []
        for j in 0..<nodes {
            let block = try advance(step: j, own: (k, v), buffers: buffers, received: &received, sent: &sent)
            try run.post.submit()
            let tokens = block.k.shape[0]
            let sums = j == 0 ? [dk, dv] : try ScratchArena.allocate(run.device, [([max(1, tokens), hkv, d], .f32),
                                                                                  ([max(1, tokens), hkv, d], .f32)]).map { try $0.rows(0, tokens) }
            run.requests += try ring(step: j).backward(q: q, k: block.k, v: block.v, o: o, dO: dO, lse: lsePieces, grads: acc,
                                                       dk: sums[0], dv: sums[1], tracer: &run.tracer, post: run.post, compute: stream)
            if let outer, j > 0, tokens > 0 {
                let owner = sourceNode(step: j)
                run.requests += [try outer.send(sums[0].slice, to: owner, tag: tag + 4, on: stream),
                                 try outer.send(sums[1].slice, to: owner, tag: tag + 5, on: stream)]
            }
        }
        for s in sent { try outer?.complete(s, on: stream) }
        run.requests += sent
        for r in returning {
            for request in r.requests { try outer?.complete(request, on: stream) }
            try stream.barrier()
            try GradientAccumulator.add(r.k, into: dk, on: stream)
            try GradientAccumulator.add(r.v, into: dv, on: stream)
        }
        try stream.barrier()
        run.calls += try calls()
        try acc.finishUnreached(on: stream)
        try run.store(acc.dq, into: grads.dq)
        try run.store(dk, into: grads.dk)
        try run.store(dv, into: grads.dv)
    }
}
