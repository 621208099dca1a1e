import VkAttn
/// Exact softmax attention over sequences sharded across the ranks of a device group: each
/// rank holds the tokens `plan` gives it (Q, K, V, O [localTokens, heads, D], LSE
/// [Hq, localTokens], see `ShardPlan`); `scheme` picks how K/V (or heads) move. Outputs and
/// gradients equal the single-device `FlashAttention`'s within fp32 rounding: partials stay
/// fp32 until the final write.
///
/// Supported: masks causal, sliding window (left, right, both, with or without causal) and
/// block-sparse (contiguous and zigzag sharding on block boundaries) with the default anchor
/// and no diagonal offset ("Masks across ranks" in docs/PARALLEL.md), scale, softcap; MHA/GQA/MQA; f32 and f16 storage; packed
/// variable-length sequences (a dense batch is the equal-length case). An empty problem (no
/// query heads, or a plan without tokens: ``isEmpty(_:)``) returns at once on every rank with
/// the path `empty (no kernel)`, no kernel and no message. Every check happens
/// before anything is posted; a failure on one rank after that aborts the group so no peer
/// waits forever.
public struct ContextParallelAttention: Sendable, Hashable {
    /// How the sequences are split over the ranks.
    public var plan: ShardPlan
    /// How K/V (or heads) move between the ranks.
    public var scheme: ContextParallelScheme
    /// The attention configuration: mask (causal, window, block mask), scale, softcap, output type, kernels.
    public var attention: FlashAttention

    /// - Parameters:
    ///   - plan: The sharding of the sequences.
    ///   - scheme: The exchange scheme.
    ///   - attention: The attention configuration.
    public init(plan: ShardPlan, scheme: ContextParallelScheme = .ring, attention: FlashAttention = FlashAttention()) {
        self.plan = plan
        self.scheme = scheme
        self.attention = attention
    }

    /// The shape every rank checks (`ContextParallelShape`'s softmax form).
    public typealias Shape = ContextParallelShape

    /// The op name in errors.
    public static let opName = "contextParallel.attention"

    /// Checks the configuration for `ranks` ranks (the same on every rank): mask, options,
    /// heads against the scheme, head dim, dtype. Throws the typed error.
    /// - Parameters:
    ///   - shape: Heads, head dim and type of the problem.
    ///   - ranks: The communicator's size; must equal the plan's.
    /// - Throws: `VkAttnError` for a rank count other than the plan's, a mask with another
    ///   anchor or a diagonal offset, a block mask with striped sharding or with chunks that do
    ///   not start on a block boundary (`unsupported`), options the attention op refuses, a type other than f32 or f16, head slices that
    ///   do not divide Hkv, heads that the all-to-all cannot shard, or a Ulysses degree that does
    ///   not divide the ranks (or a double ring's `ranksPerNode` that does not); a block mask
    ///   with a pattern per head under a scheme that splits the heads (`unsupported`).
    public func validate(_ shape: Shape, ranks: Int) throws {
        let op = Self.opName
        guard ranks == plan.ranks else {
            throw VkAttnError.invalidValue(op: op, operand: "ranks", reason: "the communicator has \(ranks) ranks, the plan \(plan.ranks)")
        }
        try scheme.expect(linear: false, op: op)
        let mask = attention.mask
        guard mask.anchor == .bottomRight, mask.diagonalOffset == 0 else {
            throw VkAttnError.unsupported(op: op, reason: "context-parallel attention takes the global mask with its default anchor and no diagonal offset (got anchor \(mask.anchor), offset \(mask.diagonalOffset)): the schedules derive each piece pair's anchor and offset themselves")
        }
        // A mask with a pattern per query head runs where every call computes all heads.
        if let blocks = mask.blocks, blocks.heads > 1 {
            switch scheme {
            case .ring, .allGather(headSlices: 1): break
            default:
                throw VkAttnError.unsupported(op: op, reason: "a block mask with a pattern per head (\(blocks.heads) patterns) runs on the ring or the all-gather with one head slice, whose calls compute every head; \(scheme) splits the heads")
            }
        }
        let total = plan.totalTokens
        let g = try AttentionGeometry.resolve(op: op, qShape: [total, shape.headsQ, shape.headDim],
                                              kShape: [total, shape.headsKV, shape.headDim], vShape: [total, shape.headsKV, shape.headDim],
                                              dtype: shape.dtype, layout: .packed(cuSeqlensQ: plan.cuSeqlens, cuSeqlensK: plan.cuSeqlens))
        _ = try attention.checkOptions(op: op, g)
        guard shape.dtype == .f32 || shape.dtype == .f16 else {
            throw VkAttnError.dtypeMismatch(op: op, operand: "Q", expected: "f32 or f16", actual: shape.dtype.rawValue)
        }
        _ = try attention.outputType(op: op, input: shape.dtype)
        switch scheme {
        case .ring:
            break
        case .tokenRing, .doubleRing:
            try Self.checkTwoWayRing(scheme, mask: mask, ranks: ranks)
        case let .allGather(slices):
            guard slices >= 1, shape.headsKV % slices == 0 else {
                throw VkAttnError.invalidValue(op: op, operand: "headSlices", reason: "\(slices) does not divide the \(shape.headsKV) key/value heads")
            }
        case .allToAll:
            try Self.checkUlysses(shape, ulysses: ranks)
        case let .hierarchical(u):
            guard u >= 1, ranks % u == 0 else {
                throw VkAttnError.invalidValue(op: op, operand: "ulysses", reason: "\(u) does not divide \(ranks) ranks")
            }
            try Self.checkUlysses(shape, ulysses: u)
        case .lasp, .lasp2, .zeco:
            break  // refused above
        }
        // Every piece pair must have an expressible sub-mask (block masks: whole blocks; checked once here).
        let pieces = (0..<plan.ranks).flatMap { plan.pieces(rank: $0) }
        for p in pieces { for k in pieces { _ = try PieceRelation.between(query: p, key: k, mask: mask) } }
    }

