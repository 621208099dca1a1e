import VkAttn
/// Chunked gated linear attention (`GatedLinearAttention`) over a sequence sharded
/// contiguously across the ranks of a device group: rank r holds tokens
/// [sum of lengths before r, + lengths[r]) of every batch entry, as q, k [B, L_r, H, Dk],
/// v [B, L_r, H, Dv], log-gates [B, L_r, H(, Dk)]. Outputs and gradients equal the
/// single-device op's within fp32 rounding.
///
/// Forward: each rank runs the local GLA from a zero state (rank 0 from the global initial
/// state), giving its final state B_r; its total decay a_r = exp(sum of its log-gates) per
/// key row; the exclusive all-scan of (a_r, B_r) gives the incoming state S_in; a correction
/// kernel adds (q_t exp(G_t)) S_in to the local output (G_t the log-gates cumulated over the
/// shard), so the local chunks are not run twice.
/// Backward: the state gradient flows from later ranks to earlier ones: each rank's value is
/// (a_r, E_r), E_r = sum_t (q_t exp(G_t))^T dO_t the gradient of its incoming state from its
/// own outputs (plus a_r dFinal on the last rank); an exclusive scan over the ranks in
/// reverse order (a diagonal decay is its own transpose) gives the gradient of each shard's
/// final state, and the local GLA backward from S_in with that gradient gives dq, dk, dv and
/// d(log-gates).
public struct ContextParallelLinearAttention: Sendable, Hashable {
    /// Tokens per rank (each >= 1; >= 0 when the problem ``isEmpty(_:)``).
    public var lengths: [Int]
    /// How the ranks pass states.
    public var scheme: ContextParallelScheme
    /// The local op: gating, chunk length, kernel preference.
    public var attention: GatedLinearAttention

    /// - Parameters:
    ///   - lengths: Tokens per rank, in rank order; each at least 1.
    ///   - scheme: How the ranks pass states.
    ///   - attention: The local op.
    public init(lengths: [Int], scheme: ContextParallelScheme = .lasp2, attention: GatedLinearAttention) {
        self.lengths = lengths
        self.scheme = scheme
        self.attention = attention
    }

    /// `total` tokens split contiguously over `ranks` ranks, the first `total % ranks` one longer.
    /// - Parameters:
    ///   - total: Tokens of the whole sequence.
    ///   - ranks: The number of ranks.
    /// - Returns: Tokens per rank (empty for no ranks).
    public static func evenLengths(total: Int, ranks: Int) -> [Int] {
        guard ranks > 0 else { return [] }
        return (0..<ranks).map { total / ranks + ($0 < total % ranks ? 1 : 0) }
    }

    /// The op name in errors.
    public static let opName = "contextParallel.linearAttention"

    /// The shape every rank checks (`ContextParallelShape`'s linear form).
    public typealias Shape = ContextParallelShape

    static func shape(q: Tensor, v: Tensor) throws -> Shape {
        guard q.shape.count == 4, v.shape.count == 4 else {
            throw VkAttnError.shapeMismatch(op: opName, operand: q.shape.count == 4 ? "v" : "q", expected: "[B, L_r, H, D]",
                                            actual: "\(q.shape.count == 4 ? v.shape : q.shape)")
        }
        return Shape(batch: q.shape[0], heads: q.shape[2], dk: q.shape[3], dv: v.shape[3])
    }

    /// Whether the problem is empty: B, H, Dk or Dv is 0, so the state [B, H, Dk, Dv] is empty
    /// and nothing flows between the ranks (every rank sees it alike). Each rank then returns at
    /// once with its outputs zeroed by fills (o is 0 when Dk is; every gradient is 0), the
    /// empty states as they are, no kernel and no message; ranks may then hold no tokens.
    /// - Parameter shape: The problem's dimensions.
    /// - Returns: True when nothing is computed.
    public func isEmpty(_ shape: Shape) -> Bool { shape.batch == 0 || shape.heads == 0 || shape.dk == 0 || shape.dv == 0 }

