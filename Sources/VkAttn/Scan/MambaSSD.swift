import VulkanCompute
import VkAttnShaders

/// Mamba-2's state-space duality (SSD) layer, forward and backward, fp32 accumulation: per
/// head h with head dimension P and state size N, a scalar decay per head and step,
///
///     H_t = exp(dt_t[h] A[h]) H_{t-1} + dt_t[h] B_t[g]^T x_t[h]     (state [N, P])
///     y_t[h] = C_t[g] H_t + D[h] x_t[h]
///
/// with g = h / (H / G) the head's group. This is chunked gated linear attention with per-head
/// gates (q = C, k = dt B, v = x, log-gate = dt A): small kernels (Shaders/mamba_ssd/) build
/// q, k and the log-gates, ``GatedLinearAttention``'s chunked kernels (cooperative matrices
/// for f16 where the device has them) do the work, and an epilogue adds D x (forward) or turns
/// GLA's gradients into dx, ddt, dA, dB, dC, dD (backward; dA, dD and the dt bias gradient are
/// sums over every token: per-block partials and a reduction kernel, no float atomics).
///
/// Shapes: x, y [B, L, H, P]; dt [B, L, H] f32; A [H] f32 (negative: decays); B, C
/// [B, L, G, N] with G dividing H; D [H] f32 (optional); states [B, H, N, P] f32. x, B, C (and
/// the backward's dy) are f32, f16 or bf16, all alike; y, dx, dB, dC are f32 or that type.
/// dt: as given (the step sizes, positive), or with ``dtSoftplus`` dt_eff = softplus(dt +
/// dtBias) as mamba_ssm's `dt_softplus` with `dt_bias` (dtBias [H] f32, optional either way:
/// without softplus dt_eff = dt + dtBias). Optional output gate z [B, L, H, P] in x's type:
/// y = (C H + D x) * silu(z), silu(z) = z sigmoid(z) (the backward then reruns the GLA forward
/// for the ungated output and also returns dz).
///
/// Packed variable-length batches: with `cuSeqlens` (as ``GatedLinearAttention``) the tensors
/// have batch 1 (x [1, T, H, P], dt [1, T, H], B, C [1, T, G, N]) and the states are
/// [N_seq, H, N, P]; no state crosses a sequence boundary.
public struct MambaSSD: Hashable, Sendable {
    /// Rows per chunk of the GLA kernels; nil: from the device.
    public var chunkLength: Int?
    /// The GLA kernels' preference (cooperative matrices for f16 where available).
    public var preference: KernelPreference
    /// dt_eff = softplus(dt + dtBias) (mamba_ssm's `dt_softplus`) instead of dt + dtBias.
    public var dtSoftplus: Bool

    /// - Parameters:
    ///   - chunkLength: Rows per chunk; nil chooses from the device.
    ///   - preference: Which GLA kernels run.
    ///   - dtSoftplus: Apply softplus to dt (+ dtBias).
    public init(chunkLength: Int? = nil, preference: KernelPreference = .automatic, dtSoftplus: Bool = false) {
        self.chunkLength = chunkLength
        self.preference = preference
        self.dtSoftplus = dtSoftplus
    }

    /// The op name in errors.
    public static let opName = "mamba.ssd"

    /// The GLA op the SSD runs on: per-head gates, this chunk length and preference.
    public var attention: GatedLinearAttention { GatedLinearAttention(gating: .perHead, chunkLength: chunkLength, preference: preference) }

