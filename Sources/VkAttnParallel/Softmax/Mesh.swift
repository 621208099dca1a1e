import VkAttn
/// The heads x context mesh of one rank (Ulysses degree u, ring degree N / u): its Ulysses
/// group (u consecutive ranks, rank g*u + pos) and its ring (the ranks at the same position
/// of every group). The all-to-all inside the group turns the members' sequence shards into
/// one shard of the group's tokens (the members' pieces one after another) for Hq / u query
/// heads; the ring then treats each group as one member.
struct Mesh<C: Communicator> {
    enum HeadKind { case query, keyValue }

    let run: RankRun<C>
    let u: Int
    let pos: Int
    let group: C?
    let ring: C
    let members: [PieceSet]
    let gathered: PieceSet
    let rowStarts: [Int]
    let ringMembers: [PieceSet]
    let hq: Int
    let hkv: Int
    /// u > Hkv: each KV head serves u / Hkv members, whose dK/dV contributions add up.
    let replicatedKV: Bool

    init(run: RankRun<C>, ulysses u: Int) throws {
        let comm = run.comm
        let n = comm.size, groups = n / u
        let g = comm.rank / u
        self.run = run
        self.u = u
        pos = comm.rank % u
        group = u > 1 ? try comm.subgroup(Array(g * u..<(g + 1) * u)) : nil
        ring = u == 1 ? comm : try comm.subgroup((0..<groups).map { $0 * u + comm.rank % u })
        func groupSets(_ g: Int) -> [PieceSet] { (0..<u).map { run.set(g * u + $0) } }
        members = groupSets(g)
        gathered = PieceSet(concatenating: members)
        rowStarts = members.reduce(into: [0]) { $0.append($0[$0.count - 1] + $1.tokens) }
        ringMembers = (0..<groups).map { PieceSet(concatenating: groupSets($0)) }
        hq = run.shape.headsQ / u
        replicatedKV = run.shape.headsKV % u != 0
        hkv = replicatedKV ? 1 : run.shape.headsKV / u
    }

    var stream: Stream { run.stream }
    var d: Int { run.d }
    var localTokens: Int { members[pos].tokens }

    func firstHead(_ kind: HeadKind, member m: Int) -> Int {
        kind == .query ? m * hq : (replicatedKV ? m / (u / run.shape.headsKV) : m * hkv)
    }

    func heads(_ kind: HeadKind) -> Int { kind == .query ? hq : hkv }

    /// Sends first (in ring order from the next member), then receives: no member waits on
    /// another's order of posts.
    func exchange(_ blocks: (Int) throws -> BufferSlice, into slots: (Int) throws -> BufferSlice, tag: Int) throws -> [C.Request] {
        guard let group else { return [] }
        var posted: [C.Request] = []
        for k in 1..<u {
            let peer = (pos + k) % u
            posted.append(try group.send(try blocks(peer), to: peer, tag: tag, on: stream))
        }
        var received: [C.Request] = []
        for k in 1..<u {
            let peer = (pos + u - k) % u
            received.append(try group.receive(into: try slots(peer), from: peer, tag: tag, on: stream))
        }
        run.requests += posted + received
        return received
    }