    /// Checks the configuration shared by every rank (throws before anything is posted).
    /// - Parameters:
    ///   - ranks: The communicator's size; must equal the number of lengths.
    ///   - shape: The problem's dimensions.
    /// - Throws: `VkAttnError` for a rank count other than the lengths', a rank without tokens
    ///   (unless the problem ``isEmpty(_:)``), a negative dimension, or ZeCO segments outside
    ///   1...B H Dk.
    public func validate(_ shape: Shape, ranks: Int) throws {
        let op = Self.opName
        try scheme.expect(linear: true, op: op)
        guard ranks == lengths.count else {
            throw VkAttnError.invalidValue(op: op, operand: "ranks", reason: "the communicator has \(ranks) ranks, lengths has \(lengths.count)")
        }
        guard shape.batch >= 0, shape.heads >= 0, shape.dk >= 0, shape.dv >= 0 else {
            throw VkAttnError.shapeMismatch(op: op, operand: "q", expected: "non-negative B, H, Dk, Dv", actual: "\(shape)")
        }
        if isEmpty(shape) {  // nothing flows between the ranks: any lengths, no segments to check
            guard let r = lengths.firstIndex(where: { $0 < 0 }) else { return }
            throw VkAttnError.invalidValue(op: op, operand: "lengths", reason: "rank \(r) holds \(lengths[r]) tokens")
        }
        if let r = lengths.firstIndex(where: { $0 < 1 }) {
            throw VkAttnError.invalidValue(op: op, operand: "lengths", reason: "rank \(r) holds \(lengths[r]) tokens; with a non-empty state every rank needs at least one (each rank's shard is one link of the state chain, computed by the local op)")
        }
        if case let .zeco(segments) = scheme {
            let rows = shape.batch * shape.heads * shape.dk
            guard segments >= 1, segments <= rows else {
                throw VkAttnError.invalidValue(op: op, operand: "segments", reason: "\(segments) must be in 1...\(rows) (B * H * Dk state rows)")
            }
        }
    }

    /// Checks one rank's tensors.
    func checkRank(_ shape: Shape, rank: Int, size: Int, device: Device, q: Tensor, k: Tensor, v: Tensor, logGates: Tensor?,
                   extra: [(String, Tensor?, [Int])]) throws {
        let op = Self.opName
        let (b, l, h) = (shape.batch, lengths[rank], shape.heads)
        try q.expect(op: op, "q", shape: [b, l, h, shape.dk], dtype: .f32, device: device)
        try k.expect(op: op, "k", shape: [b, l, h, shape.dk], dtype: .f32, device: device)
        try v.expect(op: op, "v", shape: [b, l, h, shape.dv], dtype: .f32, device: device)
        switch (attention.gating, logGates) {
        case (.none, nil): break
        case (.none, .some): throw VkAttnError.invalidValue(op: op, operand: "logGates", reason: "given, but the gating is .none")
        case (_, nil): throw VkAttnError.invalidValue(op: op, operand: "logGates", reason: "required for \(attention.gating) gating")
        case (.perHead, let g?): try g.expect(op: op, "logGates", shape: [b, l, h], dtype: .f32, device: device)
        case (.perKey, let g?): try g.expect(op: op, "logGates", shape: [b, l, h, shape.dk], dtype: .f32, device: device)
        }
        for (name, t, expected) in extra {
            if let t { try t.expect(op: op, name, shape: expected, dtype: .f32, device: device) }
        }
    }

    // MARK: One rank

