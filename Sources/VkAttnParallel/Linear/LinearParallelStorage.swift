import VkAttn
/// Caller-provided tensors for one rank's `ContextParallelLinearAttention.forward(into:)`, so
/// callers (and tests that NaN-poison outputs) own the storage. A nil field is allocated by the
/// op. Each given tensor is fp32 on the rank's device and overlaps neither an input nor another
/// output; the op writes every element of it.
public struct LinearParallelOutputStorage: Sendable {
    /// o [B, L_r, H, Dv].
    public var output: Tensor?
    /// S_in [B, H, Dk, Dv].
    public var incomingState: Tensor?
    /// The final state [B, H, Dk, Dv]: only on the last rank with `returnFinalState`.
    public var finalState: Tensor?

    /// - Parameters:
    ///   - output: o, or nil to allocate it.
    ///   - incomingState: S_in, or nil to allocate it.
    ///   - finalState: The final state (last rank with `returnFinalState` only), or nil.
    public init(output: Tensor? = nil, incomingState: Tensor? = nil, finalState: Tensor? = nil) {
        (self.output, self.incomingState, self.finalState) = (output, incomingState, finalState)
    }
}

/// Caller-provided tensors for one rank's `ContextParallelLinearAttention.backward(into:)`;
/// nil fields are allocated by the op, given ones obey `LinearParallelOutputStorage`'s rules.
public struct LinearParallelGradientStorage: Sendable {
    /// dq, dk [B, L_r, H, Dk], dv [B, L_r, H, Dv].
    public var dq: Tensor?, dk: Tensor?, dv: Tensor?
    /// d(log-gates) in the gates' shape: only with gating.
    public var dLogGates: Tensor?
    /// The initial state's gradient [B, H, Dk, Dv]: only on rank 0.
    public var dInitialState: Tensor?

    /// - Parameters:
    ///   - dq: dq, or nil to allocate it.
    ///   - dk: dk, or nil to allocate it.
    ///   - dv: dv, or nil to allocate it.
    ///   - dLogGates: The log-gates' gradient (with gating only), or nil.
    ///   - dInitialState: The initial state's gradient (rank 0 only), or nil.
    public init(dq: Tensor? = nil, dk: Tensor? = nil, dv: Tensor? = nil, dLogGates: Tensor? = nil, dInitialState: Tensor? = nil) {
        (self.dq, self.dk, self.dv, self.dLogGates, self.dInitialState) = (dq, dk, dv, dLogGates, dInitialState)
    }
}

extension ContextParallelLinearAttention {
    /// Checks one rank's forward outputs against its inputs (throws before anything is posted).
    func checkOutputs(_ s: LinearParallelOutputStorage, shape: Shape, rank: Int, size: Int, returnFinalState: Bool, device: Device,
                      inputs: [(String, Tensor?)]) throws {
        let state = [shape.batch, shape.heads, shape.dk, shape.dv]
        if s.finalState != nil && !(returnFinalState && rank == size - 1) {
            throw VkAttnError.invalidValue(op: Self.opName, operand: "finalState",
                                           reason: "given on rank \(rank); only the last rank with returnFinalState writes one")
        }
        try checkStorage([("output", s.output, [shape.batch, lengths[rank], shape.heads, shape.dv]), ("incomingState", s.incomingState, state),
                          ("finalState", s.finalState, state)], device: device, inputs: inputs)
    }

    /// Checks one rank's backward outputs against its inputs.
    func checkGradients(_ s: LinearParallelGradientStorage, shape: Shape, rank: Int, device: Device, inputs: [(String, Tensor?)]) throws {
        let (b, l, h) = (shape.batch, lengths[rank], shape.heads)
        if s.dLogGates != nil && attention.gating == .none {
            throw VkAttnError.invalidValue(op: Self.opName, operand: "dLogGates", reason: "given, but the gating is .none")
        }
        if s.dInitialState != nil && rank != 0 {
            throw VkAttnError.invalidValue(op: Self.opName, operand: "dInitialState", reason: "given on rank \(rank); only rank 0 writes it")
        }
        let gates = attention.gating == .perKey ? [b, l, h, shape.dk] : [b, l, h]
        try checkStorage([("dq", s.dq, [b, l, h, shape.dk]), ("dk", s.dk, [b, l, h, shape.dk]), ("dv", s.dv, [b, l, h, shape.dv]),
                          ("dLogGates", s.dLogGates, gates), ("dInitialState", s.dInitialState, [b, h, shape.dk, shape.dv])],
                         device: device, inputs: inputs)
    }

    /// Shape, dtype, device and size of each given output; no output overlaps an input or
    /// another output (the kernels read the inputs while writing the outputs).
    func checkStorage(_ outputs: [(String, Tensor?, [Int])], device: Device, inputs: [(String, Tensor?)]) throws {
        let given = outputs.compactMap { name, t, _ in t.map { (name, $0) } }
        for (name, t, expected) in outputs {
            guard let t else { continue }
            try t.expect(op: Self.opName, name, shape: expected, dtype: .f32, device: device)
            try t.expectBindable(op: Self.opName, name)
        }
        let others = inputs.compactMap { name, t in t.map { (name, $0) } }
        for (i, (name, o)) in given.enumerated() {
            for (other, t) in others + given[..<i] where Self.overlap(o, t) {
                throw VkAttnError.invalidValue(op: Self.opName, operand: name, reason: "overlaps \(other)")
            }
        }
    }

    static func overlap(_ a: Tensor, _ b: Tensor) -> Bool {
        a.buffer === b.buffer && a.slice.offset < b.slice.offset + b.byteCount && b.slice.offset < a.slice.offset + a.byteCount
    }
}
