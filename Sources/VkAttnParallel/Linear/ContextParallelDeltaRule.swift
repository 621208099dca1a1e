import VkAttn

/// The delta rule and Gated DeltaNet (`DeltaRule`) over a sequence sharded contiguously across
/// the ranks of a device group: rank r holds tokens [sum of lengths before r, + lengths[r]) of
/// every batch entry, as q, k [B, L_r, H, Dk], v [B, L_r, H, Dv], beta and log-decays
/// [B, L_r, H]. Outputs and gradients equal the single-device op's within fp32 rounding.
///
/// The delta rule's transition is a full Dk x Dk matrix, so what a shard does to the state is a
/// matrix affine map S_out = P_r S_in + F_r (P_r the product of its chunks' maps, F_r its final
/// state from zero; rank 0's from the global initial state). Each rank computes its chunks' WY
/// forms and maps once, chains them into (P_r, F_r) with the identity carried beside the state,
/// and an exclusive all-scan of the pairs under `MatrixAffineScan` (LASP: a chain; LASP-2: one
/// all-gather; ZeCO: a chain in segments of (sequence, head) blocks) gives S_in; the rank then
/// chains its maps from S_in and forms its outputs. Each pair is B H Dk (Dk + Dv) fp32, against
/// B H L_r (2 Dk + Dv) for the chunk-local WY factors (K, Wk, U) a rank could send instead: the
/// pair is smaller once L_r > Dk (Dk + Dv) / (2 Dk + Dv), 43 rows at Dk = Dv = 64, which every
/// shard worth splitting is (`expectedTraffic` states both).
/// Backward: the state gradient flows from later ranks to earlier ones through the transposed
/// maps, dS_in = P_r^T dS_out + E_r (E_r the gradient of S_in from the rank's own outputs, with
/// the global dFinal folded in on the last rank): the same all-scan over the reversed ranks,
/// then each rank's local backward from its S_in and dS_out.
public struct ContextParallelDeltaRule: Sendable, Hashable {
    /// Tokens per rank (each >= 1; >= 0 when the problem ``isEmpty(_:)``).
    public var lengths: [Int]
    /// How the ranks pass (transition, state) pairs: `.lasp`, `.lasp2` or `.zeco(segments:)`.
    public var scheme: ContextParallelScheme
    /// The local op: gating and chunk length.
    public var deltaRule: DeltaRule

    /// - Parameters:
    ///   - lengths: Tokens per rank, in rank order; each at least 1.
    ///   - scheme: How the ranks pass pairs.
    ///   - deltaRule: The local op.
    public init(lengths: [Int], scheme: ContextParallelScheme = .lasp2, deltaRule: DeltaRule) {
        self.lengths = lengths
        self.scheme = scheme
        self.deltaRule = deltaRule
    }

    /// The op name in errors.
    public static let opName = "contextParallel.deltaRule"

    /// The shape every rank checks (`ContextParallelShape`'s linear form).
    public typealias Shape = ContextParallelShape

    /// Whether the problem is empty: B, H, Dk or Dv is 0, so nothing flows between the ranks.
    /// Each rank then returns at once with zeroed outputs, no kernel and no message.
    /// - Parameter shape: The problem's dimensions.
    /// - Returns: True when nothing is computed.
    public func isEmpty(_ shape: Shape) -> Bool { shape.batch == 0 || shape.heads == 0 || shape.dk == 0 || shape.dv == 0 }