    /// Records the forward pass: y and, when given, the final states.
    /// - Parameters:
    ///   - x: The inputs [B, L, H, P]: f32, f16 or bf16. Zero sizes (B, L, H or P) record no
    ///     kernel (with L = 0 the final state is the initial one, copied, or 0).
    ///   - dt: The step sizes [B, L, H] f32.
    ///   - a: A [H] f32, the per-head decay rates (negative).
    ///   - b: B [B, L, G, N] in x's type.
    ///   - c: C [B, L, G, N] in x's type.
    ///   - d: D [H] f32, the skip connection; nil: none.
    ///   - dtBias: A bias added to dt [H] f32; nil: none.
    ///   - z: The output gate [B, L, H, P] in x's type (y times silu(z)); nil: none.
    ///   - initialState: The states before step 0 [B, H, N, P] f32; nil: zeros.
    ///   - y: Receives y [B, L, H, P]: f32 or x's type.
    ///   - finalState: Receives the states after the last step [B, H, N, P] f32; nil skips them.
    ///   - cuSeqlens: Packed sequences (N_seq + 1 offsets; batch 1, states [N_seq, H, N, P]);
    ///     nil: dense.
    ///   - stream: The stream to record into.
    /// - Returns: The GLA dispatch (chunk length, chunks, kernel path).
    /// - Throws: ``VkAttnError`` (op `mamba.ssd`) for a shape, type, device or overlap the op
    ///   does not take, bad `cuSeqlens`, or a problem the GLA kernels refuse.
    @discardableResult
    public func forward(x: Tensor, dt: Tensor, a: Tensor, b: Tensor, c: Tensor, d: Tensor? = nil, dtBias: Tensor? = nil, z: Tensor? = nil,
                        initialState: Tensor? = nil, y: Tensor, finalState: Tensor? = nil, cuSeqlens: [Int32]? = nil,
                        on stream: Stream) throws -> GLADispatch {
        let plan = try MambaSSDPlan(op: self, device: stream.device, x: x, dt: dt, a: a, b: b, c: c, d: d, dtBias: dtBias, z: z,
                                    initialState: initialState, cuSeqlens: cuSeqlens)
        return try plan.forward(y: y, finalState: finalState, on: stream)
    }

    /// Records the backward pass: from dy (and dFinalState; nil: zeros) the gradients of x, dt,
    /// A, B, C, D (with D), the dt bias (with it) and, when given, the initial states.
    /// - Parameters:
    ///   - x: The forward's x.
    ///   - dt: The forward's dt.
    ///   - a: The forward's A.
    ///   - b: The forward's B.
    ///   - c: The forward's C.
    ///   - d: The forward's D; nil: none.
    ///   - dtBias: The forward's dt bias; nil: none.
    ///   - z: The forward's output gate; nil: none.
    ///   - initialState: The forward's initial states; nil: zeros.
    ///   - dy: The gradient of y [B, L, H, P] in x's type.
    ///   - dFinalState: The gradient of the final states [B, H, N, P] f32; nil: zeros.
    ///   - dx: Receives x's gradient (f32 or x's type; dB and dC the same type).
    ///   - ddt: Receives dt's gradient [B, L, H] f32 (of dt as given, through softplus).
    ///   - da: Receives A's gradient [H] f32.
    ///   - db: Receives B's gradient [B, L, G, N].
    ///   - dc: Receives C's gradient [B, L, G, N].
    ///   - dd: Receives D's gradient [H] f32: required with D, refused without.
    ///   - dDtBias: Receives the dt bias gradient [H] f32: required with a bias, refused without.
    ///   - dz: Receives z's gradient (dx's type): required with z, refused without.
    ///   - dInitialState: Receives the initial states' gradient [B, H, N, P] f32; nil skips it.
    ///   - cuSeqlens: The forward's packed sequences; nil: dense.
    ///   - stream: The stream to record into.
    /// - Returns: The GLA dispatch.
    /// - Throws: ``VkAttnError``, as ``forward(x:dt:a:b:c:d:dtBias:z:initialState:y:finalState:cuSeqlens:on:)``.
    @discardableResult
    public func backward(x: Tensor, dt: Tensor, a: Tensor, b: Tensor, c: Tensor, d: Tensor? = nil, dtBias: Tensor? = nil, z: Tensor? = nil,
                         initialState: Tensor? = nil, dy: Tensor, dFinalState: Tensor? = nil,
                         dx: Tensor, ddt: Tensor, da: Tensor, db: Tensor, dc: Tensor, dd: Tensor? = nil, dDtBias: Tensor? = nil, dz: Tensor? = nil,
                         dInitialState: Tensor? = nil, cuSeqlens: [Int32]? = nil, on stream: Stream) throws -> GLADispatch {
        let plan = try MambaSSDPlan(op: self, device: stream.device, x: x, dt: dt, a: a, b: b, c: c, d: d, dtBias: dtBias, z: z,
                                    initialState: initialState, cuSeqlens: cuSeqlens)
        return try plan.backward(dy: dy, dFinalState: dFinalState, dx: dx, ddt: ddt, da: da, db: db, dc: dc, dd: dd, dDtBias: dDtBias,
                                 dz: dz, dInitialState: dInitialState, on: stream)
    }
}

