import VkAttn

/// Mamba-2's SSD (`MambaSSD`) over a sequence sharded contiguously across the ranks of a device
/// group, through the scalar-decay context-parallel schemes of ``ContextParallelLinearAttention``
/// (LASP, LASP-2, ZeCO) with per-head gates: each rank builds its GLA inputs (q = C, k = dt B,
/// log-gates dt A) with the SSD's prep kernel, runs the context-parallel GLA with v = x, and
/// adds D x (forward) or turns the gradients into dx, ddt, dB, dC (backward). The head sums dA,
/// dD and the dt bias gradient are summed over each rank's tokens and then all-reduced, so every
/// rank returns the global ones. Rank r holds tokens [sum of lengths before r, + lengths[r]) of
/// every batch entry: x [B, L_r, H, P], dt [B, L_r, H], B, C [B, L_r, G, N] (fp32, as the
/// context-parallel GLA takes); A, D, the dt bias [H] on every rank; states [B, H, N, P].
/// Results equal the single-device op's within fp32 rounding.
public struct ContextParallelSSD: Sendable, Hashable {
    /// Tokens per rank (each >= 1).
    public var lengths: [Int]
    /// How the ranks pass states.
    public var scheme: ContextParallelScheme
    /// The local op: chunk length, kernel preference, dt softplus.
    public var ssd: MambaSSD

    /// - Parameters:
    ///   - lengths: Tokens per rank, in rank order; each at least 1.
    ///   - scheme: How the ranks pass states (LASP, LASP-2 or ZeCO).
    ///   - ssd: The local op.
    public init(lengths: [Int], scheme: ContextParallelScheme = .lasp2, ssd: MambaSSD) {
        self.lengths = lengths
        self.scheme = scheme
        self.ssd = ssd
    }

    /// The context-parallel GLA the SSD runs on.
    public var linear: ContextParallelLinearAttention { ContextParallelLinearAttention(lengths: lengths, scheme: scheme, attention: ssd.attention) }

    /// One rank's forward result.
    public struct Output: Sendable {
        /// y [B, L_r, H, P] f32.
        public let y: Tensor
        /// The state entering this rank's shard [B, H, N, P] (for the backward).
        public let incomingState: Tensor?
        /// The global final state, on the last rank when asked for.
        public let finalState: Tensor?
        /// The path: the context-parallel GLA's.
        public let path: String
    }

    /// One rank's gradients.
    public struct Gradients: Sendable {
        /// dx [B, L_r, H, P], ddt [B, L_r, H], dB and dC [B, L_r, G, N], all f32.
        public let dx: Tensor, ddt: Tensor, db: Tensor, dc: Tensor
        /// dA [H], summed over every rank's tokens (the same on every rank).
        public let da: Tensor
        /// dD [H] (with D) and the dt bias gradient [H] (with a bias), summed over every rank.
        public let dd: Tensor?, dDtBias: Tensor?
        /// The initial state's gradient, on rank 0.
        public let dInitialState: Tensor?
        /// The path.
        public let path: String
    }

    /// One rank's forward (every rank of `communicator` calls it with its shard).
    /// - Parameters:
    ///   - x: This rank's x [B, L_r, H, P] f32.
    ///   - dt: This rank's dt [B, L_r, H] f32.
    ///   - a: A [H] f32.
    ///   - b: This rank's B [B, L_r, G, N] f32.
    ///   - c: This rank's C [B, L_r, G, N] f32.
    ///   - d: D [H] f32; nil: none.
    ///   - dtBias: The dt bias [H] f32; nil: none.
    ///   - initialState: The global initial state [B, H, N, P]; only on rank 0.
    ///   - returnFinalState: Whether the last rank returns the global final state.
    ///   - comm: This rank's communicator.
    /// - Returns: y, the incoming state, the final state where asked for, and the path.
    /// - Throws: `VkAttnError` for this rank's tensors (the group is then aborted) or from the
    ///   context-parallel GLA; transfer and device errors.
    public func forward<C: Communicator>(x: Tensor, dt: Tensor, a: Tensor, b: Tensor, c: Tensor, d: Tensor? = nil, dtBias: Tensor? = nil,
                                         initialState: Tensor? = nil, returnFinalState: Bool = false,
                                         communicator comm: C) async throws -> Output {
        let device = comm.device
        let plan: MambaSSDPlan, inputs: (q: Tensor, k: Tensor, gates: Tensor), y: Tensor
        do {
            plan = try MambaSSDPlan(op: ssd, device: device, x: x, dt: dt, a: a, b: b, c: c, d: d, dtBias: dtBias, initialState: nil, cuSeqlens: nil)
            y = try device.makeTensor(shape: x.shape, dtype: .f32)
            try plan.checkForward(y: y, finalState: nil)
            inputs = try plan.makeInputs()
            if !plan.isEmpty {
                let stream = try device.makeStream()
                try plan.encodeInputs(stream, q: inputs.q, k: inputs.k, gates: inputs.gates)
                try await stream.submit().completion()
                try stream.synchronize()
            }
        } catch {
            comm.abort(error)
            throw error
        }
        let out = try await linear.forward(q: inputs.q, k: inputs.k, v: x, logGates: inputs.gates, initialState: initialState,
                                           returnFinalState: returnFinalState, communicator: comm)
        guard plan.hasD, !plan.isEmpty else {
            return Output(y: out.output, incomingState: out.incomingState, finalState: out.finalState, path: "ssd/" + out.path)
        }
        let stream = try device.makeStream()
        try plan.encodeOutput(stream, o: out.output, y: y)
        try await stream.submit().completion()
        try stream.synchronize()
        return Output(y: y, incomingState: out.incomingState, finalState: out.finalState, path: "ssd/" + out.path)
    }

