import VulkanCompute
import VkAttnShaders

/// The diagonal linear recurrence h_t = a_t * h_{t-1} + b_t (elementwise over channels, fp32),
/// real or complex (GateLoop, S5, LRU), forward in time or reversed, and its backward pass.
///
/// Shapes (`Layout`): a, b and h are [B, L, D] (`.bld`, channels contiguous) or [B, D, L]
/// (`.bdl`, time contiguous); complex values add a trailing dimension of 2 (re, im). The
/// initial state h0 and the final state are [B, D] (plus [2]). With `reverse`, time runs from
/// L - 1 down to 0 (h_t = a_t * h_{t+1} + b_t, h0 entering at t = L - 1).
///
/// Packed variable-length batches: with `cuSeqlens` (N_seq + 1 offsets from 0, nondecreasing,
/// the last T; empty sequences allowed) a, b, h and their gradients are [1, T, D] (or
/// [1, D, T]) and the states are per sequence, [N_seq, D] (plus [2]); each sequence runs on
/// its own (its h0 entering at its first step, or its last when reversed), no state crossing
/// a boundary. This costs one extra copy of two inputs (see `RecurrenceVarlen`).
///
/// Parallel over time: the sequence is cut into chunks; each chunk reduces to an affine map
/// (A, B) (h_end = A * h_start + B), a pass scans the maps per channel, a last pass replays each
/// chunk from its start state (`RecurrenceAlgorithm.chunked`). Where the device runs workgroups in
/// order (lavapipe), chunks instead look back at their predecessor's published end state,
/// reducing a predecessor that is not yet published from the input themselves
/// (`RecurrenceAlgorithm.chained`): one pass, no waiting without bound.
public struct LinearRecurrence: Hashable, Sendable {
    /// Where time and channels lie in a, b, h and their gradients.
    public enum Layout: String, Sendable, Hashable, CaseIterable, Codable, CustomStringConvertible {
        /// [B, L, D]: channels contiguous.
        case bld = "BLD"
        /// [B, D, L]: time contiguous.
        case bdl = "BDL"
        /// The raw value: `BLD` or `BDL`.
        public var description: String { rawValue }
    }

    /// The tensors' layout.
    public var layout: Layout
    /// Complex values (a trailing dimension of 2: re, im) with complex products.
    public var complex: Bool
    /// Time runs from L - 1 down to 0.
    public var reverse: Bool
    /// Forces an algorithm; nil: `RecurrenceAlgorithm.preferred(for:)`.
    public var algorithm: RecurrenceAlgorithm?
    /// Steps per chunk (a multiple of 4); nil: chosen from the device and the shape.
    public var chunkLength: Int?
    /// Moves aligned data as 64-bit words (true) or 16-byte vectors (false); nil: 64-bit words
    /// on CPU devices (lavapipe makes every 32-bit access a scalar load), vectors on GPUs.
    public var wideLoads: Bool?
    /// Tests: the chained path treats the nearest `forcedFallbacks` predecessor chunks as
    /// unpublished and reduces their maps from the input.
    public var forcedFallbacks: Int

    /// - Parameters:
    ///   - layout: BLD or BDL.
    ///   - complex: Complex values.
    ///   - reverse: Run time backwards.
    ///   - algorithm: An algorithm to force; nil lets the device decide.
    ///   - chunkLength: Steps per chunk (a multiple of 4 in 4...16384); nil lets the device decide.
    ///   - wideLoads: 64-bit words or 16-byte vectors; nil lets the device decide.
    ///   - forcedFallbacks: Predecessor chunks the chained path treats as unpublished (tests).
    public init(layout: Layout, complex: Bool = false, reverse: Bool = false, algorithm: RecurrenceAlgorithm? = nil,
                chunkLength: Int? = nil, wideLoads: Bool? = nil, forcedFallbacks: Int = 0) {
        self.layout = layout
        self.complex = complex
        self.reverse = reverse
        self.algorithm = algorithm
        self.chunkLength = chunkLength
        self.wideLoads = wideLoads
        self.forcedFallbacks = forcedFallbacks
    }

    /// The op name in errors.
    public static let opName = "recurrence"

    /// The problem's dimensions read from a's shape.
    public struct Dimensions: Hashable, Sendable {
        /// B.
        public var batch: Int
        /// L, the time steps.
        public var length: Int
        /// D, the independent channels.
        public var channels: Int
    }