    /// One rank's forward (every rank of `communicator` calls it with its shard).
    /// `initialState` [B, H, Dk, Dv] only on rank 0; `returnFinalState` gives the final state
    /// on the last rank. `outputs`: caller-provided tensors to write (nil fields: allocated),
    /// checked with the inputs before anything is posted.
    /// - Parameters:
    ///   - q: This rank's queries [B, L_r, H, Dk], fp32.
    ///   - k: This rank's keys, q's shape.
    ///   - v: This rank's values [B, L_r, H, Dv].
    ///   - logGates: This rank's log-gates ([B, L_r, H, Dk] per key, [B, L_r, H] per head); nil
    ///     for `.none`.
    ///   - initialState: The global initial state [B, H, Dk, Dv]; only on rank 0.
    ///   - returnFinalState: Whether the last rank returns the global final state.
    ///   - outputs: Tensors to write; nil fields are allocated.
    ///   - comm: This rank's communicator.
    /// - Returns: o, the incoming state (for the backward), the final state where asked for, and
    ///   the path.
    /// - Throws: `VkAttnError` from ``validate(_:ranks:)`` (on every rank alike, nothing
    ///   posted) or for this rank's tensors and storage (the group is then aborted); transfer and
    ///   device errors.
    public func forward<C: Communicator>(q: Tensor, k: Tensor, v: Tensor, logGates: Tensor? = nil, initialState: Tensor? = nil,
                                         returnFinalState: Bool = false, into outputs: LinearParallelOutputStorage? = nil,
                                         communicator comm: C) async throws -> ContextParallelOutput {
        let shape = try Self.shape(q: q, v: v)
        try validate(shape, ranks: comm.size)
        do {
            let state = [shape.batch, shape.heads, shape.dk, shape.dv]
            if initialState != nil && comm.rank != 0 {
                throw VkAttnError.invalidValue(op: Self.opName, operand: "initialState", reason: "given on rank \(comm.rank); only rank 0 takes it")
            }
            try checkRank(shape, rank: comm.rank, size: comm.size, device: comm.device, q: q, k: k, v: v, logGates: logGates,
                          extra: [("initialState", initialState, state)])
            let outputs = outputs ?? LinearParallelOutputStorage()
            try checkOutputs(outputs, shape: shape, rank: comm.rank, size: comm.size, returnFinalState: returnFinalState, device: comm.device,
                             inputs: [("q", q), ("k", k), ("v", v), ("logGates", logGates), ("initialState", initialState)])
            if isEmpty(shape) {  // every rank returns here, nothing posted
                let o = try outputs.output ?? comm.device.makeTensor(shape: [shape.batch, lengths[comm.rank], shape.heads, shape.dv], dtype: .f32)
                let incoming = try outputs.incomingState ?? comm.device.makeTensor(shape: state, dtype: .f32)
                let last = returnFinalState && comm.rank == comm.size - 1
                let final = last ? try outputs.finalState ?? comm.device.makeTensor(shape: state, dtype: .f32) : nil
                try await recordZeros([o], on: comm.device)
                return ContextParallelOutput(output: o, incomingState: incoming, finalState: final, path: emptyInputPath)
            }
            let run = try LinearRankRun(comm: comm, op: self, shape: shape)
            return try await run.forward(q: q, k: k, v: v, logGates: logGates, initialState: initialState, returnFinalState: returnFinalState,
                                         into: outputs)
        } catch {
            comm.abort(error)
            throw error
        }
    }

