import VulkanCompute
import VkAttnShaders

/// Mamba-1's selective scan (the selective SSM with per-channel discretisation), forward and
/// backward, fp32 accumulation:
///
///     dt_t[d]   = delta_t[d] (+ deltaBias[d]; softplus of that with `deltaSoftplus`)
///     h_t[d, n] = exp(dt_t[d] A[d, n]) h_{t-1}[d, n] + dt_t[d] B_t[n] x_t[d]
///     y_t[d]    = sum_n C_t[n] h_t[d, n] + D[d] x_t[d]
///     out_t[d]  = y_t[d] silu(z_t[d])   (y_t[d] without z)
///
/// Shapes (channels contiguous): x, delta, z, out [B, L, Dch]; A [Dch, N]; B, C [B, L, N] (one
/// group, shared by every channel, as Mamba-1); D, deltaBias [Dch]; initial and final states
/// [B, Dch, N]. N is at most 256. x, delta, z, B, C (and the backward's dOutput) are f32, f16 or
/// bf16, all alike; out is f32 or that type; A, D, deltaBias, the states and every gradient
/// are f32.
///
/// Variable-length packed batches: with `cuSeqlens` (S + 1 entries from 0, nondecreasing, the
/// last equal to T; empty sequences allowed) the tensors hold one packed batch ([1, T, Dch],
/// [1, T, N]) and the states are per sequence ([S, Dch, N]); no state crosses a sequence
/// boundary. A dense batch is the packed path with boundaries every L rows.
///
/// Parallel over time without writing [B, L, Dch, N]: each chunk of at most `chunkLength`
/// rows (never crossing a sequence boundary) reduces to its affine map per (d, n) (product of
/// decays, local end state), one pass walks the maps per (sequence, d, n), a last pass replays
/// each chunk from its start state and reduces over n in shared memory. The backward runs the
/// adjoint g_t = dL/dh_t backward in time the same way and reduces dA over chunks, dB and dC
/// over channel blocks, dD and dDeltaBias over rows with a reduction kernel (no atomics).
public struct SelectiveScan: Hashable, Sendable {
    /// Applies softplus to delta (plus deltaBias) before use, as mamba_ssm's `delta_softplus`
    /// (softplus(v) = v past 20). Without it delta (plus the bias) is the step itself and
    /// should be positive.
    public var deltaSoftplus: Bool
    /// Rows per chunk at most; nil: the most the kernels take. Forward chunks hold at most
    /// 4096 / W rows and backward chunks 1024 / W (W = max(64, N rounded up to a power of
    /// two): 64 and 16 rows for N <= 64); a longer request is capped there.
    public var chunkLength: Int?

    /// - Parameters:
    ///   - deltaSoftplus: Softplus on delta (plus its bias).
    ///   - chunkLength: Rows per chunk at most (>= 1); nil lets the kernels choose.
    public init(deltaSoftplus: Bool = false, chunkLength: Int? = nil) {
        self.deltaSoftplus = deltaSoftplus
        self.chunkLength = chunkLength
    }

    /// The op name in errors.
    public static let opName = "mamba.selectiveScan"

    /// Records the forward pass: out and, when given, the final state of every sequence.
    /// - Parameters:
    ///   - stream: The stream to record into; the tensors live on its device.
    ///   - x: The input [B, L, Dch] ([1, T, Dch] with `cuSeqlens`): f32, f16 or bf16. B, L (T) or Dch may be
    ///     zero: no kernel is recorded, and the final state is the initial one (a copy) or 0 (a
    ///     fill).
    ///   - delta: The raw steps, x's shape and type.
    ///   - A: The state matrix [Dch, N] f32 (negative entries decay).
    ///   - B: The input projection [B, L, N] ([1, T, N] packed), x's type.
    ///   - C: The output projection, B's shape.
    ///   - D: The skip [Dch]; nil means none.
    ///   - z: The gate, x's shape and type; nil means no gate.
    ///   - deltaBias: Added to delta before the softplus, [Dch]; nil means none.
    ///   - initialState: h before each sequence's first step, [B, Dch, N] ([S, Dch, N] packed);
    ///     nil means zeros.
    ///   - cuSeqlens: Packed sequence boundaries (S + 1 entries from 0 to T); nil for a dense
    ///     batch.
    ///   - output: Receives out, x's shape, f32 or x's type; must not overlap an input.
    ///   - finalState: Receives h after each sequence's last step, initialState's shape; nil
    ///     skips it.
    /// - Returns: The chunk length, chunk count and kernel path.
    /// - Throws: ``VkAttnError`` for a shape, type, device, alignment, overlap or cuSeqlens the
    ///   op does not take, or a problem too large for the device, before anything is recorded.
    @discardableResult
    public func forward(x: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor? = nil, z: Tensor? = nil,
                        deltaBias: Tensor? = nil, initialState: Tensor? = nil, cuSeqlens: [Int32]? = nil,
                        output: Tensor, finalState: Tensor? = nil, on stream: Stream) throws -> SelectiveScanDispatch {
        let plan = try SelectiveScanPlan(op: self, device: stream.device, x: x, delta: delta, A: A, B: B, C: C, D: D, z: z,
                                         deltaBias: deltaBias, initialState: initialState, cuSeqlens: cuSeqlens, backward: false)
        return try plan.forward(output: output, finalState: finalState, on: stream)
    }

