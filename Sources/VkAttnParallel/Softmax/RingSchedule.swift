import VkAttn
/// Ring attention on one rank of a ring of `comm.size` members (Liu et al., Ring Attention;
/// Brandon et al., Striped Attention): member m holds K/V rows for `members[m]`'s pieces.
/// At step i the rank computes against the block of member r - i while that block moves on
/// to r + 1 and the block of r - i - 1 arrives (two buffers, one computing, one receiving).
/// Everything is posted and recorded at once; the GPU waits only where a block is consumed.
/// Under a mask, blocks travel only as far as their last user (`RingReach`).
struct RingSchedule<C: Communicator> {
    let comm: C
    let members: [PieceSet]
    let pairs: PairAttention
    let headsKV: Int
    let headDim: Int
    let dtype: DType
    let tag: Int
    /// The query pieces of each member; nil: `members` (see `RingReach`).
    var queries: [PieceSet]? = nil
    /// Every block visits every member (see `RingReach`).
    var wholeRing = false

    var size: Int { comm.size }
    var rank: Int { comm.rank }
    var next: Int { (rank + 1) % size }
    var previous: Int { (rank + size - 1) % size }
    func source(step i: Int) -> Int { (rank - i % size + size) % size }
    var maxTokens: Int { members.map(\.tokens).max() ?? 1 }

    /// Rotating K/V buffers (two of each), or none for a single member.
    func rotationBuffers() throws -> (k: [Tensor], v: [Tensor]) {
        guard size > 1 else { return ([], []) }
        let t = try ScratchArena.allocate(comm.device, [([maxTokens, headsKV, headDim], dtype)] + [([Int], DType)](repeating: ([maxTokens, headsKV, headDim], dtype), count: 3))
        return ([t[0], t[1]], [t[2], t[3]])
    }

    /// The K/V rotation: the requests in flight.
    struct Rotation {
        var received: (C.Request, C.Request)?
        /// The last sends out of each rotating buffer (a receive into it follows them).
        var sentFrom: [(C.Request, C.Request)?] = [nil, nil]
        var sends: [C.Request] = []
        var requests: [C.Request] = []
        /// The compute stream's last submission (the previous step's, which read the slots).
        var computed: Submission?
    }

    /// The block of step i, once its arrival is completed: on `post` first (the staged path
    /// copies it out of staging there, before it is forwarded), then on `compute`, whose batch
    /// then holds the GPU wait.
    func arrive(step i: Int, k: Tensor, v: Tensor, buffers: (k: [Tensor], v: [Tensor]), state: Rotation,
                post: Stream, compute: Stream) throws -> (k: Tensor, v: Tensor) {
        let s = source(step: i)
        if let received = state.received {
            for stream in [post, compute] {
                try comm.complete(received.0, on: stream)
                try comm.complete(received.1, on: stream)
            }
        }
        try compute.barrier()
        return i == 0 ? (k, v) : (try buffers.k[i % 2].rows(0, members[s].tokens), try buffers.v[i % 2].rows(0, members[s].tokens))
    }

    /// Posts, on `post`, step i's forwarding of `block` (when the block travels further) and
    /// the receive of the next step's block (when it reaches this rank).
    func forwardBlock(step i: Int, block: (k: Tensor, v: Tensor)?, buffers: (k: [Tensor], v: [Tensor]), reach: RingReach,
                      state: inout Rotation, post: Stream) throws {
        let filled = state.received.map { [$0.0, $0.1] } ?? []
        state.received = nil
        // The receives posted below (and the backward's accumulator receives after them) may
        // overwrite a slot the previous step's compute read. A receive's destination is free
        // once its stream's work so far is done; at a step without a block nothing else is
        // recorded on `post`, whose submit would then hand back an older submission than that
        // compute's: record a barrier (a new submission, after the compute's on a shared
        // queue) and wait for the compute (another queue).
        if let computed = state.computed { try post.wait(for: computed) }
        try post.barrier()
        if let block, reach.sendsBlock(member: rank, source: source(step: i)) {
            let sk = try comm.send(block.k.slice, to: next, tag: tag, after: filled.isEmpty ? [] : [filled[0]], on: post)
            let sv = try comm.send(block.v.slice, to: next, tag: tag + 1, after: filled.isEmpty ? [] : [filled[1]], on: post)
            if i > 0 { state.sentFrom[i % 2] = (sk, sv) }
            state.sends += [sk, sv]
            state.requests += [sk, sv]
        }
        let s = source(step: i + 1)
        guard i + 1 < size, reach.hop(member: rank, source: s) <= reach.reach[s] else { return }
        let incoming = members[s].tokens
        let reading = state.sentFrom[(i + 1) % 2]
        let rk = try comm.receive(into: try buffers.k[(i + 1) % 2].rows(0, incoming).slice, from: previous, tag: tag,
                                  after: reading.map { [$0.0] } ?? [], on: post)
        let rv = try comm.receive(into: try buffers.v[(i + 1) % 2].rows(0, incoming).slice, from: previous, tag: tag + 1,
                                  after: reading.map { [$0.1] } ?? [], on: post)
        state.received = (rk, rv)
        state.requests += [rk, rv]
    }