    /// One rank's backward: `incomingState` is the forward's; `dFinalState` only on the last
    /// rank (nil: zeros). Rank 0 also returns the initial state's gradient. `gradients`:
    /// caller-provided tensors to write (nil fields: allocated), checked before anything is posted.
    /// - Parameters:
    ///   - q: This rank's queries.
    ///   - k: This rank's keys.
    ///   - v: This rank's values.
    ///   - logGates: This rank's log-gates; nil for `.none`.
    ///   - incomingState: The forward's `incomingState` of this rank.
    ///   - dOutput: The gradient of this rank's o, [B, L_r, H, Dv].
    ///   - dFinalState: The gradient of the global final state; only on the last rank.
    ///   - gradients: Tensors to write; nil fields are allocated.
    ///   - comm: This rank's communicator.
    /// - Returns: dq, dk, dv, d(log-gates) with gating, the initial state's gradient on rank 0,
    ///   and the path.
    /// - Throws: As ``forward(q:k:v:logGates:initialState:returnFinalState:into:communicator:)``.
    public func backward<C: Communicator>(q: Tensor, k: Tensor, v: Tensor, logGates: Tensor? = nil, incomingState: Tensor?,
                                          dOutput: Tensor, dFinalState: Tensor? = nil, into gradients: LinearParallelGradientStorage? = nil,
                                          communicator comm: C) async throws -> ContextParallelGradients {
        let shape = try Self.shape(q: q, v: v)
        try validate(shape, ranks: comm.size)
        do {
            // Optional so that a forward's `ContextParallelOutput.incomingState` passes as it is.
            guard let incomingState else {
                throw VkAttnError.invalidValue(op: Self.opName, operand: "incomingState", reason: "required: the forward's incoming state of this rank")
            }
            let state = [shape.batch, shape.heads, shape.dk, shape.dv]
            if dFinalState != nil && comm.rank != comm.size - 1 {
                throw VkAttnError.invalidValue(op: Self.opName, operand: "dFinalState", reason: "given on rank \(comm.rank); only the last rank takes it")
            }
            try checkRank(shape, rank: comm.rank, size: comm.size, device: comm.device, q: q, k: k, v: v, logGates: logGates,
                          extra: [("incomingState", incomingState, state), ("dOutput", dOutput, [shape.batch, lengths[comm.rank], shape.heads, shape.dv]),
                                  ("dFinalState", dFinalState, state)])
            let gradients = gradients ?? LinearParallelGradientStorage()
            try checkGradients(gradients, shape: shape, rank: comm.rank, device: comm.device,
                               inputs: [("q", q), ("k", k), ("v", v), ("logGates", logGates), ("incomingState", incomingState),
                                        ("dOutput", dOutput), ("dFinalState", dFinalState)])
            if isEmpty(shape) {  // every rank returns here, nothing posted; every gradient is 0
                let device = comm.device, (b, l, h) = (shape.batch, lengths[comm.rank], shape.heads)
                let dq = try gradients.dq ?? device.makeTensor(shape: [b, l, h, shape.dk], dtype: .f32)
                let dk = try gradients.dk ?? device.makeTensor(shape: [b, l, h, shape.dk], dtype: .f32)
                let dv = try gradients.dv ?? device.makeTensor(shape: [b, l, h, shape.dv], dtype: .f32)
                let dg = try logGates.map { _ in
                    try gradients.dLogGates ?? device.makeTensor(shape: attention.gating == .perKey ? [b, l, h, shape.dk] : [b, l, h], dtype: .f32)
                }
                let dInitial = comm.rank == 0 ? try gradients.dInitialState ?? device.makeTensor(shape: state, dtype: .f32) : nil
                try await recordZeros([dq, dk, dv] + (dg.map { [$0] } ?? []), on: device)
                return ContextParallelGradients(dq: dq, dk: dk, dv: dv, dLogGates: dg, dInitialState: dInitial, path: emptyInputPath)
            }
            let run = try LinearRankRun(comm: comm, op: self, shape: shape)
            return try await run.backward(q: q, k: k, v: v, logGates: logGates, incomingState: incomingState, dOutput: dOutput,
                                          dFinalState: dFinalState, into: gradients)
        } catch {
            comm.abort(error)
            throw error
        }
    }

    // MARK: All ranks at once

    /// Every rank's forward, concurrently (in-process groups); arrays indexed by rank. Checks
    /// every rank's tensors (and `outputs`, one per rank) before any rank starts.
    /// - Parameters:
    ///   - q: Each rank's queries, in rank order.
    ///   - k: Each rank's keys.
    ///   - v: Each rank's values.
    ///   - logGates: Each rank's log-gates; nil for `.none`.
    ///   - initialState: The global initial state, on rank 0's device.
    ///   - returnFinalState: Whether the last rank returns the final state.
    ///   - outputs: One storage per rank; nil allocates everything.
    ///   - communicators: One per rank, in rank order.
    /// - Returns: Each rank's output, in rank order.
    /// - Throws: `VkAttnError` for any rank's tensors before any rank starts (the group stays
    ///   usable); afterwards the first rank's failure, which aborts the group.
    public func forward<C: Communicator>(q: [Tensor], k: [Tensor], v: [Tensor], logGates: [Tensor]? = nil, initialState: Tensor? = nil,
                                         returnFinalState: Bool = false, into outputs: [LinearParallelOutputStorage]? = nil,
                                         communicators: [C]) async throws -> [ContextParallelOutput] {
        try precheck(communicators, [q, k, v] + (logGates.map { [$0] } ?? []))
        try precheckCount(outputs?.count, communicators.count)
        for r in communicators.indices {
            let shape = try Self.shape(q: q[r], v: v[r])
            try validate(shape, ranks: communicators.count)
            let s0 = r == 0 ? initialState : nil
            try checkRank(shape, rank: r, size: communicators.count, device: communicators[r].device, q: q[r], k: k[r], v: v[r],
                          logGates: logGates?[r], extra: [("initialState", s0, [shape.batch, shape.heads, shape.dk, shape.dv])])
            if let o = outputs?[r] {
                try checkOutputs(o, shape: shape, rank: r, size: communicators.count, returnFinalState: returnFinalState,
                                 device: communicators[r].device,
                                 inputs: [("q", q[r]), ("k", k[r]), ("v", v[r]), ("logGates", logGates?[r]), ("initialState", s0)])
            }
        }
        return try await onEveryRank(communicators) { comm in
            let r = comm.rank
            return try await self.forward(q: q[r], k: k[r], v: v[r], logGates: logGates?[r], initialState: r == 0 ? initialState : nil,
                                          returnFinalState: returnFinalState, into: outputs?[r], communicator: comm)
        }
    }