    /// Records the backward pass: from dOutput (and dFinalState; nil: zeros) the gradients of
    /// every input. The forward's tensors are passed again; nothing is kept between the calls
    /// (the chunk states are recomputed).
    /// - Parameters:
    ///   - stream: The stream to record into.
    ///   - x: The forward's x.
    ///   - delta: The forward's delta.
    ///   - A: The forward's A.
    ///   - B: The forward's B.
    ///   - C: The forward's C.
    ///   - D: The forward's D; nil means none.
    ///   - z: The forward's gate; nil means none.
    ///   - deltaBias: The forward's delta bias; nil means none.
    ///   - initialState: The forward's initial state; nil means zeros.
    ///   - cuSeqlens: The forward's sequence boundaries; nil for a dense batch.
    ///   - dOutput: The gradient of out, x's shape and type.
    ///   - dFinalState: The gradient of the final state, initialState's shape; nil means zeros.
    ///   - dx: Receives x's gradient, x's shape, f32 (so do the other gradients).
    ///   - dDelta: Receives the raw delta's gradient (through the bias and softplus), x's shape.
    ///   - dA: Receives A's gradient, [Dch, N].
    ///   - dB: Receives B's gradient, B's shape.
    ///   - dC: Receives C's gradient, C's shape.
    ///   - dD: Receives D's gradient, [Dch]; nil skips it (refused without D).
    ///   - dz: Receives z's gradient, x's shape; nil skips it (refused without z).
    ///   - dDeltaBias: Receives the delta bias's gradient, [Dch]; nil skips it (refused
    ///     without a bias).
    ///   - dInitialState: Receives the initial state's gradient, [B, Dch, N] ([S, Dch, N]
    ///     packed); nil skips it.
    /// - Returns: What was recorded.
    /// - Throws: ``VkAttnError``, as ``forward(x:delta:A:B:C:D:z:deltaBias:initialState:cuSeqlens:output:finalState:on:)``.
    @discardableResult
    public func backward(x: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor? = nil, z: Tensor? = nil,
                         deltaBias: Tensor? = nil, initialState: Tensor? = nil, cuSeqlens: [Int32]? = nil,
                         dOutput: Tensor, dFinalState: Tensor? = nil, dx: Tensor, dDelta: Tensor, dA: Tensor,
                         dB: Tensor, dC: Tensor, dD: Tensor? = nil, dz: Tensor? = nil, dDeltaBias: Tensor? = nil,
                         dInitialState: Tensor? = nil, on stream: Stream) throws -> SelectiveScanDispatch {
        let plan = try SelectiveScanPlan(op: self, device: stream.device, x: x, delta: delta, A: A, B: B, C: C, D: D, z: z,
                                         deltaBias: deltaBias, initialState: initialState, cuSeqlens: cuSeqlens, backward: true)
        let grads = SelectiveScanPlan.Gradients(dx: dx, dDelta: dDelta, dA: dA, dB: dB, dC: dC, dD: dD, dz: dz,
                                                dDeltaBias: dDeltaBias, dInitialState: dInitialState)
        return try plan.backward(dOutput: dOutput, dFinalState: dFinalState, grads: grads, on: stream)
    }
}

/// What a selective-scan call recorded.
public struct SelectiveScanDispatch: Sendable {
    /// Rows per chunk at most.
    public let chunkLength: Int
    /// Chunks over all sequences.
    public let chunks: Int
    /// The kernel that ran, as the bench reports it: algorithm, chunk length, lanes over N by
    /// channels per workgroup, packed or dense.
    public let path: String
}