    /// Sequence shard [localTokens, H, D] -> the group's tokens for this rank's head slice,
    /// [gatheredTokens, slice, D], for each tensor. Unchanged when u = 1.
    func gatherHeads(_ tensors: [(Tensor, HeadKind)], tag: Int) throws -> [Tensor] {
        guard u > 1 else { return tensors.map(\.0) }
        var out: [Tensor] = []
        var arrivals: [C.Request] = []
        for (i, (t, kind)) in tensors.enumerated() {
            let width = heads(kind), rowWords = run.words(width, t.dtype), stride = run.words(t.shape[1], t.dtype)
            let shapes = [([gathered.tokens, width, d], t.dtype)] + [([Int], DType)](repeating: ([localTokens, width, d], t.dtype), count: u)
            let buffers = try ScratchArena.allocate(run.device, shapes)
            let target = buffers[0]
            for m in 0..<u {
                let headWords = firstHead(kind, member: m) * d * t.dtype.byteSize / 4
                let destination = m == pos ? target : buffers[1 + m]
                try ParallelKernels.copyRows(from: t.slice, to: destination.slice, rows: localTokens, width: rowWords,
                                             sourceOffset: headWords, sourceStride: stride,
                                             destinationOffset: m == pos ? rowStarts[pos] * rowWords : 0, destinationStride: rowWords, on: stream)
            }
            try stream.barrier()
            arrivals += try exchange({ buffers[1 + $0].slice },
                                     into: { try target.rows(rowStarts[$0], members[$0].tokens).slice }, tag: tag + i)
            out.append(target)
        }
        // The ring forwards the gathered K/V from the post stream: complete there too, after
        // the compute stream (which holds the staged path's copies out of staging).
        for r in arrivals { try group?.complete(r, on: stream) }
        try stream.barrier()
        try stream.submit()
        for r in arrivals { try group?.complete(r, on: run.post) }
        return out
    }

    /// LSE [Hq, localTokens] -> per-piece [hq, pieceTokens] tensors of the gathered set.
    func gatherLSE(_ lse: Tensor, tag: Int) throws -> [Tensor] {
        guard u > 1 else { return try run.splitLSE(lse, set: gathered, heads: hq) }
        let blocks = try ScratchArena.allocate(run.device, members.map { ([hq, $0.tokens], .f32) })
        let mine = localTokens
        let arrivals = try exchange({ try lse.rows($0 * hq, hq).slice }, into: { blocks[$0].slice }, tag: tag)
        for r in arrivals { try group?.complete(r, on: stream) }
        try stream.barrier()
        let pieces = try ScratchArena.allocate(run.device, gathered.pieces.map { ([hq, max(1, $0.tokens)], .f32) })
        var a = 0
        for (m, set) in members.enumerated() {
            for (p, piece) in set.pieces.enumerated() {
                defer { a += 1 }
                guard piece.tokens > 0 else { continue }
                let fromSelf = m == pos
                try ParallelKernels.copyRows(from: fromSelf ? lse.slice : blocks[m].slice, to: pieces[a].slice, rows: hq, width: piece.tokens,
                                             sourceOffset: (fromSelf ? pos * hq * mine : 0) + set.rowOffsets[p],
                                             sourceStride: fromSelf ? mine : set.tokens, destinationStride: piece.tokens, on: stream)
            }
        }
        try stream.barrier()
        return pieces
    }

    /// The group's outputs for this rank's head slice back to the members' sequence shards:
    /// O rows of member m (in the output type) and its LSE columns, into `out`'s head slice m.
    func scatterOutputs(_ acc: QueryAccumulator, into out: AttentionOutput, tag: Int) throws {
        let oType = out.o.dtype
        var source = acc.o
        if oType != .f32 {
            source = try ScratchArena.allocate(run.device, [([gathered.tokens, hq, d], oType)])[0]
            try run.store(acc.o, into: source)
        }
        let rowWords = run.words(hq, oType), outStride = run.words(run.shape.headsQ, oType)
        let mine = localTokens
        // LSE blocks [hq, tokens of member m], assembled from the pieces (own block in place).
        let lseBlocks = try ScratchArena.allocate(run.device, members.map { ([hq, $0.tokens], .f32) })
        var a = 0
        for (m, set) in members.enumerated() {
            for (p, piece) in set.pieces.enumerated() {
                defer { a += 1 }
                guard piece.tokens > 0 else { continue }
                let toSelf = m == pos
                try ParallelKernels.copyRows(from: acc.lse[a].slice, to: toSelf ? out.lse.slice : lseBlocks[m].slice,
                                             rows: hq, width: piece.tokens, sourceStride: piece.tokens,
                                             destinationOffset: (toSelf ? pos * hq * mine : 0) + set.rowOffsets[p],
                                             destinationStride: toSelf ? mine : set.tokens, on: stream)
            }
        }
        try ParallelKernels.copyRows(from: source.slice, to: out.o.slice, rows: mine, width: rowWords,
                                     sourceOffset: rowStarts[pos] * rowWords, sourceStride: rowWords,
                                     destinationOffset: pos * rowWords, destinationStride: outStride, on: stream)
        try stream.barrier()
        let received = try ScratchArena.allocate(run.device, [([Int], DType)](repeating: ([mine, hq, d], oType), count: u))
        var arrivals = try exchange({ try source.rows(rowStarts[$0], members[$0].tokens).slice }, into: { received[$0].slice }, tag: tag)
        arrivals += try exchange({ lseBlocks[$0].slice }, into: { try out.lse.rows($0 * hq, hq).slice }, tag: tag + 1)
        for r in arrivals { try group?.complete(r, on: stream) }
        try stream.barrier()
        for m in 0..<u where m != pos {
            try ParallelKernels.copyRows(from: received[m].slice, to: out.o.slice, rows: mine, width: rowWords,
                                         sourceStride: rowWords, destinationOffset: m * rowWords, destinationStride: outStride, on: stream)
        }
        try stream.barrier()
    }

