import VulkanCompute
import VkAttnShaders

/// A validated delta-rule call: shapes, the chunk and sequence tables, and the kernels of both
/// passes (Shaders/delta). Context-parallel callers (VkAttnParallel) record its pieces around
/// their exchanges.
package struct DeltaRulePlan {
    package let op: DeltaRule
    package let device: Device
    package let q: Tensor, k: Tensor, v: Tensor, beta: Tensor
    package let decay: Tensor?
    package let initial: Tensor?
    package let B: Int, L: Int, H: Int, Dk: Int, Dv: Int
    /// Rows of the packed batch (B L) and sequences (B dense, N packed).
    package let T: Int, N: Int
    /// Each sequence's rows.
    package let lengths: [Int]
    package let inputType: DType
    package let C: Int
    /// Chunks over the batch; boundary-state slots are chunks + N.
    package let chunks: Int
    /// Per chunk (first row, rows, sequence, slot of the state before it).
    package let chunkTable: [UInt32]
    /// Per sequence (first chunk, chunks).
    package let seqTable: [UInt32]
    let workgroup: Int
    static let carryWorkgroup = 256
    /// The cooperative-matrix layout of the chunk products (DeltaRuleCoopmat), or nil for the
    /// scalar kernels.
    let coopmat: DeltaRuleCoopmat?
    /// Why the cooperative-matrix kernels do not run, on a device that offers them.
    package let cooperativeMatrixSkipped: String?

    package static let opName = DeltaRule.opName

    package init(op: DeltaRule, device: Device, q: Tensor, k: Tensor, v: Tensor, beta: Tensor, logDecay: Tensor?,
                 initialState: Tensor?, cuSeqlens: [Int32]?) throws {
        let name = Self.opName
        (self.op, self.device, self.q, self.k, self.v, self.beta) = (op, device, q, k, v, beta)
        let operands = try LinearOperands(op: name, device: device, q: q, k: k, v: v)
        (B, L, H, Dk, Dv, inputType) = (operands.B, operands.L, operands.H, operands.Dk, operands.Dv, operands.inputType)
        try beta.expect(op: name, "beta", shape: [B, L, H], dtype: .f32, device: device)
        switch (op.gated, logDecay) {
        case (false, .some):
            throw VkAttnError.invalidValue(op: name, operand: "logDecay", reason: "given, but the op is not gated")
        case (true, nil):
            throw VkAttnError.invalidValue(op: name, operand: "logDecay", reason: "required by the gated delta rule")
        case (true, let g?):
            try g.expect(op: name, "logDecay", shape: [B, L, H], dtype: .f32, device: device)
        case (false, nil):
            break
        }
        decay = logDecay
        T = B * L
        if let cu = cuSeqlens {
            guard B == 1 else {
                throw VkAttnError.shapeMismatch(op: name, operand: "q", expected: "[1, T, H, Dk] with cuSeqlens (a packed batch)", actual: "\(q.shape)")
            }
            try AttentionGeometry.checkCumulative(op: name, "cuSeqlens", cu, total: L)
            lengths = (0..<(cu.count - 1)).map { Int(cu[$0 + 1] - cu[$0]) }
        } else {
            lengths = [Int](repeating: L, count: B)
        }
        N = lengths.count
        if let initialState { try initialState.expect(op: name, "initialState", shape: [N, H, Dk, Dv], dtype: .f32, device: device) }
        initial = initialState
        guard Dk <= 256, Dv <= 256 else {
            throw VkAttnError.unsupported(op: name, reason: "head dimensions up to 256 (Dk \(Dk), Dv \(Dv))")
        }
        workgroup = Dk + Dv > 256 ? 256 : 128
        C = op.chunkLength(on: device)
        guard C >= 1, C <= 64, DeltaRule.sharedBytes(chunk: C, workgroup: workgroup) <= device.capabilities.maxComputeSharedMemoryBytes else {
            throw VkAttnError.invalidValue(op: name, operand: "chunkLength",
                                           reason: "\(C) must be in 1...64 with five \(C) x \(C) fp32 matrices in shared memory (\(device.capabilities.maxComputeSharedMemoryBytes) bytes)")
        }
        var skipped: String? = "the scalar kernels were requested"
        var chosen: DeltaRuleCoopmat? = nil
        if op.preference != .scalar && !(q.isEmpty || v.isEmpty) {
            switch DeltaRuleCoopmat.choose(device: device, input: inputType, chunk: C, dk: Dk, dv: Dv) {
            case .success(let layout):
                chosen = layout
                skipped = nil
            case .failure(let why):
                if op.preference == .cooperativeMatrix {
                    throw VkAttnError.unsupported(op: name, reason: "cooperative-matrix kernels: \(why.reason)")
                }
                skipped = why.reason
            }
        }
        coopmat = chosen
        cooperativeMatrixSkipped = device.enabled.cooperativeMatrixKHR ? skipped : nil
        var table: [UInt32] = [], seqs: [UInt32] = []
        var row = 0, longest = 0
        for (s, length) in lengths.enumerated() {
            let first = table.count / 4
            var offset = 0
            while offset < length {
                let rows = min(C, length - offset)
                let chunk = table.count / 4
                table += [UInt32(row + offset), UInt32(rows), UInt32(s), UInt32(chunk + s)]
                offset += rows
            }
            let count = table.count / 4 - first
            longest = max(longest, count)
            seqs += [UInt32(first), UInt32(count)]
            row += length
        }
        chunkTable = table
        seqTable = seqs
        chunks = table.count / 4
        for (operand, t) in [("q", q), ("k", k), ("v", v), ("beta", beta)] + (decay.map { [("logDecay", $0)] } ?? [])
            + (initial.map { [("initialState", $0)] } ?? []) {
            try t.expectBindable(op: name, operand)
        }
        let limit = device.capabilities.maxStorageBufferRange
        let sizes = [("boundary states", (chunks + N) * H * Dk * Dv * 4), ("chunk maps", chunks * H * Dk * (Dk + Dv) * 4),
                     ("chunk workspace", T * H * max(Dk, Dv) * 4), ("chunk inverses", chunks * H * C * C * 4)]
            + (coopmat != nil ? [("chunk products", chunks * H * 5 * C * C * 4)] : [])
        for (operand, bytes) in sizes where bytes > limit || bytes / 4 >= 1 << 31 {
            throw VkAttnError.tooLarge(op: name, operand: operand, bytes: bytes, limit: min(limit, 1 << 33))
        }
        // Lavapipe caps an invocation at 65535 loop iterations: the carry steps Dk per chunk of
        // a sequence, the per-chunk kernels loop over rows times head dimensions (the
        // cooperative-matrix kernels' own estimate is in DeltaRuleCoopmat.choose).
        if device.capabilities.type == .cpu {
            let wg = workgroup, per = { (n: Int) in (n + wg - 1) / wg }
            let pairs = per(C * C), rowsV = per(C * Dv), rowsK = per(C * Dk)
            let grads = pairs * (3 * (Dk + Dv) + 3 * C) + rowsV * (Dk + C) + rowsK * (2 * Dv + 5 * C) + per(Dk * Dv) + 2 * Dk * per(C) + wg + 8 * C
            guard grads < 60_000, longest * Dk < 60_000 else {
                throw VkAttnError.unsupported(op: name, reason: "Dk \(Dk), Dv \(Dv) with \(C)-row chunks and \(longest) chunks in a sequence exceed the loop cap of \(device.label); use smaller chunks or shorter sequences")
            }
        }
    }

    /// True when nothing is computed: no rows, heads or an empty state (Dk or Dv zero).
    package var isEmpty: Bool { T == 0 || H == 0 || Dk == 0 || Dv == 0 }

    /// The kernels as paths report them: `coopmat-f16 8x8x8` when the chunk products run on
    /// cooperative matrices (wy_coopmat.comp, output_coopmat.comp, grads_state_coopmat.comp,
    /// grads_gram_coopmat.comp),
    /// else the scalar type and, on a device that offers cooperative matrices, why they do not.
    package var label: String {
        let kernels = coopmat.map { "coopmat-\(inputType) \(CooperativeMatrix.text($0.shape))" } ?? "scalar-\(inputType)"
        return "chunked-wy/\(op.gated ? "gated" : "ungated")/chunk\(C)/\(kernels)" + (cooperativeMatrixSkipped.map { " [no coopmat: \($0)]" } ?? "")
    }

    /// The backward's path: the label, and that grads.comp's sums over a chunk's rows (T^T dW,
    /// P^T Q, dA K, ...) stay scalar where its other products run on cooperative matrices.
    var backwardLabel: String { label + (coopmat != nil ? ", row-sum gradients scalar-\(inputType)" : "") }

    package func push(flags: Int) throws -> DeltaPush {
        let name = Self.opName
        return DeltaPush(T: try UInt32(pushing: T, "\(name) T"), H: try UInt32(pushing: H, "\(name) H"),
                         Dk: try UInt32(pushing: Dk, "\(name) Dk"), Dv: try UInt32(pushing: Dv, "\(name) Dv"),
                         C: try UInt32(pushing: C, "\(name) chunk"), chunks: try UInt32(pushing: chunks, "\(name) chunks"),
                         seqs: try UInt32(pushing: N, "\(name) sequences"), flags: try UInt32(pushing: flags, "\(name) flags"))
    }

    func kernel(_ shader: ShaderSource, bindings: Int, workgroup: Int, extra: [String: SpecializationValue] = [:]) throws -> Kernel {
        let shared: [String: SpecializationValue] = ["local_size_x": .int(workgroup), "GATED": .int(op.gated ? 1 : 0), "CH": .int(C)]
        let all = shared.merging(extra) { $1 }
        return try device.kernel(KernelDescriptor(shader: shader, bindings: bindings,
                                                  specialization: all.filter { shader.interface.specializationIDs[$0.key] != nil }))
    }

    func grid(groups: Int) -> (x: Int, y: Int, z: Int) {
        let maxX = device.capabilities.maxWorkgroupCount[0]
        let x = min(max(groups, 1), maxX)
        return (x, (max(groups, 1) + x - 1) / x, 1)
    }

    func variant(_ f32: ShaderSource, f16: ShaderSource, bf16: ShaderSource) -> ShaderSource {
        switch inputType {
        case .f16: return f16
        case .bf16: return bf16
        default: return f32
        }
    }

    func variant(_ f32: ShaderSource, f16: ShaderSource, f16o32: ShaderSource, bf16: ShaderSource, bf16o32: ShaderSource,
                 output: DType) -> ShaderSource {
        LinearOperands.variant(input: inputType, output: output, f32, f16: f16, f16o32: f16o32, bf16: bf16, bf16o32: bf16o32)
    }

    /// The output type `t` (f32 or the input type) of an output operand, or a typed error.
    func expectOutputType(_ operand: String, _ t: Tensor) throws {
        try LinearOperands.expectOutputType(op: Self.opName, input: inputType, operand, t)
    }

    /// Per-chunk quantities both passes read, made by `encodeMaps`.
    package struct Work {
        let chunkTable: Buffer, seqTable: Buffer, dummy: Buffer
        let gcum: Buffer, inverses: Buffer, u: Buffer, wk: Buffer
        /// Each chunk's affine map [chunks, H, Dk, Dk + Dv] (M beside Bc).
        package let maps: Buffer
    }

    /// The first passes of both directions: each chunk's WY form (prep.comp, or prep.comp's T
    /// and wy_coopmat.comp's products) and affine map (transition.comp).
    package func encodeMaps(_ stream: Stream) throws -> Work {
        let f = 4
        let work = Work(chunkTable: try device.makeBuffer(chunkTable.isEmpty ? [0, 0, 0, 0] : chunkTable),
                        seqTable: try device.makeBuffer(seqTable.isEmpty ? [0, 0] : seqTable),
                        dummy: try device.makeBuffer(byteCount: 16),
                        gcum: try device.makeBuffer(byteCount: T * H * f),
                        inverses: try device.makeBuffer(byteCount: chunks * H * C * C * f),
                        u: try device.makeBuffer(byteCount: T * H * Dv * f), wk: try device.makeBuffer(byteCount: T * H * Dk * f),
                        maps: try device.makeBuffer(byteCount: chunks * H * Dk * (Dk + Dv) * f))
        let groups = grid(groups: chunks * H)
        let prep = try kernel(variant(Shaders.deltaPrepF32, f16: Shaders.deltaPrepF16, bf16: Shaders.deltaPrepBf16), bindings: 9,
                              workgroup: workgroup, extra: ["PRODUCTS": .int(coopmat == nil ? 1 : 0)])
        try stream.dispatch(prep, bindings: [work.chunkTable.whole, k.slice, v.slice, beta.slice, decay?.slice ?? work.dummy.whole,
                                             work.gcum.whole, work.inverses.whole, work.u.whole, work.wk.whole],
                            push: push(flags: 0), groups: groups)
        try stream.barrier()
        if let cm = coopmat {
            let wy = try cm.wyKernel(device: device, chunk: C, dk: Dk, dv: Dv)
            try stream.dispatch(wy, bindings: [work.chunkTable.whole, k.slice, v.slice, beta.slice, work.gcum.whole, work.inverses.whole,
                                               work.u.whole, work.wk.whole],
                                push: push(flags: 0), groups: groups)
            try stream.barrier()
        }
        let transition = try kernel(variant(Shaders.deltaTransitionF32, f16: Shaders.deltaTransitionF16, bf16: Shaders.deltaTransitionBf16),
                                    bindings: 6, workgroup: workgroup)
        try stream.dispatch(transition, bindings: [work.chunkTable.whole, k.slice, work.gcum.whole, work.u.whole, work.wk.whole, work.maps.whole],
                            push: push(flags: 0), groups: groups)
        try stream.barrier()
        return work
    }

    /// Chains the maps over each sequence (carry.comp). Forward: from `start` ([N, H, Dk, Dv],
    /// nil: zeros) the boundary states into `states`; reversed: from `start` (the final states'
    /// gradient) with `bias` (the chunks' G) the boundary gradients. With `pairs`
    /// ([N, H, Dk, Dk + Dv]) the product of the maps is carried beside the state and written there.
    package func encodeCarry(_ stream: Stream, _ work: Work, reverse: Bool, start: BufferSlice?, bias: BufferSlice? = nil,
                             states: BufferSlice?, pairs: BufferSlice? = nil) throws {
        let carry = try kernel(Shaders.deltaCarry, bindings: 7, workgroup: Self.carryWorkgroup, extra: ["REVERSE": .int(reverse ? 1 : 0)])
        let width = (pairs != nil ? Dk : 0) + Dv
        let perGroup = Self.carryWorkgroup / Dk
        let blocks = (width + perGroup - 1) / perGroup
        let flags = (start != nil ? (reverse ? 2 : 1) : 0) | (pairs != nil ? 4 : 0) | (states != nil ? 8 : 0)
        try stream.dispatch(carry, bindings: [work.chunkTable.whole, work.seqTable.whole, work.maps.whole, bias ?? work.dummy.whole,
                                              start ?? work.dummy.whole, states ?? work.dummy.whole, pairs ?? work.dummy.whole],
                            push: push(flags: flags), groups: grid(groups: N * H * blocks))
    }

    /// The boundary-state buffer of the call: [chunks + N, H, Dk, Dv] f32.
    package func makeStates() throws -> Buffer {
        try device.makeBuffer(byteCount: (chunks + N) * H * Dk * Dv * 4)
    }

    /// Copies one boundary slot per sequence (its first with `first`, else its last) into `into`
    /// ([N, H, Dk, Dv]).
    package func encodeSlots(_ stream: Stream, from states: Buffer, first: Bool, into: Tensor) throws {
        let bytes = H * Dk * Dv * 4
        let regions = (0..<N).map { s -> (source: Int, destination: Int, bytes: Int) in
            let slot = Int(seqTable[2 * s]) + s + (first ? 0 : Int(seqTable[2 * s + 1]))
            return (slot * bytes, into.slice.offset + s * bytes, bytes)
        }
        try stream.copy(from: states, to: into.buffer, regions: regions)
    }

    /// Checks the forward's operands (before anything is recorded).
    package func checkForward(output: Tensor, finalState: Tensor?) throws {
        let name = Self.opName
        try output.expect(op: name, "output", shape: [B, L, H, Dv], device: device)
        try expectOutputType("output", output)
        try output.expectBindable(op: name, "output")
        if let finalState { try finalState.expect(op: name, "finalState", shape: [N, H, Dk, Dv], dtype: .f32, device: device) }
        try expectNoOverlap([("output", output)] + (finalState.map { [("finalState", $0)] } ?? []))
    }

    package func forward(output: Tensor, finalState: Tensor?, on stream: Stream) throws -> DeltaRuleDispatch {
        try checkForward(output: output, finalState: finalState)
        if isEmpty {
            // No kernel: o is empty or 0 (an empty state), and with no steps the final state is
            // the initial one (or 0).
            try output.recordFill(bits: 0, on: stream)
            if let finalState, !finalState.isEmpty {
                if let initial, T == 0 || H == 0 { try finalState.recordCopy(from: initial, on: stream) } else { try finalState.recordFill(bits: 0, on: stream) }
            }
            return DeltaRuleDispatch(chunkLength: C, chunks: chunks, path: emptyInputPath)
        }
        let work = try encodeMaps(stream)
        let states = try makeStates()
        try encodeCarry(stream, work, reverse: false, start: initial?.slice, states: states.whole)
        try stream.barrier()
        try encodeOutput(stream, work, states: states.whole, output: output)
        if let finalState {
            try encodeSlots(stream, from: states, first: false, into: finalState)
        }
        return DeltaRuleDispatch(chunkLength: C, chunks: chunks, path: label)
    }

    /// o from the boundary states (output.comp, mode 0, or output_coopmat.comp).
    package func encodeOutput(_ stream: Stream, _ work: Work, states: BufferSlice, output: Tensor) throws {
        let kernel: Kernel
        if let cm = coopmat {
            kernel = try cm.kernel(device: device, mode: 0, chunk: C, dk: Dk, dv: Dv, output: output.dtype)
        } else {
            let shader = variant(Shaders.deltaOutputF32, f16: Shaders.deltaOutputF16, f16o32: Shaders.deltaOutputF16o32,
                                 bf16: Shaders.deltaOutputBf16, bf16o32: Shaders.deltaOutputBf16o32, output: output.dtype)
            kernel = try self.kernel(shader, bindings: 12, workgroup: workgroup, extra: ["MODE": .int(0)])
        }
        let w = try device.makeBuffer(byteCount: T * H * Dv * 4)
        let d = work.dummy.whole
        try stream.dispatch(kernel, bindings: [work.chunkTable.whole, q.slice, k.slice, work.gcum.whole, work.u.whole, work.wk.whole,
                                               states, w.whole, d, output.slice, d, d],
                            push: push(flags: 0), groups: grid(groups: chunks * H))
    }

    /// Checks the backward's operands (before anything is recorded).
    package func checkBackward(dOutput: Tensor, dFinalState: Tensor?, dq: Tensor, dk: Tensor, dv: Tensor, dBeta: Tensor,
                               dLogDecay: Tensor?, dInitialState: Tensor?) throws {
        let name = Self.opName
        try dOutput.expect(op: name, "dOutput", shape: [B, L, H, Dv], dtype: inputType, device: device)
        if let dFinalState { try dFinalState.expect(op: name, "dFinalState", shape: [N, H, Dk, Dv], dtype: .f32, device: device) }
        try dq.expect(op: name, "dq", shape: [B, L, H, Dk], device: device)
        try expectOutputType("dq", dq)
        try dk.expect(op: name, "dk", shape: [B, L, H, Dk], dtype: dq.dtype, device: device)
        try dv.expect(op: name, "dv", shape: [B, L, H, Dv], dtype: dq.dtype, device: device)
        try dBeta.expect(op: name, "dBeta", shape: [B, L, H], dtype: .f32, device: device)
        switch (op.gated, dLogDecay) {
        case (false, .some):
            throw VkAttnError.invalidValue(op: name, operand: "dLogDecay", reason: "given, but the op is not gated")
        case (true, nil):
            throw VkAttnError.invalidValue(op: name, operand: "dLogDecay", reason: "required by the gated delta rule")
        case (true, let g?):
            try g.expect(op: name, "dLogDecay", shape: [B, L, H], dtype: .f32, device: device)
        case (false, nil):
            break
        }
        if let dInitialState { try dInitialState.expect(op: name, "dInitialState", shape: [N, H, Dk, Dv], dtype: .f32, device: device) }
        let outputs = [("dq", dq), ("dk", dk), ("dv", dv), ("dBeta", dBeta)] + (dLogDecay.map { [("dLogDecay", $0)] } ?? [])
            + (dInitialState.map { [("dInitialState", $0)] } ?? [])
        for (operand, t) in outputs + [("dOutput", dOutput)] + (dFinalState.map { [("dFinalState", $0)] } ?? []) {
            try t.expectBindable(op: name, operand)
        }
        try expectNoOverlap(outputs)
    }

    package func backward(dOutput: Tensor, dFinalState: Tensor?, dq: Tensor, dk: Tensor, dv: Tensor, dBeta: Tensor,
                          dLogDecay: Tensor?, dInitialState: Tensor?, on stream: Stream) throws -> DeltaRuleDispatch {
        try checkBackward(dOutput: dOutput, dFinalState: dFinalState, dq: dq, dk: dk, dv: dv, dBeta: dBeta, dLogDecay: dLogDecay,
                          dInitialState: dInitialState)
        if isEmpty {
            // No kernel: nothing reaches o (zero gradients); the initial state's gradient is the
            // final state's when no step ran, zero for an empty state.
            for t in [dq, dk, dv, dBeta] + (dLogDecay.map { [$0] } ?? []) { try t.recordFill(bits: 0, on: stream) }
            if let dInitialState, !dInitialState.isEmpty {
                if let dFinalState, T == 0 || H == 0 { try dInitialState.recordCopy(from: dFinalState, on: stream) } else { try dInitialState.recordFill(bits: 0, on: stream) }
            }
            return DeltaRuleDispatch(chunkLength: C, chunks: chunks, path: emptyInputPath)
        }
        let work = try encodeMaps(stream)
        let states = try makeStates()
        try encodeCarry(stream, work, reverse: false, start: initial?.slice, states: states.whole)
        try stream.barrier()
        let back = try encodeStateGradientBias(stream, work, states: states.whole, dOutput: dOutput)
        try stream.barrier()
        let dstates = try makeStates()
        try encodeCarry(stream, work, reverse: true, start: dFinalState?.slice, bias: back.g.whole, states: dstates.whole)
        try stream.barrier()
        try encodeGradients(stream, work, back, states: states.whole, dstates: dstates.whole, dOutput: dOutput,
                            dq: dq, dk: dk, dv: dv, dBeta: dBeta, dLogDecay: dLogDecay)
        if let dInitialState {
            try encodeSlots(stream, from: dstates, first: true, into: dInitialState)
        }
        return DeltaRuleDispatch(chunkLength: C, chunks: chunks, path: backwardLabel)
    }

    /// What the backward's state-gradient pass leaves for the gradients.
    package struct BackwardWork {
        let w: Buffer, r: Buffer
        /// Each chunk's contribution G [chunks, H, Dk, Dv] to the state gradient before it.
        package let g: Buffer
    }

    /// W, R = P^T dO and each chunk's G (output.comp, mode 1, or output_coopmat.comp).
    package func encodeStateGradientBias(_ stream: Stream, _ work: Work, states: BufferSlice, dOutput: Tensor) throws -> BackwardWork {
        let kernel: Kernel
        if let cm = coopmat {
            kernel = try cm.kernel(device: device, mode: 1, chunk: C, dk: Dk, dv: Dv, output: inputType)
        } else {
            let shader = variant(Shaders.deltaOutputF32, f16: Shaders.deltaOutputF16, f16o32: Shaders.deltaOutputF16o32,
                                 bf16: Shaders.deltaOutputBf16, bf16o32: Shaders.deltaOutputBf16o32, output: inputType)
            kernel = try self.kernel(shader, bindings: 12, workgroup: workgroup, extra: ["MODE": .int(1)])
        }
        let back = BackwardWork(w: try device.makeBuffer(byteCount: T * H * Dv * 4), r: try device.makeBuffer(byteCount: T * H * Dv * 4),
                                g: try device.makeBuffer(byteCount: chunks * H * Dk * Dv * 4))
        let d = work.dummy.whole
        try stream.dispatch(kernel, bindings: [work.chunkTable.whole, q.slice, k.slice, work.gcum.whole, work.u.whole, work.wk.whole,
                                               states, back.w.whole, dOutput.slice, d, back.r.whole, back.g.whole],
                            push: push(flags: 0), groups: grid(groups: chunks * H))
        return back
    }

    /// dq, dk, dv, dbeta and the log-decay gradient (grads.comp).
    package func encodeGradients(_ stream: Stream, _ work: Work, _ back: BackwardWork, states: BufferSlice, dstates: BufferSlice,
                                 dOutput: Tensor, dq: Tensor, dk: Tensor, dv: Tensor, dBeta: Tensor, dLogDecay: Tensor?) throws {
        let shader = variant(Shaders.deltaGradsF32, f16: Shaders.deltaGradsF16, f16o32: Shaders.deltaGradsF16o32,
                             bf16: Shaders.deltaGradsBf16, bf16o32: Shaders.deltaGradsBf16o32, output: dq.dtype)
        let coop = coopmat == nil ? 1 : 0
        let kernel = try kernel(shader, bindings: 21, workgroup: workgroup, extra: ["STATE_PRODUCTS": .int(coop), "GRAM": .int(coop)])
        let scratch = T * H * Dk * 4
        let dwk = try device.makeBuffer(byteCount: scratch), pq = try device.makeBuffer(byteCount: scratch)
        let pk = try device.makeBuffer(byteCount: scratch)
        var gramProducts: Buffer? = nil
        if let cm = coopmat {
            let stateProducts = try cm.gradsStateKernel(device: device, chunk: C, dk: Dk, dv: Dv)
            try stream.dispatch(stateProducts, bindings: [work.chunkTable.whole, k.slice, dOutput.slice, work.gcum.whole, states, dstates,
                                                     back.w.whole, back.r.whole, dwk.whole, pk.whole, pq.whole],
                                push: push(flags: 0), groups: grid(groups: chunks * H))
            try stream.barrier()
            let gram = try cm.gramKernel(device: device, chunk: C, dk: Dk, dv: Dv)
            let products = try device.makeBuffer(byteCount: chunks * H * 5 * C * C * 4)
            try stream.dispatch(gram, bindings: [work.chunkTable.whole, q.slice, k.slice, v.slice, dOutput.slice, back.w.whole, back.r.whole,
                                                 dwk.whole, products.whole],
                                push: push(flags: 0), groups: grid(groups: chunks * H))
            try stream.barrier()
            gramProducts = products
        }
        try stream.dispatch(kernel, bindings: [work.chunkTable.whole, q.slice, k.slice, v.slice, beta.slice, work.gcum.whole, dOutput.slice,
                                               work.inverses.whole, states, dstates, back.w.whole, back.r.whole, dwk.whole, pq.whole, pk.whole,
                                               dq.slice, dk.slice, dv.slice, dBeta.slice, dLogDecay?.slice ?? work.dummy.whole,
                                               gramProducts?.whole ?? work.dummy.whole],
                            push: push(flags: 0), groups: grid(groups: chunks * H))
    }

    func expectNoOverlap(_ outputs: [(String, Tensor)]) throws {
        let inputs = [("q", q), ("k", k), ("v", v), ("beta", beta)] + (decay.map { [("logDecay", $0)] } ?? [])
            + (initial.map { [("initialState", $0)] } ?? [])
        for (oName, o) in outputs {
            for (iName, i) in inputs + outputs where iName != oName && o.buffer === i.buffer
                && o.slice.offset < i.slice.offset + i.byteCount && i.slice.offset < o.slice.offset + o.byteCount {
                throw VkAttnError.invalidValue(op: Self.opName, operand: oName, reason: "overlaps \(iName)")
            }
        }
    }
}

/// Shaders/delta/delta.glsl's push constants.
package struct DeltaPush: PushConstantBlock {
    package var T: UInt32, H: UInt32, Dk: UInt32, Dv: UInt32
    /// Rows per chunk, chunk-table entries and sequences.
    package var C: UInt32, chunks: UInt32, seqs: UInt32
    package var flags: UInt32
}
