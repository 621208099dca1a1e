import VulkanCompute

/// The delta rule (DeltaNet) and its gated form (Gated DeltaNet), chunked, forward and
/// backward, fp32 accumulation. With the state S [Dk, Dv] and o_t = q_t S_t (q_t a row):
///
///     S_t = a_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,    a_t = exp(logDecay_t)
///
/// (a_t = 1 without gating; this is DeltaNet's S_t = S_{t-1}(I - beta k k^T) + beta v k^T with
/// the state transposed). No scale is applied to q, and keys are used as given: DeltaNet and
/// Gated DeltaNet L2-normalise q and k per head first, which is the caller's step (with
/// |k| = 1 and beta in [0, 1] every transition is a contraction; unnormalised keys can make the
/// recurrence diverge, as it would in any implementation).
///
/// Shapes: q, k [B, L, H, Dk]; v, o [B, L, H, Dv]; beta and log-decays [B, L, H] f32; states
/// [B, H, Dk, Dv] f32. q, k, v (and the backward's dO) are f32, f16 or bf16, all alike; o, dq,
/// dk, dv are f32 or that type. A packed batch of variable-length sequences passes `cuSeqlens`
/// (N + 1 cumulative lengths from 0 to T) with B = 1 (q [1, T, H, Dk], ...) and states per
/// sequence [N, H, Dk, Dv]: no state crosses a sequence boundary.
///
/// The algorithm (the WY/UT form of the DeltaNet and Gated DeltaNet papers): sequences are cut
/// into chunks of `chunkLength(on:)` rows that never cross a boundary. Within a chunk the C
/// sequential rank-1 updates become matrix products: A = strictly lower(diag(beta) Gamma K K^T)
/// (Gamma the decays between the chunk's rows), T = (I + A)^-1 by forward substitution, U = T
/// diag(beta) V and Wk = T diag(beta exp(g)) K. Each chunk is then an affine map of its starting
/// state, S_end = M S_start + Bc, with M = exp(g_n) I - K^T D Wk; a pass chains the maps over
/// each sequence's chunks (parallel over heads and state columns), and every chunk's output is
/// exp(g) Q S_start + P (U - Wk S_start). The backward runs the same graph in reverse: the maps'
/// transposes carry the state gradient back, and one kernel per chunk forms dq, dk, dv, dbeta and
/// the log-decay gradient.
public struct DeltaRule: Hashable, Sendable {
    /// Whether each step decays the state by a_t = exp(logDecay_t) (Gated DeltaNet) or not
    /// (DeltaNet).
    public var gated: Bool
    /// Rows per chunk (1...64); nil: from the device (`preferredChunkLength(on:)`).
    public var chunkLength: Int?
    /// Whether the chunk products run on cooperative matrices (f16 inputs only: f16 operands,
    /// fp32 accumulators) or the scalar kernels: the WY form's U = T diag(beta) V and
    /// Wk = T diag(beta exp(g)) K, the forward's W = U - Wk S_0, Q S_0, P = Q K^T and P W, the
    /// backward's R = P^T dO, G = Q^T diag(exp(g)) dO - Wk^T R, its products with the states
    /// and its C x C products over the head dimensions. The fp32 intermediates (T's tiles, S_0,
    /// dS_1, Wk, W, dW, dWk, P, R) are rounded to f16 for the products: a few f16 units of
    /// relative error in o, the final state and the gradients. `.automatic` takes cooperative matrices
    /// where this build, the device and the shapes allow (the `path` says which ran and, on a
    /// device that offers them, why not); `.cooperativeMatrix` throws `VkAttnError.unsupported`
    /// where they cannot run. T's forward substitution, the chunk maps, the carry and the
    /// gradients' sums over a chunk's rows stay scalar.
    public var preference: KernelPreference

    /// - Parameters:
    ///   - gated: Gated DeltaNet (a log-decay per head and step) or DeltaNet.
    ///   - chunkLength: Rows per chunk; nil chooses from the device.
    ///   - preference: Cooperative-matrix or scalar kernels (``preference``).
    public init(gated: Bool, chunkLength: Int? = nil, preference: KernelPreference = .automatic) {
        self.gated = gated
        self.chunkLength = chunkLength
        self.preference = preference
    }

    /// The op name in errors.
    public static let opName = "linearAttention.deltaRule"

    /// Shared memory the kernels need for chunks of `c` rows: the backward's five C x C fp32
    /// matrices, its row vectors and a reduction slot per lane.
    static func sharedBytes(chunk c: Int, workgroup: Int) -> Int { (5 * c * c + 5 * c + workgroup) * 4 }

    /// The largest of 32 and 16 rows whose backward fits the device's shared memory (8 where
    /// neither does). Chunks of 32 keep the intra-chunk work (C^2 per row pair) near the
    /// inter-chunk work (Dk Dv per chunk) for head dimensions of 64 to 128.
    /// - Parameter device: The device that will run the op.
    /// - Returns: 32, 16 or 8.
    public static func preferredChunkLength(on device: Device) -> Int {
        let shared = device.capabilities.maxComputeSharedMemoryBytes
        for c in [32, 16] where sharedBytes(chunk: c, workgroup: 256) <= shared { return c }
        return 8
    }

