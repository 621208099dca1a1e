import VkAttn

/// Exact softmax attention over a packed batch placed by a ``PlacementPlan``: each group of
/// the plan runs on its window of ranks, in the plan's global order, as
/// ``ContextParallelAttention`` (`plan: group.shardPlan`) on the window's subgroup, or as one
/// local packed `FlashAttention` call where the window is one rank (no message). Outputs and
/// gradients equal the single-device `FlashAttention`'s over the whole batch within fp32
/// rounding.
///
/// Tensors per rank r (the plan's local layout: r's groups one after another): Q, K, V, O
/// [tokens(r), heads, D], LSE [Hq, tokens(r)]. Messages of different groups never match: each
/// group runs on a subgroup communicator, a context of its own (the schedules' tags repeat
/// inside it). A rank with no group (more ranks than the batch needs) returns at once.
///
/// Supported: mask none or causal, scale, softcap; MHA/GQA/MQA; f32 and f16 storage; the
/// schemes `.ring` and `.allGather(headSlices:)` for the groups of several ranks. An empty
/// problem (no query heads, or no token in the batch) returns at once on every rank with the
/// path `empty (no kernel)`. Every check happens before anything is posted; a failure on one
/// rank after that aborts the group so no peer waits forever.
public struct PlacedAttention: Sendable, Hashable {
    /// Where each sequence runs.
    public var plan: PlacementPlan
    /// The exchange scheme of the groups of several ranks: `.ring` or `.allGather(headSlices:)`.
    public var scheme: ContextParallelScheme
    /// The attention configuration: mask (none or causal), scale, softcap, output type, kernels.
    public var attention: FlashAttention

    /// The op name in errors.
    public static let opName = "parallel.placedAttention"

    /// - Parameters:
    ///   - plan: The placement of the sequences.
    ///   - scheme: The groups' exchange scheme (`.ring` or `.allGather(headSlices:)`).
    ///   - attention: The attention configuration.
    public init(plan: PlacementPlan, scheme: ContextParallelScheme = .ring, attention: FlashAttention = FlashAttention()) {
        self.plan = plan
        self.scheme = scheme
        self.attention = attention
    }

    /// The context-parallel op of one group of several ranks.
    /// - Parameter group: A group of ``plan``.
    /// - Returns: `ContextParallelAttention` over the group's shard plan with this scheme and attention.
    public func groupOp(_ group: PlacementPlan.Group) -> ContextParallelAttention {
        ContextParallelAttention(plan: group.shardPlan, scheme: scheme, attention: attention)
    }

    /// The path every rank reports: `placed: 2 groups [0-2]x1 seq ring zigzag; [3]x36 seq local`.
    public var path: String {
        "placed: \(plan.groups.count) group\(plan.groups.count == 1 ? "" : "s") " + plan.groups.map { $0.label(scheme: scheme) }.joined(separator: "; ")
    }

    /// Checks the configuration for `ranks` ranks (the same on every rank): the rank count, the
    /// scheme, and every group's configuration as `ContextParallelAttention.validate` checks it.
    /// - Parameters:
    ///   - shape: Heads, head dim and type of the problem.
    ///   - ranks: The communicator's size; must equal the plan's.
    /// - Throws: `VkAttnError` for a rank count other than the plan's, a scheme other than ring
    ///   or all-gather, and what `ContextParallelAttention.validate(_:ranks:)` throws for a group.
    public func validate(_ shape: ContextParallelShape, ranks: Int) throws {
        guard ranks == plan.ranks else {
            throw VkAttnError.invalidValue(op: Self.opName, operand: "ranks", reason: "the communicator has \(ranks) ranks, the plan \(plan.ranks)")
        }
        switch scheme {
        case .ring, .allGather: break
        default:
            throw VkAttnError.unsupported(op: Self.opName, reason: "\(scheme): placed groups run ring or allGather")
        }
        for group in plan.groups { try groupOp(group).validate(shape, ranks: group.ranks.count) }
    }

    /// Whether the problem is empty (no query heads, or no token in the batch).
    /// - Parameter shape: The problem's heads, head dim and type.
    /// - Returns: True when nothing is computed on any rank.
    public func isEmpty(_ shape: ContextParallelShape) -> Bool { shape.headsQ == 0 || plan.totalTokens == 0 }

    /// Q [localTokens, Hq, D] and K give the shape every rank checks.
    static func shape(q: Tensor, k: Tensor) throws -> ContextParallelShape {
        guard q.shape.count == 3, k.shape.count == 3 else {
            throw VkAttnError.shapeMismatch(op: opName, operand: q.shape.count == 3 ? "K" : "Q", expected: "[localTokens, heads, headDim]",
                                            actual: "\(q.shape.count == 3 ? k.shape : q.shape)")
        }
        return ContextParallelShape(headsQ: q.shape[1], headsKV: k.shape[1], headDim: q.shape[2], dtype: q.dtype)
    }

    /// Checks one rank's tensors (after `validate`).
    func checkRank(_ shape: ContextParallelShape, device: Device, tensors: [(String, Tensor, [Int], DType?)]) throws {
        for (name, t, expected, dtype) in tensors {
            try t.expect(op: Self.opName, name, shape: expected, dtype: dtype, device: device)
        }
        if shape.dtype == .f16 && !(device.enabled.shaderFloat16 && device.enabled.storageBuffer16BitAccess) {
            throw VkAttnError.unsupported(op: Self.opName, reason: "f16 needs shaderFloat16 and storageBuffer16BitAccess, which \(device.label) lacks")
        }
    }