    /// Checks the configuration shared by every rank (throws before anything is posted).
    /// - Parameters:
    ///   - shape: The problem's dimensions.
    ///   - ranks: The communicator's size; must equal the number of lengths.
    /// - Throws: `VkAttnError` for a scheme other than LASP, LASP-2 or ZeCO, a rank count other
    ///   than the lengths', a rank without tokens (unless the problem ``isEmpty(_:)``), or ZeCO
    ///   segments outside 1...B H.
    public func validate(_ shape: Shape, ranks: Int) throws {
        let op = Self.opName
        try scheme.expect(linear: true, op: op)
        guard ranks == lengths.count else {
            throw VkAttnError.invalidValue(op: op, operand: "ranks", reason: "the communicator has \(ranks) ranks, lengths has \(lengths.count)")
        }
        guard shape.batch >= 0, shape.heads >= 0, shape.dk >= 0, shape.dv >= 0 else {
            throw VkAttnError.invalidValue(op: op, operand: "shape", reason: "negative dimension in \(shape)")
        }
        if isEmpty(shape) {
            guard let r = lengths.firstIndex(where: { $0 < 0 }) else { return }
            throw VkAttnError.invalidValue(op: op, operand: "lengths", reason: "rank \(r) holds \(lengths[r]) tokens")
        }
        if let r = lengths.firstIndex(where: { $0 < 1 }) {
            throw VkAttnError.invalidValue(op: op, operand: "lengths", reason: "rank \(r) holds \(lengths[r]) tokens; with a non-empty state every rank needs at least one (each shard is one link of the chain)")
        }
        if case let .zeco(segments) = scheme {
            let blocks = shape.batch * shape.heads
            guard segments >= 1, segments <= blocks else {
                throw VkAttnError.invalidValue(op: op, operand: "segments", reason: "\(segments) must be in 1...\(blocks) (B * H blocks of the pair)")
            }
        }
    }

    static func shape(q: Tensor, v: Tensor) throws -> Shape {
        guard q.shape.count == 4, v.shape.count == 4 else {
            throw VkAttnError.shapeMismatch(op: opName, operand: q.shape.count == 4 ? "v" : "q", expected: "[B, L_r, H, D]",
                                            actual: "\(q.shape.count == 4 ? v.shape : q.shape)")
        }
        return Shape(batch: q.shape[0], heads: q.shape[2], dk: q.shape[3], dv: v.shape[3])
    }

    func checkLength(_ t: Tensor, _ operand: String, rank: Int) throws {
        guard t.shape.count >= 2, t.shape[1] == lengths[rank] else {
            throw VkAttnError.shapeMismatch(op: Self.opName, operand: operand, expected: "L_r = \(lengths[rank]) rows on rank \(rank)",
                                            actual: "\(t.shape)")
        }
    }

    /// One rank's forward.
    /// - Parameters:
    ///   - q: This rank's queries [B, L_r, H, Dk] (f32, f16 or bf16).
    ///   - k: This rank's keys, q's shape and type.
    ///   - v: This rank's values [B, L_r, H, Dv].
    ///   - beta: This rank's beta [B, L_r, H] f32.
    ///   - logDecay: This rank's log-decays [B, L_r, H] f32 when gated; nil otherwise.
    ///   - initialState: The global initial state [B, H, Dk, Dv] f32; only on rank 0.
    ///   - returnFinalState: Whether the last rank returns the global final state.
    ///   - comm: This rank's communicator.
    /// - Returns: o (f32), the incoming state (for the backward), the final state where asked
    ///   for, and the path.
    /// - Throws: `VkAttnError` from ``validate(_:ranks:)`` (every rank alike, nothing posted) or
    ///   for this rank's tensors (the group is then aborted); transfer and device errors.
    public func forward<C: Communicator>(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, logDecay: Tensor? = nil,
                                         initialState: Tensor? = nil, returnFinalState: Bool = false,
                                         communicator comm: C) async throws -> ContextParallelOutput {
        let shape = try Self.shape(q: q, v: v)
        try validate(shape, ranks: comm.size)
        do {
            if initialState != nil && comm.rank != 0 {
                throw VkAttnError.invalidValue(op: Self.opName, operand: "initialState", reason: "given on rank \(comm.rank); only rank 0 takes it")
            }
            try checkLength(q, "q", rank: comm.rank)
            let plan = try DeltaRulePlan(op: deltaRule, device: comm.device, q: q, k: k, v: v, beta: beta, logDecay: logDecay,
                                         initialState: initialState, cuSeqlens: nil)
            let state = [shape.batch, shape.heads, shape.dk, shape.dv]
            if isEmpty(shape) {  // every rank returns here, nothing posted
                let o = try comm.device.makeTensor(shape: [shape.batch, lengths[comm.rank], shape.heads, shape.dv], dtype: .f32)
                let final = returnFinalState && comm.rank == comm.size - 1 ? try comm.device.makeTensor(shape: state, dtype: .f32) : nil
                try await recordZeros([o], on: comm.device)
                return ContextParallelOutput(output: o, incomingState: try comm.device.makeTensor(shape: state, dtype: .f32),
                                             finalState: final, path: emptyInputPath)
            }
            let run = try DeltaRankRun(comm: comm, op: self, plan: plan)
            return try await run.forward(returnFinalState: returnFinalState)
        } catch {
            comm.abort(error)
            throw error
        }
    }

