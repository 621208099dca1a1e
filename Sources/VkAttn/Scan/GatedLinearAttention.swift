import VulkanCompute
import VkAttnShaders

/// Chunked gated linear attention (GLA, RetNet/Lightning decay, plain linear attention),
/// forward and backward, fp32 accumulation:
///
///     S_t = diag(g_t) S_{t-1} + k_t^T v_t,    o_t = q_t S_t
///
/// Shapes: q, k [B, L, H, Dk]; v, o [B, L, H, Dv]; states S [B, H, Dk, Dv]. q, k, v (and the
/// backward's dO) are f32, f16 or bf16, all alike; o, dq, dk, dv are f32 or that type; states,
/// gates and their gradients are f32. Gates are given as
/// log-gates log g_t (decays: log g <= 0): [B, L, H, Dk] for `.perKey` (GLA), [B, L, H] for
/// `.perHead` (a scalar decay per head and step), none for `.none`. No scale is applied to q.
///
/// The sequence is cut into chunks of `chunkLength(on:)` rows (from the device's shared
/// memory): each chunk's masked intra-chunk product is computed with decays relative to rows
/// of the same chunk (exp of a log-gate sum between two rows of the chunk, never of a large
/// positive number), and an inter-chunk pass carries the state. Optional initial state in,
/// final state out, and on request every chunk-boundary state ([B, H, chunks + 1, Dk, Dv]:
/// the state before each chunk, then the final state).
///
/// Packed variable-length batches: with `cuSeqlens` (N_seq + 1 offsets from 0, nondecreasing,
/// the last T; empty sequences allowed) q, k, v, o and the gates are packed with batch 1
/// (q [1, T, H, Dk], ...) and the states are per sequence ([N_seq, H, Dk, Dv]). No state crosses
/// a sequence boundary: chunks are cut at every boundary (a host-built chunk table), so each
/// sequence's result equals its own dense run. The chunk-boundary states are then defined per
/// chunk table: [1, H, chunks + N_seq, Dk, Dv], sequence n owning its chunks + 1 consecutive
/// slots (the state before each of its chunks, then its final state; one slot, its initial
/// state, for an empty sequence), sequences in order. On CPU devices (lavapipe's loop cap) the
/// state passes walk every sequence: N_seq (Dv + 2) + chunks must stay below 60000.
public struct GatedLinearAttention: Hashable, Sendable {
    /// Which decay the state carries from one step to the next.
    public enum Gating: String, Sendable, Hashable, CaseIterable, Codable, CustomStringConvertible {
        /// No decay: plain linear attention.
        case none
        /// A scalar decay per head and step (RetNet, Lightning): log-gates [B, L, H].
        case perHead = "per-head"
        /// A decay per key dimension, head and step (GLA): log-gates [B, L, H, Dk].
        case perKey = "per-key"
        /// The raw value: `none`, `per-head` or `per-key`.
        public var description: String { rawValue }
    }

    /// The decay's form.
    public var gating: Gating
    /// Rows per chunk; nil: from the device (`preferredChunkLength(on:)`).
    public var chunkLength: Int?
    /// Cooperative-matrix (tensor-core) kernels for the chunk products or scalar ones;
    /// `.automatic` takes cooperative matrices for f16 inputs where the build and the device
    /// allow (the dispatch's `path` says which ran).
    public var preference: KernelPreference

    /// - Parameters:
    ///   - gating: per-key (GLA), per-head (scalar decay) or none.
    ///   - chunkLength: rows per chunk; nil chooses from the device.
    ///   - preference: which kernels run.
    public init(gating: Gating, chunkLength: Int? = nil, preference: KernelPreference = .automatic) {
        self.gating = gating
        self.chunkLength = chunkLength
        self.preference = preference
    }

    /// The op name in errors.
    public static let opName = "linearAttention.gated"

    /// The largest of 64, 32, 16 rows whose two C x C fp32 matrices (the backward's A and dA)
    /// fit the device's shared memory.
    /// - Parameter device: The device that will run the op.
    /// - Returns: 64, 32 or 16 (8 where none of them fits).
    public static func preferredChunkLength(on device: Device) -> Int {
        let shared = device.capabilities.maxComputeSharedMemoryBytes
        for c in [64, 32, 16] where 2 * c * c * 4 + 512 <= shared { return c }
        return 8
    }

    /// The chunk length calls on `device` use: ``chunkLength`` or the device's preference.
    /// - Parameter device: The device that will run the op.
    /// - Returns: Rows per chunk.
    public func chunkLength(on device: Device) -> Int {
        chunkLength ?? Self.preferredChunkLength(on: device)
    }

    /// Chunks of a sequence of `length` rows: the boundary states have chunks + 1 slots.
    /// (A chunk length below 1, which forward and backward refuse, counts as 1 here.)
    /// - Parameters:
    ///   - length: L, the sequence length.
    ///   - device: The device that will run the op.
    /// - Returns: ceil(L / chunk length).
    public func chunkCount(length: Int, on device: Device) -> Int {
        let c = max(1, chunkLength(on: device))
        return length / c + (length % c == 0 ? 0 : 1)
    }