    /// Whether step i's block reaches this rank.
    func present(step i: Int, reach: RingReach) -> Bool {
        let s = source(step: i)
        return reach.hop(member: rank, source: s) <= reach.reach[s]
    }

    /// Forward: the rank's queries (its own member's pieces) against every block that
    /// reaches it, merged into `acc`; a step whose pairs the mask all skips computes nothing,
    /// and a block travels only as far as its last user (`RingReach`). Each step records its
    /// compute first, then posts the transfers on `post` and submits `post` before `compute`:
    /// the copies are released before the step's kernels start, not after they finish (both
    /// streams share the queue). Returns the requests.
    func forward(q: Tensor, k: Tensor, v: Tensor, into acc: QueryAccumulator, tracer: inout RankTracer,
                 post: Stream, compute: Stream) throws -> [C.Request] {
        let reach = try RingReach(members: members, queries: queries, pairs: pairs, wholeRing: wholeRing)
        let buffers = try rotationBuffers()
        var rotation = Rotation()
        for i in 0..<size {
            let s = source(step: i)
            var block: (k: Tensor, v: Tensor)?
            if present(step: i, reach: reach) {
                let arrived = try arrive(step: i, k: k, v: v, buffers: buffers, state: rotation, post: post, compute: compute)
                if reach.needs[rank][s] {
                    try tracer.begin("ring step \(i): block of rank \(s)", on: compute)
                    try acc.accumulate(pairs, q: q, k: arrived.k, v: arrived.v, keys: members[s], on: compute)
                    try tracer.end(on: compute)
                }
                block = arrived
            }
            try forwardBlock(step: i, block: block, buffers: buffers, reach: reach, state: &rotation, post: post)
            try post.submit()
            rotation.computed = try compute.submit()
        }
        for sent in rotation.sends { try comm.complete(sent, on: compute) }
        return rotation.requests
    }