    /// One rank's backward: `incomingState` is the forward's; `dFinalState` only on the last rank
    /// (nil: zeros). Rank 0 also returns the initial state's gradient.
    /// - Parameters:
    ///   - q: This rank's queries.
    ///   - k: This rank's keys.
    ///   - v: This rank's values.
    ///   - beta: This rank's beta.
    ///   - logDecay: This rank's log-decays when gated.
    ///   - incomingState: The forward's `incomingState` of this rank.
    ///   - dOutput: The gradient of this rank's o, [B, L_r, H, Dv] in q's type.
    ///   - dFinalState: The gradient of the global final state; only on the last rank.
    ///   - comm: This rank's communicator.
    /// - Returns: dq, dk, dv (f32), dbeta, the log-decays' gradient when gated, the initial
    ///   state's gradient on rank 0, and the path.
    /// - Throws: As ``forward(q:k:v:beta:logDecay:initialState:returnFinalState:communicator:)``.
    public func backward<C: Communicator>(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, logDecay: Tensor? = nil, incomingState: Tensor?,
                                          dOutput: Tensor, dFinalState: Tensor? = nil,
                                          communicator comm: C) async throws -> ContextParallelDeltaGradients {
        let shape = try Self.shape(q: q, v: v)
        try validate(shape, ranks: comm.size)
        do {
            guard let incomingState else {
                throw VkAttnError.invalidValue(op: Self.opName, operand: "incomingState", reason: "required: the forward's incoming state of this rank")
            }
            if dFinalState != nil && comm.rank != comm.size - 1 {
                throw VkAttnError.invalidValue(op: Self.opName, operand: "dFinalState", reason: "given on rank \(comm.rank); only the last rank takes it")
            }
            try checkLength(q, "q", rank: comm.rank)
            let plan = try DeltaRulePlan(op: deltaRule, device: comm.device, q: q, k: k, v: v, beta: beta, logDecay: logDecay,
                                         initialState: incomingState, cuSeqlens: nil)
            let device = comm.device, (b, l, h) = (shape.batch, lengths[comm.rank], shape.heads)
            let state = [b, h, shape.dk, shape.dv]
            let grads = ContextParallelDeltaGradients(
                dq: try device.makeTensor(shape: [b, l, h, shape.dk], dtype: .f32), dk: try device.makeTensor(shape: [b, l, h, shape.dk], dtype: .f32),
                dv: try device.makeTensor(shape: [b, l, h, shape.dv], dtype: .f32), dBeta: try device.makeTensor(shape: [b, l, h], dtype: .f32),
                dLogDecay: try logDecay.map { _ in try device.makeTensor(shape: [b, l, h], dtype: .f32) },
                dInitialState: comm.rank == 0 ? try device.makeTensor(shape: state, dtype: .f32) : nil, path: "")
            try plan.checkBackward(dOutput: dOutput, dFinalState: dFinalState, dq: grads.dq, dk: grads.dk, dv: grads.dv, dBeta: grads.dBeta,
                                   dLogDecay: grads.dLogDecay, dInitialState: grads.dInitialState)
            if isEmpty(shape) {  // every rank returns here, nothing posted; every gradient is 0
                try await recordZeros([grads.dq, grads.dk, grads.dv, grads.dBeta] + (grads.dLogDecay.map { [$0] } ?? [])
                                      + (grads.dInitialState.map { [$0] } ?? []), on: device)
                return grads.with(path: emptyInputPath)
            }
            let run = try DeltaRankRun(comm: comm, op: self, plan: plan)
            return try await run.backward(dOutput: dOutput, dFinalState: dFinalState, into: grads)
        } catch {
            comm.abort(error)
            throw error
        }
    }

    // MARK: Traffic