    /// Records the forward pass: o, and when given the final state and every boundary state.
    /// - Parameters:
    ///   - stream: The stream to record into; the tensors live on its device.
    ///   - q: Queries [B, L, H, Dk]: f32, f16 or bf16. Any size may be zero: no kernel is
    ///     recorded; with L = 0 every state written is the initial one (a copy, or 0), with
    ///     Dk = 0 the output is 0 (a fill).
    ///   - k: Keys, q's shape and type.
    ///   - v: Values [B, L, H, Dv], q's type.
    ///   - logGates: The log-decays, f32 ([B, L, H, Dk] per key, [B, L, H] per head); nil for
    ///     `.none`.
    ///   - initialState: S before step 0, [B, H, Dk, Dv] f32; nil means zeros.
    ///   - output: Receives o, [B, L, H, Dv]: f32 or the inputs' type.
    ///   - finalState: Receives S after the last step, [B, H, Dk, Dv] f32; nil skips it.
    ///   - chunkStates: Receives every chunk-boundary state, [B, H, chunks + 1, Dk, Dv] f32;
    ///     nil skips them. Packed: [1, H, chunks + N_seq, Dk, Dv] (see the type's notes).
    ///   - cuSeqlens: Packed sequences: N_seq + 1 token offsets (0 first, nondecreasing, T
    ///     last); the tensors then have batch 1 and the states are [N_seq, H, Dk, Dv]. nil: dense.
    /// - Returns: The chunk length, chunk count (over all sequences when packed) and kernel path.
    /// - Throws: ``VkAttnError`` for a shape, type, device or overlap the op does not take, gates
    ///   that do not match the gating, a chunk length it refuses, a kernel preference the
    ///   device cannot honour, or bad `cuSeqlens` (or a batch other than 1 with them).
    @discardableResult
    public func forward(q: Tensor, k: Tensor, v: Tensor, logGates: Tensor? = nil,
                        initialState: Tensor? = nil, output: Tensor, finalState: Tensor? = nil,
                        chunkStates: Tensor? = nil, cuSeqlens: [Int32]? = nil, on stream: Stream) throws -> GLADispatch {
        let plan = try GLAPlan(op: self, device: stream.device, q: q, k: k, v: v, logGates: logGates, initialState: initialState,
                               cuSeqlens: cuSeqlens)
        return try plan.forward(output: output, finalState: finalState, chunkStates: chunkStates, on: stream)
    }

    /// Records the backward pass: from dOutput (and dFinalState, nil: zeros) the gradients of
    /// q, k, v, the log-gates (required unless `.none`) and, when given, the initial state.
    /// - Parameters:
    ///   - stream: The stream to record into.
    ///   - q: The forward's queries.
    ///   - k: The forward's keys.
    ///   - v: The forward's values.
    ///   - logGates: The forward's log-gates.
    ///   - initialState: The forward's initial state; nil means zeros.
    ///   - dOutput: The gradient of o, [B, L, H, Dv] in q's type.
    ///   - dFinalState: The gradient of the final state, [B, H, Dk, Dv] f32; nil means zeros.
    ///   - dq: Receives q's gradient (f32 or the inputs' type; so do `dk`, `dv`).
    ///   - dk: Receives k's gradient.
    ///   - dv: Receives v's gradient.
    ///   - dLogGates: Receives the log-gates' gradient (f32, their shape); required with gates,
    ///     refused without.
    ///   - dInitialState: Receives the initial state's gradient, [B, H, Dk, Dv] f32; nil skips it.
    ///   - cuSeqlens: The forward's packed sequences (nil: dense); the state gradients are then
    ///     [N_seq, H, Dk, Dv].
    /// - Returns: What was recorded.
    /// - Throws: ``VkAttnError``, as ``forward(q:k:v:logGates:initialState:output:finalState:chunkStates:cuSeqlens:on:)``.
    @discardableResult
    public func backward(q: Tensor, k: Tensor, v: Tensor, logGates: Tensor? = nil,
                         initialState: Tensor? = nil, dOutput: Tensor, dFinalState: Tensor? = nil,
                         dq: Tensor, dk: Tensor, dv: Tensor, dLogGates: Tensor? = nil,
                         dInitialState: Tensor? = nil, cuSeqlens: [Int32]? = nil, on stream: Stream) throws -> GLADispatch {
        let plan = try GLAPlan(op: self, device: stream.device, q: q, k: k, v: v, logGates: logGates, initialState: initialState,
                               cuSeqlens: cuSeqlens)
        return try plan.backward(dOutput: dOutput, dFinalState: dFinalState, dq: dq, dk: dk, dv: dv,
                                 dLogGates: dLogGates, dInitialState: dInitialState, on: stream)
    }
}

/// What a GLA call recorded.
public struct GLADispatch: Sendable {
    /// Rows per chunk.
    public let chunkLength: Int
    /// Chunks per sequence.
    public let chunks: Int
    /// The kernel that ran, as the bench reports it: algorithm, gating, chunk length and
    /// the cooperative-matrix shape (or why not).
    public let path: String
}