    /// Whether the problem is empty (no query heads, or no token in the whole plan): every rank
    /// sees it alike, and each returns at once with empty outputs (zero dK, dV for key/value
    /// heads without query heads), no kernel and no message.
    /// - Parameter shape: The problem's heads, head dim and type.
    /// - Returns: True when nothing is computed.
    public func isEmpty(_ shape: Shape) -> Bool { shape.headsQ == 0 || plan.totalTokens == 0 }

    static func checkUlysses(_ shape: Shape, ulysses u: Int) throws {
        guard shape.headsQ % u == 0 else {
            throw VkAttnError.invalidValue(op: opName, operand: "heads", reason: "\(shape.headsQ) query heads are not divisible by \(u) ranks (all-to-all shards heads)")
        }
        guard shape.headsKV % u == 0 || u % shape.headsKV == 0 else {
            throw VkAttnError.invalidValue(op: opName, operand: "kvHeads", reason: "\(shape.headsKV) key/value heads neither divide nor are divisible by \(u) ranks")
        }
    }

    /// Checks one rank's tensors (after `validate`).
    func checkRank(_ shape: Shape, rank: Int, device: Device, tensors: [(String, Tensor, [Int], DType?)]) throws {
        for (name, t, expected, dtype) in tensors {
            try t.expect(op: Self.opName, name, shape: expected, dtype: dtype, device: device)
        }
        if shape.dtype == .f16 && !(device.enabled.shaderFloat16 && device.enabled.storageBuffer16BitAccess) {
            throw VkAttnError.unsupported(op: Self.opName, reason: "f16 needs shaderFloat16 and storageBuffer16BitAccess, which \(device.label) lacks")
        }
    }

    static func shape(q: Tensor, k: Tensor) throws -> Shape {
        guard q.shape.count == 3, k.shape.count == 3 else {
            throw VkAttnError.shapeMismatch(op: opName, operand: q.shape.count == 3 ? "K" : "Q", expected: "[localTokens, heads, headDim]",
                                            actual: "\(q.shape.count == 3 ? k.shape : q.shape)")
        }
        return Shape(headsQ: q.shape[1], headsKV: k.shape[1], headDim: q.shape[2], dtype: q.dtype)
    }

    // MARK: Forward