    func inputTensors(_ shape: ContextParallelShape, rank: Int, q: Tensor, k: Tensor, v: Tensor) -> [(String, Tensor, [Int], DType?)] {
        let t = plan.tokens(rank: rank)
        return [("Q", q, [t, shape.headsQ, shape.headDim], nil), ("K", k, [t, shape.headsKV, shape.headDim], shape.dtype),
                ("V", v, [t, shape.headsKV, shape.headDim], shape.dtype)]
    }

    // MARK: Forward

    /// One rank's forward (every rank of `communicator` calls it with its local tensors).
    /// - Parameters:
    ///   - q: This rank's Q [tokens(rank), Hq, D].
    ///   - k: This rank's K [tokens(rank), Hkv, D].
    ///   - v: This rank's V, K's shape.
    ///   - output: O [tokens(rank), Hq, D] and LSE [Hq, tokens(rank)] to write; nil allocates them.
    ///   - comm: This rank's communicator; its size must equal the plan's ranks.
    /// - Returns: O and LSE of this rank's queries, and ``path``.
    /// - Throws: `VkAttnError` from ``validate(_:ranks:)`` (on every rank alike, nothing posted)
    ///   or for this rank's tensors (the group is then aborted); transfer and device errors.
    public func forward<C: Communicator>(q: Tensor, k: Tensor, v: Tensor, into output: AttentionOutput? = nil,
                                         communicator comm: C) async throws -> ContextParallelOutput {
        let shape = try Self.shape(q: q, k: k)
        try validate(shape, ranks: comm.size)
        let device = comm.device, tokens = plan.tokens(rank: comm.rank)
        let oType = try attention.outputType(op: Self.opName, input: shape.dtype)
        do {
            let out = try output ?? AttentionOutput(o: device.makeTensor(shape: [tokens, shape.headsQ, shape.headDim], dtype: oType),
                                                    lse: device.makeTensor(shape: [shape.headsQ, tokens], dtype: .f32))
            try checkRank(shape, device: device,
                                         tensors: inputTensors(shape, rank: comm.rank, q: q, k: k, v: v)
                                             + [("O", out.o, [tokens, shape.headsQ, shape.headDim], oType), ("LSE", out.lse, [shape.headsQ, tokens], .f32)])
            if isEmpty(shape) { return ContextParallelOutput(output: out.o, lse: out.lse, path: emptyInputPath) }
            guard tokens > 0 else { return ContextParallelOutput(output: out.o, lse: out.lse, path: path + " (rank \(comm.rank): no group)") }
            try await PlacedRankRun(op: self, comm: comm, shape: shape).forward(q: q, k: k, v: v, out: out)
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
    /// - Returns: dQ, dK, dV of this rank's tokens, and ``path``.
    /// - Throws: As ``forward(q:k:v:into:communicator:)``.
    public func backward<C: Communicator>(q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, dO: Tensor,
                                          gradientDType: DType? = nil, into gradients: AttentionGradients? = nil,
                                          communicator comm: C) async throws -> ContextParallelGradients {
        let shape = try Self.shape(q: q, k: k)
        try validate(shape, ranks: comm.size)
        let device = comm.device, tokens = plan.tokens(rank: comm.rank)
        let gType = try FlashAttention(outputDType: gradientDType).outputType(op: Self.opName, input: shape.dtype)
        let qShape = [tokens, shape.headsQ, shape.headDim], kShape = [tokens, shape.headsKV, shape.headDim]
        do {
            let grads = try gradients ?? AttentionGradients(dq: device.makeTensor(shape: qShape, dtype: gType),
                                                            dk: device.makeTensor(shape: kShape, dtype: gType),
                                                            dv: device.makeTensor(shape: kShape, dtype: gType))
            guard o.dtype == shape.dtype || (shape.dtype == .f16 && o.dtype == .f32) else {
                throw VkAttnError.dtypeMismatch(op: Self.opName, operand: "O", expected: shape.dtype == .f16 ? "f16 or f32" : "f32", actual: o.dtype.rawValue)
            }
            try checkRank(shape, device: device,
                                         tensors: inputTensors(shape, rank: comm.rank, q: q, k: k, v: v) + [
                                             ("O", o, qShape, nil), ("LSE", lse, [shape.headsQ, tokens], .f32), ("dO", dO, qShape, shape.dtype),
                                             ("dQ", grads.dq, qShape, gType), ("dK", grads.dk, kShape, gType), ("dV", grads.dv, kShape, gType)])
            if isEmpty(shape) {  // dK, dV of key/value heads no query head used are 0 (fills)
                try await recordZeros([grads.dq, grads.dk, grads.dv], on: device)
                return ContextParallelGradients(dq: grads.dq, dk: grads.dk, dv: grads.dv, path: emptyInputPath)
            }
            guard tokens > 0 else { return ContextParallelGradients(dq: grads.dq, dk: grads.dk, dv: grads.dv, path: path + " (rank \(comm.rank): no group)") }
            try await PlacedRankRun(op: self, comm: comm, shape: shape).backward(q: q, k: k, v: v, o: o, lse: lse, dO: dO, grads: grads)
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
            try checkRank(shape, device: communicators[r].device, tensors: inputTensors(shape, rank: r, q: q[r], k: k[r], v: v[r]))
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
            try checkRank(shape, device: communicators[r].device,
                                         tensors: inputTensors(shape, rank: r, q: q[r], k: k[r], v: v[r]) + [
                                             ("O", o[r], [t, shape.headsQ, shape.headDim], nil), ("LSE", lse[r], [shape.headsQ, t], .f32),
                                             ("dO", dO[r], [t, shape.headsQ, shape.headDim], shape.dtype)])
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
