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
/// Parallel over time: the sequence is cut into chunks; each chunk reduces to an affine map
/// (A, B) (h_end = A * h_start + B), a pass scans the maps per channel, a last pass replays each
/// chunk from its start state (`RecurrenceAlgorithm.chunked`). Where the device runs workgroups in
/// order (lavapipe), chunks instead look back at their predecessor's published end state,
/// reducing a predecessor that is not yet published from the input themselves
/// (`RecurrenceAlgorithm.chained`): one pass, no waiting without bound.
public struct LinearRecurrence: Hashable, Sendable {
    public enum Layout: String, Sendable, Hashable, CaseIterable, Codable, CustomStringConvertible {
        case bld = "BLD"
        case bdl = "BDL"
        public var description: String { rawValue }
    }

    public var layout: Layout
    public var complex: Bool
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

    public static let opName = "recurrence"

    /// The problem's dimensions read from a's shape.
    public struct Dimensions: Hashable, Sendable {
        public var batch: Int
        public var length: Int
        public var channels: Int
    }

    /// Records the forward pass: h (every state) and, when given, the final state. h0 nil
    /// means zeros.
    @discardableResult
    public func forward(a: Tensor, b: Tensor, h0: Tensor? = nil, h: Tensor,
                        finalState: Tensor? = nil, on stream: Stream) throws -> RecurrenceDispatch {
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
    @discardableResult
    public func backward(a: Tensor, h: Tensor, h0: Tensor? = nil, dh: Tensor, dFinal: Tensor? = nil,
                         da: Tensor, db: Tensor, dh0: Tensor? = nil, on stream: Stream) throws -> RecurrenceDispatch {
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

    public var description: String { rawValue }

    /// Chained where workgroups run roughly in dispatch order on a few threads (CPU devices),
    /// chunked elsewhere (GPUs run every chunk at once, so a chain would serialize).
    public static func preferred(for device: Device) -> RecurrenceAlgorithm {
        device.capabilities.type == .cpu ? .chained : .chunked
    }
}

/// What a recurrence call recorded.
public struct RecurrenceDispatch: Sendable {
    public let algorithm: RecurrenceAlgorithm
    public let chunkLength: Int
    public let chunks: Int
    /// The kernel that ran, as the bench reports it: algorithm, layout, load width, chunk length.
    public let path: String
}