    /// The group's gradients for this rank's head slice (fp32) back to the members' shards;
    /// replicated KV heads sum the contributions of every member that used them.
    func scatterGradients(dq: Tensor, dk: Tensor, dv: Tensor, into grads: AttentionGradients, tag: Int) throws {
        let mine = localTokens, hQ = run.shape.headsQ, hKV = run.shape.headsKV
        let qAcc = grads.dq.dtype == .f32 ? grads.dq : try ScratchArena.allocate(run.device, [([mine, hQ, d], .f32)])[0]
        let kvDirect = grads.dk.dtype == .f32 && !replicatedKV
        let kvScratch = kvDirect ? [] : try ScratchArena.allocate(run.device, [([mine, hKV, d], .f32), ([mine, hKV, d], .f32)])
        let kAcc = kvDirect ? grads.dk : kvScratch[0], vAcc = kvDirect ? grads.dv : kvScratch[1]
        if replicatedKV {
            try stream.fill(kAcc.slice, word: 0)
            try stream.fill(vAcc.slice, word: 0)
            try stream.barrier()
        }
        let parts: [(Tensor, Tensor, HeadKind)] = [(dq, qAcc, .query), (dk, kAcc, .keyValue), (dv, vAcc, .keyValue)]
        var staging: [[Tensor]] = []
        var arrivals: [C.Request] = []
        for (i, (source, _, kind)) in parts.enumerated() {
            let received = try ScratchArena.allocate(run.device, [([Int], DType)](repeating: ([mine, heads(kind), d], .f32), count: u))
            staging.append(received)
            arrivals += try exchange({ try source.rows(rowStarts[$0], members[$0].tokens).slice }, into: { received[$0].slice }, tag: tag + i)
        }
        for r in arrivals { try group?.complete(r, on: stream) }
        try stream.barrier()
        for (i, (source, target, kind)) in parts.enumerated() {
            let width = heads(kind), stride = target.shape[1] * d
            for m in 0..<u {
                let accumulate = kind == .keyValue && replicatedKV
                try ParallelKernels.copyRows(from: m == pos ? source.slice : staging[i][m].slice, to: target.slice, rows: mine,
                                             width: width * d, sourceOffset: m == pos ? rowStarts[pos] * width * d : 0, sourceStride: width * d,
                                             destinationOffset: firstHead(kind, member: m) * d, destinationStride: stride, accumulate: accumulate, on: stream)
                if accumulate { try stream.barrier() }
            }
        }
        try stream.barrier()
        try run.store(qAcc, into: grads.dq)
        try run.store(kAcc, into: grads.dk)
        try run.store(vAcc, into: grads.dv)
    }
}