    /// One rank's forward (every rank of `communicator` calls it with its local tensors).
    /// - Parameters:
    ///   - q: This rank's Q [localTokens, Hq, D].
    ///   - k: This rank's K [localTokens, Hkv, D].
    ///   - v: This rank's V, K's shape.
    ///   - output: O [localTokens, Hq, D] and LSE [Hq, localTokens] to write; nil allocates them.
    ///   - comm: This rank's communicator; its size must equal the plan's ranks.
    /// - Returns: O and LSE of this rank's queries over the whole sequence, and the schedule's path.
    /// - Throws: `VkAttnError` from ``validate(_:ranks:)`` (on every rank alike, nothing posted)
    ///   or for this rank's tensors (the group is then aborted); transfer and device errors.
    public func forward<C: Communicator>(q: Tensor, k: Tensor, v: Tensor, into output: AttentionOutput? = nil,
                                         communicator comm: C) async throws -> ContextParallelOutput {
        let shape = try Self.shape(q: q, k: k)
        try validate(shape, ranks: comm.size)
        let device = comm.device
        let tokens = plan.tokens(rank: comm.rank)
        let oType = try attention.outputType(op: Self.opName, input: shape.dtype)
        // A rank-specific error (its tensors) aborts the group: the other ranks may already
        // have posted. Errors of the shared configuration above happen on every rank alike.
        do {
            let out = try output ?? AttentionOutput(o: device.makeTensor(shape: [tokens, shape.headsQ, shape.headDim], dtype: oType),
                                                    lse: device.makeTensor(shape: [shape.headsQ, tokens], dtype: .f32))
            try checkRank(shape, rank: comm.rank, device: device, tensors: [
                ("Q", q, [tokens, shape.headsQ, shape.headDim], nil), ("K", k, [tokens, shape.headsKV, shape.headDim], shape.dtype),
                ("V", v, [tokens, shape.headsKV, shape.headDim], shape.dtype), ("O", out.o, [tokens, shape.headsQ, shape.headDim], oType),
                ("LSE", out.lse, [shape.headsQ, tokens], .f32)])
            // O and LSE are empty too (no rows or no heads); every rank returns here, nothing posted.
            if isEmpty(shape) { return ContextParallelOutput(output: out.o, lse: out.lse, path: emptyInputPath) }
            let run = try RankRun(comm: comm, plan: plan, attention: attention, shape: shape)
            let path = try await run.forward(q: q, k: k, v: v, out: out, scheme: scheme)
            return ContextParallelOutput(output: out.o, lse: out.lse, path: path)
        } catch {
            comm.abort(error)
            throw error
        }
    }

    /// One rank's backward from the forward's O and LSE: dQ, dK, dV of the rank's tokens
    /// (`gradientDType`, default the input type; f16 inputs may ask for f32).
    /// - Parameters:
    ///   - q: This rank's Q.
    ///   - k: This rank's K.
    ///   - v: This rank's V.
    ///   - o: This rank's O from the forward.
    ///   - lse: This rank's LSE from the forward.
    ///   - dO: The gradient of this rank's O.
    ///   - gradientDType: The type of dQ, dK, dV; nil means the inputs'.
    ///   - gradients: dQ, dK, dV to write; nil allocates them.
    ///   - comm: This rank's communicator.
    /// - Returns: dQ, dK, dV of this rank's tokens, and the schedule's path.
    /// - Throws: As ``forward(q:k:v:into:communicator:)``.
    public func backward<C: Communicator>(q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, dO: Tensor,
                                          gradientDType: DType? = nil, into gradients: AttentionGradients? = nil,
                                          communicator comm: C) async throws -> ContextParallelGradients {
        let shape = try Self.shape(q: q, k: k)
        try validate(shape, ranks: comm.size)
        let device = comm.device
        let tokens = plan.tokens(rank: comm.rank)
        let gType = try FlashAttention(outputDType: gradientDType).outputType(op: Self.opName, input: shape.dtype)
        let qShape = [tokens, shape.headsQ, shape.headDim], kShape = [tokens, shape.headsKV, shape.headDim]
        do {
            let grads = try gradients ?? AttentionGradients(dq: device.makeTensor(shape: qShape, dtype: gType),
                                                            dk: device.makeTensor(shape: kShape, dtype: gType),
                                                            dv: device.makeTensor(shape: kShape, dtype: gType))
            guard o.dtype == shape.dtype || (shape.dtype == .f16 && o.dtype == .f32) else {
                throw VkAttnError.dtypeMismatch(op: Self.opName, operand: "O", expected: shape.dtype == .f16 ? "f16 or f32" : "f32", actual: o.dtype.rawValue)
            }
            try checkRank(shape, rank: comm.rank, device: device, tensors: [
                ("Q", q, qShape, nil), ("K", k, kShape, shape.dtype), ("V", v, kShape, shape.dtype), ("O", o, qShape, nil),
                ("LSE", lse, [shape.headsQ, tokens], .f32), ("dO", dO, qShape, shape.dtype),
                ("dQ", grads.dq, qShape, gType), ("dK", grads.dk, kShape, gType), ("dV", grads.dv, kShape, gType)])
            if isEmpty(shape) {  // every rank returns here; dK, dV of keys no query saw are 0 (fills)
                try await recordZeros([grads.dq, grads.dk, grads.dv], on: device)
                return ContextParallelGradients(dq: grads.dq, dk: grads.dk, dv: grads.dv, path: emptyInputPath)
            }
            let run = try RankRun(comm: comm, plan: plan, attention: attention, shape: shape)
            let path = try await run.backward(q: q, k: k, v: v, o: o, lse: lse, dO: dO, grads: grads, scheme: scheme)
            return ContextParallelGradients(dq: grads.dq, dk: grads.dk, dv: grads.dv, path: path)
        } catch {
            comm.abort(error)
            throw error
        }
    }