    /// Every rank's backward, concurrently; arrays indexed by rank (`gradients`: one per rank).
    /// - Parameters:
    ///   - q: Each rank's queries, in rank order.
    ///   - k: Each rank's keys.
    ///   - v: Each rank's values.
    ///   - logGates: Each rank's log-gates; nil for `.none`.
    ///   - incomingStates: Each rank's `incomingState` from the forward.
    ///   - dOutput: Each rank's output gradient.
    ///   - dFinalState: The final state's gradient, on the last rank's device; nil means zeros.
    ///   - gradients: One storage per rank; nil allocates everything.
    ///   - communicators: One per rank, in rank order.
    /// - Returns: Each rank's gradients, in rank order.
    /// - Throws: As ``forward(q:k:v:logGates:initialState:returnFinalState:into:communicators:)``.
    public func backward<C: Communicator>(q: [Tensor], k: [Tensor], v: [Tensor], logGates: [Tensor]? = nil, incomingStates: [Tensor],
                                          dOutput: [Tensor], dFinalState: Tensor? = nil, into gradients: [LinearParallelGradientStorage]? = nil,
                                          communicators: [C]) async throws -> [ContextParallelGradients] {
        try precheck(communicators, [q, k, v, incomingStates, dOutput] + (logGates.map { [$0] } ?? []))
        try precheckCount(gradients?.count, communicators.count)
        let last = communicators.count - 1
        for r in communicators.indices {
            let shape = try Self.shape(q: q[r], v: v[r])
            try validate(shape, ranks: communicators.count)
            let state = [shape.batch, shape.heads, shape.dk, shape.dv]
            try checkRank(shape, rank: r, size: communicators.count, device: communicators[r].device, q: q[r], k: k[r], v: v[r],
                          logGates: logGates?[r], extra: [("incomingState", incomingStates[r], state),
                                                          ("dOutput", dOutput[r], [shape.batch, lengths[r], shape.heads, shape.dv]),
                                                          ("dFinalState", r == last ? dFinalState : nil, state)])
            if let g = gradients?[r] {
                try checkGradients(g, shape: shape, rank: r, device: communicators[r].device,
                                   inputs: [("q", q[r]), ("k", k[r]), ("v", v[r]), ("logGates", logGates?[r]), ("incomingState", incomingStates[r]),
                                            ("dOutput", dOutput[r]), ("dFinalState", r == last ? dFinalState : nil)])
            }
        }
        return try await onEveryRank(communicators) { comm in
            let r = comm.rank
            return try await self.backward(q: q[r], k: k[r], v: v[r], logGates: logGates?[r], incomingState: incomingStates[r],
                                           dOutput: dOutput[r], dFinalState: r == last ? dFinalState : nil, into: gradients?[r],
                                           communicator: comm)
        }
    }

    func precheck<C: Communicator>(_ communicators: [C], _ lists: [[Tensor]]) throws {
        guard !communicators.isEmpty, communicators.enumerated().allSatisfy({ $0.offset == $0.element.rank }) else {
            throw VkAttnError.invalidValue(op: Self.opName, operand: "communicators", reason: "must be one per rank, in rank order")
        }
        guard communicators.count == lengths.count else {
            throw VkAttnError.invalidValue(op: Self.opName, operand: "ranks", reason: "\(communicators.count) communicators, lengths has \(lengths.count)")
        }
        for list in lists where list.count != communicators.count {
            throw VkAttnError.invalidValue(op: Self.opName, operand: "tensors", reason: "\(list.count) tensors for \(communicators.count) ranks")
        }
    }

    func precheckCount(_ storages: Int?, _ ranks: Int) throws {
        if let storages, storages != ranks {
            throw VkAttnError.invalidValue(op: Self.opName, operand: "into", reason: "\(storages) output sets for \(ranks) ranks")
        }
    }
}