    /// Bytes of one scan value: the (transition, state) pair of every sequence and head,
    /// B H Dk (Dk + Dv) fp32.
    /// - Parameter shape: batch, heads and head dimensions of the problem.
    /// - Returns: The bytes of one rank's pair.
    public static func pairBytes(_ shape: Shape) -> Int {
        shape.batch * shape.heads * shape.dk * (shape.dk + shape.dv) * 4
    }

    /// Bytes rank `rank` sends in one call: LASP's chain and ZeCO's segmented chain pass one
    /// pair per hop, from every rank but the last in the forward and every rank but the first
    /// in the backward; LASP-2's all-gather sends the pair to each of the N - 1 other ranks.
    /// - Parameters:
    ///   - rank: The rank, in 0..<lengths.count.
    ///   - shape: batch, heads and head dimensions of the problem.
    ///   - backward: The backward pass instead of the forward.
    /// - Returns: The bytes that rank sends (0 for a rank outside the group).
    public func expectedBytesSent(rank: Int, shape: Shape, backward: Bool) -> Int {
        let n = lengths.count, pair = Self.pairBytes(shape)
        guard (0..<n).contains(rank) else { return 0 }
        switch scheme {
        case .lasp2: return (n - 1) * pair
        case .lasp, .zeco: return (backward ? rank > 0 : rank < n - 1) ? pair : 0
        case .ring, .tokenRing, .doubleRing, .allGather, .allToAll, .hierarchical: return 0
        }
    }

    /// Bytes the busiest rank sends per call by the formula (forward and backward alike), with
    /// the chunk-local WY factors' bytes for the same shards beside it.
    /// - Parameter shape: batch, heads and head dimensions of the problem.
    /// - Returns: The busiest rank's bytes per call, one step, and the formula.
    public func expectedTraffic(shape: Shape) -> ExpectedTraffic {
        let n = lengths.count
        let pair = Self.pairBytes(shape)
        let longest = lengths.max() ?? 0
        let wy = shape.batch * shape.heads * longest * (2 * shape.dk + shape.dv) * 4
        let versus = "; WY factors instead: B H L_r (2 Dk + Dv) 4 = \(wy) B per value"
        guard n > 1 else { return ExpectedTraffic(bytes: 0, steps: 1, formula: "one rank: no traffic") }
        switch scheme {
        case .lasp2:
            return ExpectedTraffic(bytes: Double((n - 1) * pair), steps: 1,
                                   formula: "LASP-2: one all-gather of (P, F) pairs, (N-1) B H Dk (Dk+Dv) 4 = \((n - 1) * pair) B" + versus)
        case .lasp:
            return ExpectedTraffic(bytes: Double(pair), steps: 1,
                                   formula: "LASP: a chain, each rank but the last (backward: the first) sends one pair B H Dk (Dk+Dv) 4 = \(pair) B" + versus)
        case let .zeco(segments):
            return ExpectedTraffic(bytes: Double(pair), steps: 1,
                                   formula: "ZeCO: a chain in \(segments) segments of one pair B H Dk (Dk+Dv) 4 = \(pair) B" + versus)
        case .ring, .tokenRing, .doubleRing, .allGather, .allToAll, .hierarchical:
            return ExpectedTraffic(bytes: 0, steps: 0, formula: "\(scheme) is not a linear scheme")
        }
    }
}

/// What one rank's `ContextParallelDeltaRule.backward` returns (f32 gradients of its shard).
public struct ContextParallelDeltaGradients: Sendable {
    /// dq, dk [B, L_r, H, Dk]; dv [B, L_r, H, Dv].
    public let dq: Tensor, dk: Tensor, dv: Tensor
    /// dbeta [B, L_r, H].
    public let dBeta: Tensor
    /// The log-decays' gradient [B, L_r, H] when gated.
    public let dLogDecay: Tensor?
    /// The global initial state's gradient [B, H, Dk, Dv], on rank 0.
    public let dInitialState: Tensor?
    /// What ran.
    public let path: String

    func with(path: String) -> ContextParallelDeltaGradients {
        ContextParallelDeltaGradients(dq: dq, dk: dk, dv: dv, dBeta: dBeta, dLogDecay: dLogDecay, dInitialState: dInitialState, path: path)
    }
}