    /// Backward: every block that reaches the rank is given the global (O, LSE) of the rank's
    /// queries; dQ sums in `grads`, and each block's dK/dV accumulator (fp32) travels along
    /// the ring with it as far as the block goes; its last member sends it straight home, where
    /// it arrives complete in `dk`, `dv` ([tokens, Hkv, D] fp32) (a block no other member needs
    /// sums at home). The accumulator of step i arrives while step i computes its contribution
    /// into a step buffer; the sum is formed after, and sent on during step i + 1. A member
    /// that only relays the block forwards the accumulator unchanged.
    func backward(q: Tensor, k: Tensor, v: Tensor, o: Tensor, dO: Tensor, lse: [Tensor], grads: GradientAccumulator,
                  dk: Tensor, dv: Tensor, tracer: inout RankTracer, post: Stream, compute: Stream) throws -> [C.Request] {
        let reach = try RingReach(members: members, queries: queries, pairs: pairs, wholeRing: wholeRing)
        let buffers = try rotationBuffers()
        var rotation = Rotation()
        let shape = [maxTokens, headsKV, headDim]
        let scratch = size > 1 ? try ScratchArena.allocate(comm.device, [([Int], DType)](repeating: (shape, .f32), count: 6)) : []
        var accSentFrom: [(C.Request, C.Request)?] = [nil, nil]
        var accSends: [C.Request] = []
        var requests: [C.Request] = []
        var final: (C.Request, C.Request)?
        let home = reach.reach[rank]
        for i in 0..<size {
            let s = source(step: i), tokens = members[s].tokens
            guard present(step: i, reach: reach) else {
                try forwardBlock(step: i, block: nil, buffers: buffers, reach: reach, state: &rotation, post: post)
                try post.submit()
                rotation.computed = try compute.submit()
                continue
            }
            let block = try arrive(step: i, k: k, v: v, buffers: buffers, state: rotation, post: post, compute: compute)
            // A block that never leaves its owner sums straight into dK, dV.
            let travels = reach.reach[s] > 0
            let accK = travels ? try scratch[i % 2].rows(0, tokens) : dk
            let accV = travels ? try scratch[2 + i % 2].rows(0, tokens) : dv
            let stepK = i == 0 ? accK : try scratch[4].rows(0, tokens)
            let stepV = i == 0 ? accV : try scratch[5].rows(0, tokens)
            let uses = reach.needs[rank][s]
            if i == 0 || uses {
                var started = [Bool](repeating: false, count: members[s].pieces.count)
                try tracer.begin("ring backward step \(i): block of rank \(s)", on: compute)
                try grads.accumulate(pairs, q: q, o: o, dO: dO, lse: lse, k: block.k, v: block.v, keys: members[s],
                                     dk: stepK, dv: stepV, keyStarted: &started, on: compute)
                try GradientAccumulator.finishUnreached(keys: members[s], dk: stepK, dv: stepV, started: started, on: compute)
                try tracer.end(on: compute)
            }
            try forwardBlock(step: i, block: block, buffers: buffers, reach: reach, state: &rotation, post: post)
            var arriving: (C.Request, C.Request)?
            if i > 0 {
                let reading = accSentFrom[i % 2]
                let rk = try comm.receive(into: accK.slice, from: previous, tag: tag + 2, after: reading.map { [$0.0] } ?? [], on: post)
                let rv = try comm.receive(into: accV.slice, from: previous, tag: tag + 3, after: reading.map { [$0.1] } ?? [], on: post)
                arriving = (rk, rv)
                requests += [rk, rv]
            }
            if i == size - 1 && home > 0 {
                let last = (rank + home) % size
                let rk = try comm.receive(into: dk.slice, from: last, tag: tag + 4, on: post)
                let rv = try comm.receive(into: dv.slice, from: last, tag: tag + 5, on: post)
                final = (rk, rv)
                requests += [rk, rv]
            }
            try post.submit()
            rotation.computed = try compute.submit()
            if let arriving {
                try comm.complete(arriving.0, on: compute)
                try comm.complete(arriving.1, on: compute)
                try compute.barrier()
                if uses {
                    try GradientAccumulator.add(stepK, into: accK, on: compute)
                    try GradientAccumulator.add(stepV, into: accV, on: compute)
                    try compute.barrier()
                }
            }
            if travels {
                let onward = reach.sendsBlock(member: rank, source: s)
                let (to, t) = onward ? (next, tag + 2) : (s, tag + 4)
                let sk = try comm.send(accK.slice, to: to, tag: t, after: arriving.map { [$0.0] } ?? [], on: compute)
                let sv = try comm.send(accV.slice, to: to, tag: t + 1, after: arriving.map { [$0.1] } ?? [], on: compute)
                accSentFrom[i % 2] = (sk, sv)
                accSends += [sk, sv]
                requests += [sk, sv]
            }
        }
        // The trip home of a block that reaches this rank only after its last step's posts.
        if final == nil && home > 0 {
            let last = (rank + home) % size
            let rk = try comm.receive(into: dk.slice, from: last, tag: tag + 4, on: post)
            let rv = try comm.receive(into: dv.slice, from: last, tag: tag + 5, on: post)
            try post.submit()
            final = (rk, rv)
            requests += [rk, rv]
        }
        if let final {
            try comm.complete(final.0, on: compute)
            try comm.complete(final.1, on: compute)
        }
        for sent in accSends + rotation.sends { try comm.complete(sent, on: compute) }
        try compute.barrier()
        return rotation.requests + requests
    }
}