/// A validated SSD call: shapes, then the GLA plan over its workspaces (the context-parallel
/// SSD runs its pieces around ContextParallelLinearAttention).
package struct MambaSSDPlan {
    let op: MambaSSD
    let device: Device
    let x: Tensor, dt: Tensor, a: Tensor, b: Tensor, c: Tensor
    let d: Tensor?, dtBias: Tensor?, z: Tensor?, initial: Tensor?
    let cu: [Int32]?
    package let batch: Int, length: Int, heads: Int, headDim: Int, groups: Int, stateDim: Int
    let stateBatch: Int
    package let inputType: DType

    static let opName = MambaSSD.opName
    /// Tokens per block of the head reductions (lavapipe's loop cap bounds both levels).
    static let reduceRows = 256

    package var tokens: Int { batch * length }
    package var isEmpty: Bool { x.isEmpty }

    package init(op: MambaSSD, device: Device, x: Tensor, dt: Tensor, a: Tensor, b: Tensor, c: Tensor, d: Tensor?, dtBias: Tensor?,
                 z: Tensor? = nil, initialState: Tensor?, cuSeqlens: [Int32]?) throws {
        let name = Self.opName
        (self.op, self.device, self.x, self.dt, self.a, self.b, self.c, self.d, self.dtBias, self.z, self.initial, self.cu) =
            (op, device, x, dt, a, b, c, d, dtBias, z, initialState, cuSeqlens)
        guard x.shape.count == 4 else {
            throw VkAttnError.shapeMismatch(op: name, operand: "x", expected: "[B, L, H, P]", actual: "\(x.shape)")
        }
        (batch, length, heads, headDim) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        inputType = x.dtype
        guard inputType == .f32 || inputType.isHalfWidth else {
            throw VkAttnError.dtypeMismatch(op: name, operand: "x", expected: "f32, f16 or bf16", actual: inputType.rawValue)
        }
        if inputType.isHalfWidth && !device.enabled.storageBuffer16BitAccess {
            throw VkAttnError.unsupported(op: name, reason: "\(inputType) inputs need storageBuffer16BitAccess, which \(device.label) lacks")
        }
        guard b.shape.count == 4, Array(b.shape.prefix(2)) == [batch, length] else {
            throw VkAttnError.shapeMismatch(op: name, operand: "b", expected: "[\(batch), \(length), G, N]", actual: "\(b.shape)")
        }
        (groups, stateDim) = (b.shape[2], b.shape[3])
        guard groups >= 1, heads % groups == 0 else {
            throw VkAttnError.invalidValue(op: name, operand: "b", reason: "\(groups) groups must divide the \(heads) heads (and be at least 1)")
        }
        guard stateDim >= 1 else {
            throw VkAttnError.invalidValue(op: name, operand: "b", reason: "the state size N must be at least 1, got 0")
        }
        guard stateDim <= 256, headDim <= 256 else {
            throw VkAttnError.unsupported(op: name, reason: "state size and head dimension up to 256 (N \(stateDim), P \(headDim))")
        }
        try x.expect(op: name, "x", shape: x.shape, dtype: inputType, device: device)
        try b.expect(op: name, "b", shape: b.shape, dtype: inputType, device: device)
        try c.expect(op: name, "c", shape: b.shape, dtype: inputType, device: device)
        try dt.expect(op: name, "dt", shape: [batch, length, heads], dtype: .f32, device: device)
        try a.expect(op: name, "a", shape: [heads], dtype: .f32, device: device)
        if let d { try d.expect(op: name, "d", shape: [heads], dtype: .f32, device: device) }
        if let dtBias { try dtBias.expect(op: name, "dtBias", shape: [heads], dtype: .f32, device: device) }
        if let z { try z.expect(op: name, "z", shape: x.shape, dtype: inputType, device: device) }
        if let cuSeqlens {
            guard batch == 1 else {
                throw VkAttnError.shapeMismatch(op: name, operand: "x", expected: "[1, T, H, P] with cuSeqlens (packed sequences)", actual: "\(x.shape)")
            }
            try AttentionGeometry.checkCumulative(op: name, "cuSeqlens", cuSeqlens, total: length)
        }
        stateBatch = cuSeqlens.map { $0.count - 1 } ?? batch
        if let initialState {
            try initialState.expect(op: name, "initialState", shape: [stateBatch, heads, stateDim, headDim], dtype: .f32, device: device)
        }
        for (operand, t) in [("x", x), ("dt", dt), ("a", a), ("b", b), ("c", c)] + (d.map { [("d", $0)] } ?? [])
            + (dtBias.map { [("dtBias", $0)] } ?? []) + (z.map { [("z", $0)] } ?? []) + (initialState.map { [("initialState", $0)] } ?? []) {
            try t.expectBindable(op: name, operand)
        }
        guard tokens * heads * max(stateDim, headDim) < 1 << 31 else {
            throw VkAttnError.tooLarge(op: name, operand: "x", bytes: x.byteCount, limit: 1 << 33)
        }
        if device.capabilities.type == .cpu {
            let blocks = (tokens + Self.reduceRows - 1) / Self.reduceRows
            guard blocks < 60_000 else {
                throw VkAttnError.unsupported(op: name, reason: "\(tokens) tokens exceed the loop cap of \(device.label) in the head reductions")
            }
        }
    }

    var qkShape: [Int] { [batch, length, heads, stateDim] }

    func expectOutput(_ operand: String, _ t: Tensor, shape: [Int], halfAllowed: Bool) throws {
        try t.expect(op: Self.opName, operand, shape: shape, device: device)
        guard t.dtype == .f32 || (halfAllowed && t.dtype == inputType) else {
            throw VkAttnError.dtypeMismatch(op: Self.opName, operand: operand, expected: halfAllowed && inputType != .f32 ? "f32 or \(inputType)" : "f32",
                                            actual: t.dtype.rawValue)
        }
        try t.expectBindable(op: Self.opName, operand)
    }

    func expectNoOverlap(_ outputs: [(String, Tensor?)], inputs extra: [(String, Tensor?)] = []) throws {
        let inputs: [(String, Tensor?)] = [("x", x), ("dt", dt), ("a", a), ("b", b), ("c", c), ("d", d), ("dtBias", dtBias), ("z", z),
                                           ("initialState", initial)] + extra
        let outs = outputs.compactMap { o in o.1.map { (o.0, $0) } }
        for (k, (oName, o)) in outs.enumerated() {
            for (iName, i) in inputs.compactMap({ i in i.1.map { (i.0, $0) } }) + outs[(k + 1)...].map({ $0 }) where o.buffer === i.buffer
                && o.slice.offset < i.slice.offset + i.byteCount && i.slice.offset < o.slice.offset + o.byteCount {
                throw VkAttnError.invalidValue(op: Self.opName, operand: oName, reason: "overlaps \(iName)")
            }
        }
    }

    func push(flags: Int = 0, blocks: Int = 0) throws -> MambaSSDPush {
        let n = Self.opName
        var f = (d != nil ? 1 : 0) | (op.dtSoftplus ? 2 : 0) | (dtBias != nil ? 4 : 0) | (z != nil ? 16 : 0)
        f |= flags
        return MambaSSDPush(T: try UInt32(pushing: tokens, "\(n) tokens"), H: try UInt32(pushing: heads, "\(n) H"), G: try UInt32(pushing: groups, "\(n) G"),
                            N: try UInt32(pushing: stateDim, "\(n) N"), P: try UInt32(pushing: headDim, "\(n) P"), flags: UInt32(f),
                            rows: UInt32(Self.reduceRows), blocks: try UInt32(pushing: blocks, "\(n) blocks"))
    }

    func kernel(_ shader: ShaderSource, bindings: Int, mode: Int? = nil) throws -> Kernel {
        var spec: [String: SpecializationValue] = ["local_size_x": .int(64)]
        if let mode { spec["MODE"] = .int(mode) }
        return try device.kernel(KernelDescriptor(shader: shader, bindings: bindings, specialization: spec))
    }

    func grid(_ invocations: Int) -> (x: Int, y: Int, z: Int) {
        let groups = max(1, (invocations + 63) / 64)
        let maxX = device.capabilities.maxWorkgroupCount[0]
        let x = min(groups, maxX)
        return (x, (groups + x - 1) / x, 1)
    }

    func variant(_ f32: ShaderSource, f16: ShaderSource, f16o32: ShaderSource, bf16: ShaderSource, bf16o32: ShaderSource, output: DType) -> ShaderSource {
        LinearOperands.variant(input: inputType, output: output, f32, f16: f16, f16o32: f16o32, bf16: bf16, bf16o32: bf16o32)
    }

    /// q = C, k = dt_eff B (x's type) and the per-head log-gates, and the GLA plan over them.
    func encodePrep(_ stream: Stream) throws -> (plan: GLAPlan, q: Tensor, k: Tensor, gates: Tensor) {
        let (q, k, gates) = try makeInputs()
        let plan = try GLAPlan(op: op.attention, device: device, q: q, k: k, v: x, logGates: gates, initialState: initial, cuSeqlens: cu)
        try encodeInputs(stream, q: q, k: k, gates: gates)
        return (plan, q, k, gates)
    }

    /// The GLA inputs' workspaces: q, k [B, L, H, N] in x's type, log-gates [B, L, H] f32.
    package func makeInputs() throws -> (q: Tensor, k: Tensor, gates: Tensor) {
        (try device.makeTensor(shape: qkShape, dtype: inputType), try device.makeTensor(shape: qkShape, dtype: inputType),
         try device.makeTensor(shape: [batch, length, heads], dtype: .f32))
    }

    /// Records q = C, k = dt_eff B and the log-gates dt_eff A into `makeInputs()`'s tensors (a
    /// barrier follows).
    package func encodeInputs(_ stream: Stream, q: Tensor, k: Tensor, gates: Tensor) throws {
        let prep = try kernel(inputType == .f16 ? Shaders.mambaSsdPrepF16 : inputType == .bf16 ? Shaders.mambaSsdPrepBf16 : Shaders.mambaSsdPrepF32,
                              bindings: 8)
        try stream.dispatch(prep, bindings: [dt.slice, dtBias?.slice ?? dt.slice, a.slice, b.slice, c.slice, q.slice, k.slice, gates.slice],
                            push: try push(), groups: grid(tokens * heads * stateDim))
        try stream.barrier()
    }

    /// Checks the forward's outputs (before anything is recorded).
    package func checkForward(y: Tensor, finalState: Tensor?) throws {
        let name = Self.opName
        try expectOutput("y", y, shape: x.shape, halfAllowed: true)
        if let finalState {
            try finalState.expect(op: name, "finalState", shape: [stateBatch, heads, stateDim, headDim], dtype: .f32, device: device)
            try finalState.expectBindable(op: name, "finalState")
        }
        try expectNoOverlap([("y", y), ("finalState", finalState)])
    }

    /// y = (o + D x) silu(z) from GLA's o (f32), where the call has D or z.
    package func encodeOutput(_ stream: Stream, o: Tensor, y: Tensor) throws {
        try stream.dispatch(try outputKernel(mode: 0, output: y.dtype), bindings: [o.slice, x.slice, d?.slice ?? a.slice, y.slice, z?.slice ?? x.slice,
                                                                                 x.slice, o.slice],
                            push: try push(), groups: grid(tokens * heads * headDim))
    }

    func outputKernel(mode: Int, output: DType) throws -> Kernel {
        try kernel(variant(Shaders.mambaSsdOutputF32, f16: Shaders.mambaSsdOutputF16, f16o32: Shaders.mambaSsdOutputF16o32,
                           bf16: Shaders.mambaSsdOutputBf16, bf16o32: Shaders.mambaSsdOutputBf16o32, output: output), bindings: 7, mode: mode)
    }

    /// Whether y needs the epilogue (the call has D or z).
    package var hasD: Bool { d != nil || z != nil }

    func forward(y: Tensor, finalState: Tensor?, on stream: Stream) throws -> GLADispatch {
        try checkForward(y: y, finalState: finalState)
        if isEmpty {
            try y.recordFill(bits: 0, on: stream)
            if let finalState, !finalState.isEmpty {
                if let initial { try finalState.recordCopy(from: initial, on: stream) } else { try finalState.recordFill(bits: 0, on: stream) }
            }
            return GLADispatch(chunkLength: op.attention.chunkLength(on: device), chunks: 0, path: emptyInputPath)
        }
        let (plan, q, k, gates) = try encodePrep(stream)
        _ = (q, k, gates)
        // Without D, GLA writes y itself; with it, o goes through an fp32 workspace and the epilogue.
        let o = hasD ? try device.makeTensor(shape: x.shape, dtype: .f32) : y
        let dispatch = try plan.forward(output: o, finalState: finalState, chunkStates: nil, on: stream)
        if hasD {
            try stream.barrier()
            try encodeOutput(stream, o: o, y: y)
        }
        return GLADispatch(chunkLength: dispatch.chunkLength, chunks: dispatch.chunks, path: "ssd/" + dispatch.path)
    }

    /// Checks the backward's operands (before anything is recorded).
    package func checkBackward(dy: Tensor, dFinalState: Tensor?, dx: Tensor, ddt: Tensor, da: Tensor, db: Tensor, dc: Tensor, dd: Tensor?,
                               dDtBias: Tensor?, dz: Tensor? = nil, dInitialState: Tensor?) throws {
        let name = Self.opName
        let stateShape = [stateBatch, heads, stateDim, headDim]
        try dy.expect(op: name, "dy", shape: x.shape, dtype: inputType, device: device)
        try dy.expectBindable(op: name, "dy")
        if let dFinalState {
            try dFinalState.expect(op: name, "dFinalState", shape: stateShape, dtype: .f32, device: device)
            try dFinalState.expectBindable(op: name, "dFinalState")
        }
        try expectOutput("dx", dx, shape: x.shape, halfAllowed: true)
        try expectOutput("db", db, shape: b.shape, halfAllowed: true)
        try dc.expect(op: name, "dc", shape: b.shape, dtype: db.dtype, device: device)
        try dc.expectBindable(op: name, "dc")
        guard dx.dtype == db.dtype else {
            throw VkAttnError.dtypeMismatch(op: name, operand: "db", expected: dx.dtype.rawValue, actual: db.dtype.rawValue)
        }
        try expectOutput("ddt", ddt, shape: dt.shape, halfAllowed: false)
        try expectOutput("da", da, shape: [heads], halfAllowed: false)
        switch (d, dd) {
        case (nil, .some): throw VkAttnError.invalidValue(op: name, operand: "dd", reason: "given, but the forward had no D")
        case (.some, nil): throw VkAttnError.invalidValue(op: name, operand: "dd", reason: "required with D")
        case (_, let dd?): try expectOutput("dd", dd, shape: [heads], halfAllowed: false)
        default: break
        }
        switch (dtBias, dDtBias) {
        case (nil, .some): throw VkAttnError.invalidValue(op: name, operand: "dDtBias", reason: "given, but the forward had no dt bias")
        case (.some, nil): throw VkAttnError.invalidValue(op: name, operand: "dDtBias", reason: "required with a dt bias")
        case (_, let g?): try expectOutput("dDtBias", g, shape: [heads], halfAllowed: false)
        default: break
        }
        switch (z, dz) {
        case (nil, .some): throw VkAttnError.invalidValue(op: name, operand: "dz", reason: "given, but the forward had no z")
        case (.some, nil): throw VkAttnError.invalidValue(op: name, operand: "dz", reason: "required with z")
        case (_, let dz?):
            try dz.expect(op: name, "dz", shape: x.shape, dtype: dx.dtype, device: device)
            try dz.expectBindable(op: name, "dz")
        default: break
        }
        if let dInitialState { try expectOutput("dInitialState", dInitialState, shape: stateShape, halfAllowed: false) }
        try expectNoOverlap([("dx", dx), ("ddt", ddt), ("da", da), ("db", db), ("dc", dc), ("dd", dd), ("dDtBias", dDtBias), ("dz", dz),
                             ("dInitialState", dInitialState)], inputs: [("dy", dy), ("dFinalState", dFinalState)])
    }

    func backward(dy: Tensor, dFinalState: Tensor?, dx: Tensor, ddt: Tensor, da: Tensor, db: Tensor, dc: Tensor, dd: Tensor?,
                  dDtBias: Tensor?, dz: Tensor?, dInitialState: Tensor?, on stream: Stream) throws -> GLADispatch {
        try checkBackward(dy: dy, dFinalState: dFinalState, dx: dx, ddt: ddt, da: da, db: db, dc: dc, dd: dd, dDtBias: dDtBias, dz: dz,
                          dInitialState: dInitialState)
        if isEmpty {
            // No kernel: nothing reaches y, so every gradient is 0, but the initial states'
            // (dFinalState's, after zero steps).
            for t in [dx, ddt, da, db, dc] + [dd, dDtBias, dz].compactMap({ $0 }) { try t.recordFill(bits: 0, on: stream) }
            if let dInitialState {
                if let dFinalState, length == 0 { try dInitialState.recordCopy(from: dFinalState, on: stream) } else { try dInitialState.recordFill(bits: 0, on: stream) }
            }
            return GLADispatch(chunkLength: op.attention.chunkLength(on: device), chunks: 0, path: emptyInputPath)
        }
        let (plan, _, _, _) = try encodePrep(stream)
        let dq = try device.makeTensor(shape: qkShape, dtype: .f32), dk = try device.makeTensor(shape: qkShape, dtype: .f32)
        let dv = try device.makeTensor(shape: x.shape, dtype: .f32), dlg = try device.makeTensor(shape: dt.shape, dtype: .f32)
        var dy = dy
        if let dz {
            // The gate needs the ungated output: the GLA forward again, then dz and dy silu(z).
            let o = try device.makeTensor(shape: x.shape, dtype: .f32), dyEff = try device.makeTensor(shape: x.shape, dtype: inputType)
            _ = try plan.forward(output: o, finalState: nil, chunkStates: nil, on: stream)
            try stream.barrier()
            try stream.dispatch(try outputKernel(mode: 1, output: dz.dtype), bindings: [o.slice, x.slice, d?.slice ?? a.slice, dz.slice,
                                                                                      z?.slice ?? x.slice, dy.slice, dyEff.slice],
                                push: try push(), groups: grid(tokens * heads * headDim))
            try stream.barrier()
            dy = dyEff
        }
        let dispatch = try plan.backward(dOutput: dy, dFinalState: dFinalState, dq: dq, dk: dk, dv: dv, dLogGates: dlg,
                                         dInitialState: dInitialState, on: stream)
        try stream.barrier()
        try encodeGradients(stream, dy: dy, dq: dq, dk: dk, dv: dv, dLogGates: dlg, dx: dx, ddt: ddt, da: da, db: db, dc: dc, dd: dd, dDtBias: dDtBias)
        return GLADispatch(chunkLength: dispatch.chunkLength, chunks: dispatch.chunks, path: "ssd/" + dispatch.path)
    }

    /// From GLA's gradients (dq, dk, dv [B, L, H, *] and the log-gates' [B, L, H], f32): dx,
    /// ddt, dB, dC, and dA, dD, the dt bias gradient summed over this call's tokens.
    package func encodeGradients(_ stream: Stream, dy: Tensor, dq: Tensor, dk: Tensor, dv: Tensor, dLogGates dlg: Tensor, dx: Tensor, ddt: Tensor,
                                 da: Tensor, db: Tensor, dc: Tensor, dd: Tensor?, dDtBias: Tensor?) throws {
        let rows = try device.makeBuffer(byteCount: tokens * heads * 3 * 4)
        let blocks = (tokens + Self.reduceRows - 1) / Self.reduceRows
        let partials = try device.makeBuffer(byteCount: max(1, blocks * heads * 3) * 4)
        let shader = variant(Shaders.mambaSsdGradsF32, f16: Shaders.mambaSsdGradsF16, f16o32: Shaders.mambaSsdGradsF16o32,
                             bf16: Shaders.mambaSsdGradsBf16, bf16o32: Shaders.mambaSsdGradsBf16o32, output: dx.dtype)
        let bindings = [dt.slice, dtBias?.slice ?? dt.slice, a.slice, d?.slice ?? a.slice, x.slice, b.slice, dy.slice, dq.slice, dk.slice,
                        dv.slice, dlg.slice, dx.slice, ddt.slice, rows.whole, db.slice, dc.slice]
        try stream.dispatch(try kernel(shader, bindings: 16, mode: 0), bindings: bindings, push: try push(), groups: grid(tokens * heads))
        try stream.dispatch(try kernel(shader, bindings: 16, mode: 1), bindings: bindings, push: try push(), groups: grid(tokens * groups * stateDim))
        try stream.barrier()
        let wantBias = dDtBias != nil ? 8 : 0
        let reduce = [rows.whole, partials.whole, da.slice, dd?.slice ?? da.slice, dDtBias?.slice ?? da.slice]
        try stream.dispatch(try kernel(Shaders.mambaSsdReduce, bindings: 5, mode: 0), bindings: reduce,
                            push: try push(flags: wantBias, blocks: blocks), groups: grid(blocks * heads * 3))
        try stream.barrier()
        try stream.dispatch(try kernel(Shaders.mambaSsdReduce, bindings: 5, mode: 1), bindings: reduce,
                            push: try push(flags: wantBias, blocks: blocks), groups: grid(heads * 3))
    }
}

/// Shaders/mamba_ssd/ssd_common.glsl: the SSD kernels' sizes.
struct MambaSSDPush: PushConstantBlock {
    var T: UInt32, H: UInt32, G: UInt32, N: UInt32, P: UInt32
    var flags: UInt32
    /// Reduce: tokens per block, blocks.
    var rows: UInt32, blocks: UInt32
}