    // MARK: All ranks at once

    /// Every rank's forward, concurrently (in-process groups); arrays indexed by rank. Checks
    /// every rank's tensors before any rank starts.
    /// - Parameters:
    ///   - q: Each rank's Q, in rank order.
    ///   - k: Each rank's K.
    ///   - v: Each rank's V.
    ///   - communicators: One per rank, in rank order.
    /// - Returns: Each rank's output, in rank order.
    /// - Throws: `VkAttnError` for any rank's tensors before any rank starts (the group stays
    ///   usable); afterwards the first rank's failure, which aborts the group.
    public func forward<C: Communicator>(q: [Tensor], k: [Tensor], v: [Tensor], communicators: [C]) async throws -> [ContextParallelOutput] {
        try precheck(communicators, [q, k, v])
        for r in communicators.indices {
            let shape = try Self.shape(q: q[r], k: k[r])
            try validate(shape, ranks: communicators.count)
            let t = plan.tokens(rank: r)
            try checkRank(shape, rank: r, device: communicators[r].device, tensors: [
                ("Q", q[r], [t, shape.headsQ, shape.headDim], nil), ("K", k[r], [t, shape.headsKV, shape.headDim], shape.dtype),
                ("V", v[r], [t, shape.headsKV, shape.headDim], shape.dtype)])
        }
        return try await onEveryRank(communicators) { comm in
            try await self.forward(q: q[comm.rank], k: k[comm.rank], v: v[comm.rank], communicator: comm)
        }
    }

    /// Every rank's backward, concurrently; arrays indexed by rank.
    /// - Parameters:
    ///   - q: Each rank's Q, in rank order.
    ///   - k: Each rank's K.
    ///   - v: Each rank's V.
    ///   - o: Each rank's O.
    ///   - lse: Each rank's LSE.
    ///   - dO: Each rank's dO.
    ///   - gradientDType: The type of the gradients; nil means the inputs'.
    ///   - communicators: One per rank, in rank order.
    /// - Returns: Each rank's gradients, in rank order.
    /// - Throws: As ``forward(q:k:v:communicators:)``.
    public func backward<C: Communicator>(q: [Tensor], k: [Tensor], v: [Tensor], o: [Tensor], lse: [Tensor], dO: [Tensor],
                                          gradientDType: DType? = nil, communicators: [C]) async throws -> [ContextParallelGradients] {
        try precheck(communicators, [q, k, v, o, lse, dO])
        for r in communicators.indices {
            let shape = try Self.shape(q: q[r], k: k[r])
            try validate(shape, ranks: communicators.count)
            let t = plan.tokens(rank: r)
            try checkRank(shape, rank: r, device: communicators[r].device, tensors: [
                ("Q", q[r], [t, shape.headsQ, shape.headDim], nil), ("K", k[r], [t, shape.headsKV, shape.headDim], shape.dtype),
                ("V", v[r], [t, shape.headsKV, shape.headDim], shape.dtype), ("O", o[r], [t, shape.headsQ, shape.headDim], nil),
                ("LSE", lse[r], [shape.headsQ, t], .f32), ("dO", dO[r], [t, shape.headsQ, shape.headDim], shape.dtype)])
        }
        return try await onEveryRank(communicators) { comm in
            let r = comm.rank
            return try await self.backward(q: q[r], k: k[r], v: v[r], o: o[r], lse: lse[r], dO: dO[r],
                                           gradientDType: gradientDType, communicator: comm)
        }
    }

    func precheck<C: Communicator>(_ communicators: [C], _ lists: [[Tensor]]) throws {
        guard !communicators.isEmpty, communicators.enumerated().allSatisfy({ $0.offset == $0.element.rank }) else {
            throw VkAttnError.invalidValue(op: Self.opName, operand: "communicators", reason: "must be one per rank, in rank order")
        }
        for list in lists where list.count != communicators.count {
            throw VkAttnError.invalidValue(op: Self.opName, operand: "tensors", reason: "\(list.count) tensors for \(communicators.count) ranks")
        }
    }
}