    /// One rank's backward: `incomingState` is the forward's; `dFinalState` only on the last
    /// rank (nil: zeros).
    /// - Parameters:
    ///   - x: This rank's x.
    ///   - dt: This rank's dt.
    ///   - a: A.
    ///   - b: This rank's B.
    ///   - c: This rank's C.
    ///   - d: D; nil: none.
    ///   - dtBias: The dt bias; nil: none.
    ///   - incomingState: The forward's incoming state of this rank.
    ///   - dy: The gradient of this rank's y [B, L_r, H, P] f32.
    ///   - dFinalState: The gradient of the global final state; only on the last rank.
    ///   - comm: This rank's communicator.
    /// - Returns: This rank's gradients (dA, dD, the dt bias gradient global on every rank).
    /// - Throws: As ``forward(x:dt:a:b:c:d:dtBias:initialState:returnFinalState:communicator:)``.
    public func backward<C: Communicator>(x: Tensor, dt: Tensor, a: Tensor, b: Tensor, c: Tensor, d: Tensor? = nil, dtBias: Tensor? = nil,
                                          incomingState: Tensor?, dy: Tensor, dFinalState: Tensor? = nil,
                                          communicator comm: C) async throws -> Gradients {
        let device = comm.device
        let plan: MambaSSDPlan, inputs: (q: Tensor, k: Tensor, gates: Tensor)
        let dx: Tensor, ddt: Tensor, db: Tensor, dc: Tensor, da: Tensor, dd: Tensor, dBias: Tensor
        do {
            plan = try MambaSSDPlan(op: ssd, device: device, x: x, dt: dt, a: a, b: b, c: c, d: d, dtBias: dtBias, initialState: nil, cuSeqlens: nil)
            dx = try device.makeTensor(shape: x.shape, dtype: .f32)
            ddt = try device.makeTensor(shape: dt.shape, dtype: .f32)
            db = try device.makeTensor(shape: b.shape, dtype: .f32)
            dc = try device.makeTensor(shape: b.shape, dtype: .f32)
            (da, dd, dBias) = (try device.makeTensor(shape: [plan.heads], dtype: .f32), try device.makeTensor(shape: [plan.heads], dtype: .f32),
                               try device.makeTensor(shape: [plan.heads], dtype: .f32))
            try plan.checkBackward(dy: dy, dFinalState: nil, dx: dx, ddt: ddt, da: da, db: db, dc: dc, dd: d == nil ? nil : dd,
                                   dDtBias: dtBias == nil ? nil : dBias, dInitialState: nil)
            inputs = try plan.makeInputs()
            if !plan.isEmpty {
                let stream = try device.makeStream()
                try plan.encodeInputs(stream, q: inputs.q, k: inputs.k, gates: inputs.gates)
                try await stream.submit().completion()
                try stream.synchronize()
            }
        } catch {
            comm.abort(error)
            throw error
        }
        let grads = try await linear.backward(q: inputs.q, k: inputs.k, v: x, logGates: inputs.gates, incomingState: incomingState,
                                              dOutput: dy, dFinalState: dFinalState, communicator: comm)
        if plan.isEmpty {
            // Every rank alike: nothing reached y; no message.
            try await recordZeros([dx, ddt, db, dc, da, dd, dBias], on: device)
        } else {
            do {
                let stream = try device.makeStream()
                guard let dlg = grads.dLogGates else {
                    throw VkAttnError.unsupported(op: MambaSSD.opName, reason: "the context-parallel GLA returned no gate gradient")
                }
                try plan.encodeGradients(stream, dy: dy, dq: grads.dq, dk: grads.dk, dv: grads.dv, dLogGates: dlg, dx: dx, ddt: ddt,
                                         da: da, db: db, dc: dc, dd: d == nil ? nil : dd, dDtBias: dtBias == nil ? nil : dBias)
                // The three head sums in one buffer, one all-reduce, then back.
                let heads = [da] + (d == nil ? [] : [dd]) + (dtBias == nil ? [] : [dBias])
                let bytes = plan.heads * 4
                let sums = try device.makeBuffer(byteCount: heads.count * bytes), scratch = try device.makeBuffer(byteCount: heads.count * bytes)
                try stream.barrier()
                for (i, t) in heads.enumerated() { try stream.copy(from: t.slice, to: try sums.slice(offset: i * bytes, byteCount: bytes)) }
                try stream.barrier()
                let requests = try comm.allReduce(sums.whole, count: heads.count * plan.heads, op: .sum, scratch: scratch.whole, tag: 950, on: stream)
                try stream.barrier()
                for (i, t) in heads.enumerated() { try stream.copy(from: try sums.slice(offset: i * bytes, byteCount: bytes), to: t.slice) }
                try await stream.submit().completion()
                try stream.synchronize()
                for r in requests { try await r.wait() }
            } catch {
                comm.abort(error)
                throw error
            }
        }
        return Gradients(dx: dx, ddt: ddt, db: db, dc: dc, da: da, dd: d == nil ? nil : dd, dDtBias: dtBias == nil ? nil : dBias,
                         dInitialState: grads.dInitialState, path: "ssd/" + grads.path)
    }
}