    /// The chunk length calls on `device` use: ``chunkLength`` or the device's preference.
    /// - Parameter device: The device that will run the op.
    /// - Returns: Rows per chunk.
    public func chunkLength(on device: Device) -> Int {
        chunkLength ?? Self.preferredChunkLength(on: device)
    }

    /// Records the forward pass: o and, when given, each sequence's final state.
    /// - Parameters:
    ///   - q: Queries [B, L, H, Dk] (packed: [1, T, H, Dk]): f32, f16 or bf16. Any size may be
    ///     zero: no kernel is recorded (o is 0, a final state the initial one or 0).
    ///   - k: Keys, q's shape and type (L2-normalised by the caller, as the models do).
    ///   - v: Values [B, L, H, Dv], q's type.
    ///   - beta: The write strengths beta_t [B, L, H] f32 (in [0, 1] for a contraction).
    ///   - logDecay: log a_t [B, L, H] f32 (<= 0) when ``gated``; nil otherwise.
    ///   - initialState: S before each sequence's first step, [B, H, Dk, Dv] f32 ([N, H, Dk, Dv]
    ///     packed); nil means zeros.
    ///   - cuSeqlens: Cumulative sequence lengths of a packed batch (N + 1 entries, from 0 to T,
    ///     nondecreasing; empty sequences allowed); nil for the dense [B, L] layout.
    ///   - output: Receives o [B, L, H, Dv]: f32 or the inputs' type.
    ///   - finalState: Receives S after each sequence's last step, the initial state's shape;
    ///     nil skips it.
    ///   - stream: The stream to record into; the tensors live on its device.
    /// - Returns: The chunking and the kernel path.
    /// - Throws: ``VkAttnError`` for a shape, type, device or overlap the op does not take, a
    ///   decay that does not match ``gated``, malformed `cuSeqlens`, or a chunk length it refuses.
    @discardableResult
    public func forward(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, logDecay: Tensor? = nil, initialState: Tensor? = nil,
                        cuSeqlens: [Int32]? = nil, output: Tensor, finalState: Tensor? = nil,
                        on stream: Stream) throws -> DeltaRuleDispatch {
        let plan = try DeltaRulePlan(op: self, device: stream.device, q: q, k: k, v: v, beta: beta, logDecay: logDecay,
                                     initialState: initialState, cuSeqlens: cuSeqlens)
        return try plan.forward(output: output, finalState: finalState, on: stream)
    }

    /// Records the backward pass: from dOutput (and dFinalState, nil: zeros) the gradients of
    /// q, k, v, beta, the log-decays (required when ``gated``) and, when given, the initial state.
    /// - Parameters:
    ///   - q: The forward's queries.
    ///   - k: The forward's keys.
    ///   - v: The forward's values.
    ///   - beta: The forward's beta.
    ///   - logDecay: The forward's log-decays (nil unless ``gated``).
    ///   - initialState: The forward's initial state; nil means zeros.
    ///   - cuSeqlens: The forward's cumulative sequence lengths; nil for the dense layout.
    ///   - dOutput: The gradient of o, [B, L, H, Dv] in q's type.
    ///   - dFinalState: The gradient of the final state, the initial state's shape; nil means zeros.
    ///   - dq: Receives q's gradient (f32 or the inputs' type; so do `dk`, `dv`).
    ///   - dk: Receives k's gradient.
    ///   - dv: Receives v's gradient.
    ///   - dBeta: Receives beta's gradient, [B, L, H] f32.
    ///   - dLogDecay: Receives the log-decays' gradient, [B, L, H] f32; required when ``gated``,
    ///     refused otherwise.
    ///   - dInitialState: Receives the initial state's gradient; nil skips it.
    ///   - stream: The stream to record into.
    /// - Returns: What was recorded.
    /// - Throws: ``VkAttnError``, as ``forward(q:k:v:beta:logDecay:initialState:cuSeqlens:output:finalState:on:)``.
    @discardableResult
    public func backward(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, logDecay: Tensor? = nil, initialState: Tensor? = nil,
                         cuSeqlens: [Int32]? = nil, dOutput: Tensor, dFinalState: Tensor? = nil,
                         dq: Tensor, dk: Tensor, dv: Tensor, dBeta: Tensor, dLogDecay: Tensor? = nil,
                         dInitialState: Tensor? = nil, on stream: Stream) throws -> DeltaRuleDispatch {
        let plan = try DeltaRulePlan(op: self, device: stream.device, q: q, k: k, v: v, beta: beta, logDecay: logDecay,
                                     initialState: initialState, cuSeqlens: cuSeqlens)
        return try plan.backward(dOutput: dOutput, dFinalState: dFinalState, dq: dq, dk: dk, dv: dv, dBeta: dBeta,
                                 dLogDecay: dLogDecay, dInitialState: dInitialState, on: stream)
    }
}

/// What a delta-rule call recorded.
public struct DeltaRuleDispatch: Sendable {
    /// Rows per chunk.
    public let chunkLength: Int
    /// Chunks over the whole batch (each sequence's ceil(length / chunk length), summed).
    public let chunks: Int
    /// The kernels that ran, as the bench reports them.
    public let path: String
}