    /// Records the forward pass: h (every state) and, when given, the final state. h0 nil
    /// means zeros.
    /// - Parameters:
    ///   - stream: The stream to record into; the tensors live on its device.
    ///   - a: The decays: [B, L, D] or [B, D, L] (complex: plus [2]); f32. B, L or D may be
    ///     zero: no kernel is recorded, and with L = 0 the final state is h0 (a copy) or 0 (a fill).
    ///   - b: The inputs, a's shape.
    ///   - h0: The initial state [B, D] (complex: [B, D, 2]); nil means zeros.
    ///   - h: Every state, a's shape; must not overlap the inputs.
    ///   - finalState: The last state, h0's shape; nil skips it.
    ///   - cuSeqlens: Packed sequences: N_seq + 1 step offsets (0 first, nondecreasing, T last);
    ///     a is then [1, T, D] (or [1, D, T]) and h0, finalState [N_seq, D]. nil: dense.
    /// - Returns: The path, chunk length and chunk count recorded.
    /// - Throws: ``VkAttnError`` for a shape, type, device, alignment or overlap the op does not
    ///   take, a chunk length it refuses, a problem too large for the device, or bad
    ///   `cuSeqlens` (or a batch other than 1 with them).
    @discardableResult
    public func forward(a: Tensor, b: Tensor, h0: Tensor? = nil, h: Tensor,
                        finalState: Tensor? = nil, cuSeqlens: [Int32]? = nil, on stream: Stream) throws -> RecurrenceDispatch {
        if let cuSeqlens {
            let packed = try RecurrenceVarlen(op: self, device: stream.device, a: a, cuSeqlens: cuSeqlens,
                                              states: [("h0", h0), ("finalState", finalState)])
            return try packed.forward(a: a, b: b, h0: h0, h: h, finalState: finalState, on: stream)
        }
        let plan = try RecurrencePlan(op: self, device: stream.device, a: a, inputs: [("b", b)], h0: h0,
                                      outputs: [("h", h)], state: finalState.map { ("finalState", $0) }, backward: nil)
        return try plan.encode(on: stream)
    }

    /// Records the backward pass of `forward` with the same a, h0 and direction: from dh (the
    /// gradient of every h) and dFinal (of the final state; nil: zeros), the gradients da, db
    /// and, when given, dh0. `h` is the forward's output. Complex values follow PyTorch's
    /// convention (the gradient of a real loss L is dL/dRe + i dL/dIm), so that
    /// db_t = g_t, da_t = g_t * conj(h_{t-1}), dh0 = conj(a_first) * g_first, with
    /// g_t = dh_t + conj(a_{t+1}) * g_{t+1}: itself a recurrence in the opposite direction.
    /// - Parameters:
    ///   - stream: The stream to record into.
    ///   - a: The forward's decays. Zero sizes record no kernel; with L = 0, dh0 is dFinal
    ///     (a copy) or 0 (a fill).
    ///   - h: The forward's states.
    ///   - h0: The forward's initial state; nil means zeros.
    ///   - dh: The gradient of every state, a's shape.
    ///   - dFinal: The gradient of the final state; nil means zeros.
    ///   - da: Receives the decays' gradient, a's shape.
    ///   - db: Receives the inputs' gradient, a's shape.
    ///   - dh0: Receives the initial state's gradient; nil skips it.
    ///   - cuSeqlens: The forward's packed sequences (nil: dense); h0, dFinal and dh0 are then
    ///     [N_seq, D].
    /// - Returns: What was recorded.
    /// - Throws: ``VkAttnError``, as ``forward(a:b:h0:h:finalState:cuSeqlens:on:)``.
    @discardableResult
    public func backward(a: Tensor, h: Tensor, h0: Tensor? = nil, dh: Tensor, dFinal: Tensor? = nil,
                         da: Tensor, db: Tensor, dh0: Tensor? = nil, cuSeqlens: [Int32]? = nil, on stream: Stream) throws -> RecurrenceDispatch {
        if let cuSeqlens {
            let packed = try RecurrenceVarlen(op: self, device: stream.device, a: a, cuSeqlens: cuSeqlens,
                                              states: [("h0", h0), ("dFinal", dFinal), ("dh0", dh0)])
            return try packed.backward(a: a, h: h, h0: h0, dh: dh, dFinal: dFinal, da: da, db: db, dh0: dh0, on: stream)
        }
        let plan = try RecurrencePlan(op: self, device: stream.device, a: a, inputs: [("dh", dh), ("h", h)], h0: dFinal,
                                      outputs: [("db", db), ("da", da)], state: dh0.map { ("dh0", $0) },
                                      backward: h0)
        return try plan.encode(on: stream)
    }
}

/// How a chunked recurrence joins its chunks.
public enum RecurrenceAlgorithm: String, Sendable, Hashable, CaseIterable, Codable, CustomStringConvertible {
    /// Three dispatches: chunk maps, a scan of the maps per channel, chunk replays. Fully
    /// parallel over chunks; reads a and b twice.
    case chunked = "chunked-3-pass"
    /// One dispatch: each chunk looks back at its predecessor's published end state, or
    /// reduces the predecessor's map from the input when it is not published within a bounded
    /// number of polls (never waits without bound). Reads a and b once when chunks finish in
    /// order, as lavapipe runs workgroups.
    case chained = "chained-lookback"

    /// The raw value: `chunked-3-pass` or `chained-lookback`.
    public var description: String { rawValue }

    /// Chained where workgroups run roughly in dispatch order on a few threads (CPU devices),
    /// chunked elsewhere (GPUs run every chunk at once, so a chain would serialize).
    /// - Parameter device: The device that will run the recurrence.
    /// - Returns: ``chained`` on CPU devices, ``chunked`` elsewhere.
    public static func preferred(for device: Device) -> RecurrenceAlgorithm {
        device.capabilities.type == .cpu ? .chained : .chunked
    }
}

/// What a recurrence call recorded.
public struct RecurrenceDispatch: Sendable {
    /// The path recorded.
    public let algorithm: RecurrenceAlgorithm
    /// Steps per chunk.
    public let chunkLength: Int
    /// Chunks per channel.
    public let chunks: Int
    /// The kernel that ran, as the bench reports it: algorithm, layout, load width, chunk length.
    public let path: String
}
