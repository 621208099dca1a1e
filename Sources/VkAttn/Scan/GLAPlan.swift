import VulkanCompute
import VkAttnShaders

/// A validated GLA call: shapes, chunking, workspaces and the kernels of both passes.
package struct GLAPlan {
    package let op: GatedLinearAttention
    package let device: Device
    package let q: Tensor, k: Tensor, v: Tensor
    package let gates: Tensor?
    package let initial: Tensor?
    package let B: Int, L: Int, H: Int, Dk: Int, Dv: Int
    /// q, k, v (and dO): f32, f16 or bf16; outputs f32 or this type. Gates and states are fp32.
    package let inputType: DType
    package let C: Int, NC: Int
    package let gradsWorkgroup: Int
    /// The cooperative-matrix layout of the chunk products, or nil for the scalar kernels.
    let coopmat: GLACoopmat?
    /// Why the cooperative-matrix kernels do not run, on a device that offers them.
    package let cooperativeMatrixSkipped: String?
    /// Packed sequences (B = 1): the chunk table (see Shaders/common/scan_gla.glsl), nil for
    /// a dense [B, L] call.
    package let packing: GLAPacking?
    /// The uploaded chunk table (packed, non-empty calls).
    let tableBuffer: Buffer?
    /// The chunk-table binding: the table, or any buffer for a dense call (never read).
    package var table: BufferSlice { tableBuffer?.whole ?? q.slice }
    /// Sequences whose states the call reads and writes: N_seq packed, B dense.
    package var stateBatch: Int { packing?.sequences ?? B }
    /// Boundary-state slots per (b, h): NC + 1 dense, NC + N_seq packed.
    package var slots: Int { NC + max(packing?.sequences ?? 0, 1) }

    package static let opName = GatedLinearAttention.opName

    package var gateMode: Int {
        switch op.gating {
        case .none: return 0
        case .perHead: return 1
        case .perKey: return 2
        }
    }

    package init(op: GatedLinearAttention, device: Device, q: Tensor, k: Tensor, v: Tensor, logGates: Tensor?, initialState: Tensor?,
                 cuSeqlens: [Int32]? = nil) throws {
        let name = Self.opName
        self.op = op
        self.device = device
        self.q = q
        self.k = k
        self.v = v
        let operands = try LinearOperands(op: name, device: device, q: q, k: k, v: v)
        (B, L, H, Dk, Dv, inputType) = (operands.B, operands.L, operands.H, operands.Dk, operands.Dv, operands.inputType)
        switch (op.gating, logGates) {
        case (.none, nil):
            break
        case (.none, .some):
            throw VkAttnError.invalidValue(op: name, operand: "logGates", reason: "given, but the gating is .none")
        case (_, nil):
            throw VkAttnError.invalidValue(op: name, operand: "logGates", reason: "required for \(op.gating) gating")
        case (.perHead, let g?):
            try g.expect(op: name, "logGates", shape: [B, L, H], dtype: .f32, device: device)
        case (.perKey, let g?):
            try g.expect(op: name, "logGates", shape: q.shape, dtype: .f32, device: device)
        }
        gates = logGates
        if let cuSeqlens {
            guard B == 1 else {
                throw VkAttnError.shapeMismatch(op: name, operand: "q", expected: "[1, T, H, Dk] with cuSeqlens (packed sequences)", actual: "\(q.shape)")
            }
            try AttentionGeometry.checkCumulative(op: name, "cuSeqlens", cuSeqlens, total: L)
        }
        let stateBatch = cuSeqlens.map { $0.count - 1 } ?? B
        if let initialState { try initialState.expect(op: name, "initialState", shape: [stateBatch, H, Dk, Dv], dtype: .f32, device: device) }
        initial = initialState
        guard Dk <= 256, Dv <= 256 else {
            throw VkAttnError.unsupported(op: name, reason: "head dimensions up to 256 (Dk \(Dk), Dv \(Dv))")
        }
        C = op.chunkLength(on: device)
        guard C >= 1, C <= 64, 2 * C * C * 4 + 512 <= device.capabilities.maxComputeSharedMemoryBytes else {
            throw VkAttnError.invalidValue(op: name, operand: "chunkLength", reason: "\(C) must be in 1...64 with two \(C) x \(C) fp32 matrices in shared memory")
        }
        let chunk = C
        let packing = cuSeqlens.map { GLAPacking(cuSeqlens: $0, chunkLength: chunk) }
        self.packing = packing
        if let packing { NC = packing.chunks } else { NC = (L + C - 1) / C }
        for (operand, t) in [("q", q), ("k", k), ("v", v)] + (gates.map { [("logGates", $0)] } ?? []) + (initial.map { [("initialState", $0)] } ?? []) {
            try t.expectBindable(op: name, operand)
        }
        let statesBytes = B * H * (NC + max(packing?.sequences ?? 0, 1)) * Dk * Dv * 4
        guard statesBytes <= device.capabilities.maxStorageBufferRange else {
            throw VkAttnError.tooLarge(op: name, operand: "chunk-boundary states", bytes: statesBytes, limit: device.capabilities.maxStorageBufferRange)
        }
        guard B * L * H * max(Dk, Dv) < 1 << 31, B * H * NC * Dk * Dv < 1 << 31 else {
            throw VkAttnError.tooLarge(op: name, operand: "q", bytes: q.byteCount, limit: 1 << 33)
        }
        gradsWorkgroup = Dk + Dv > 256 ? 256 : 128
        var skipped: String? = "the scalar kernels were requested"
        var chosen: GLACoopmat? = nil
        if op.preference != .scalar && !(q.isEmpty || v.isEmpty) {
            switch GLACoopmat.choose(device: device, input: inputType, chunk: C, dk: Dk, dv: Dv) {
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
        tableBuffer = try packing.flatMap { $0.table.isEmpty || q.isEmpty || v.isEmpty ? nil : try device.makeBuffer($0.table) }
        cooperativeMatrixSkipped = device.enabled.cooperativeMatrixKHR ? skipped : nil
        // Lavapipe caps an invocation at 65535 loop iterations: the per-chunk kernels loop over
        // rows times head dimensions.
        if device.capabilities.type == .cpu {
            let columns = (Dk + Dv + gradsWorkgroup - 1) / gradsWorkgroup
            let worst = columns * C * (2 * Dv + 2 * C + Dk) + (C * C / gradsWorkgroup + 1) * (Dk + Dv)
            guard worst < 60_000, NC + Dv < 60_000 else {
                throw VkAttnError.unsupported(op: name, reason: "Dk \(Dk), Dv \(Dv) with \(C)-row chunks exceed the loop cap of \(device.label); use smaller chunks")
            }
            // Packed: the state passes walk every sequence (and its final state's Dv columns).
            if let packing, packing.sequences * (Dv + 2) + NC >= 60_000 {
                throw VkAttnError.unsupported(op: name, reason: "\(packing.sequences) packed sequences of Dv \(Dv) in \(NC) chunks exceed the loop cap of \(device.label)")
            }
        }
    }


    /// True when q or v has no elements (B, L, H, Dk or Dv is zero): no kernel is recorded.
    package var isEmpty: Bool { q.isEmpty || v.isEmpty }

    package var label: String {
        let kernels = coopmat.map { "coopmat-\(inputType) \(CooperativeMatrix.text($0.shape))" } ?? "scalar-\(inputType)"
        return "chunked/\(op.gating.rawValue)/chunk\(C)/\(kernels)" + (cooperativeMatrixSkipped.map { " [no coopmat: \($0)]" } ?? "")
    }

    /// The output type `t` (f32 or the input type) of an output operand, or a typed error.
    package func expectOutputType(_ operand: String, _ t: Tensor) throws {
        try LinearOperands.expectOutputType(op: Self.opName, input: inputType, operand, t)
    }

    /// The variant of a kernel reading the inputs and writing outputs of type `output`.
    package func variant(_ f32: ShaderSource, f16: ShaderSource, f16o32: ShaderSource, bf16: ShaderSource, bf16o32: ShaderSource,
                 output: DType) -> ShaderSource {
        LinearOperands.variant(input: inputType, output: output, f32, f16: f16, f16o32: f16o32, bf16: bf16, bf16o32: bf16o32)
    }

    /// The state-contribution kernel for the inputs' type.
    package var stateShader: ShaderSource {
        switch inputType {
        case .f16: return Shaders.scanGlaStateF16
        case .bf16: return Shaders.scanGlaStateBf16
        default: return Shaders.scanGlaStateF32
        }
    }

    package func push(flags: Int) throws -> GLAPush {
        let name = Self.opName
        return GLAPush(B: try UInt32(pushing: B, "\(name) B"), L: try UInt32(pushing: L, "\(name) L"), H: try UInt32(pushing: H, "\(name) H"),
                       Dk: try UInt32(pushing: Dk, "\(name) Dk"), Dv: try UInt32(pushing: Dv, "\(name) Dv"), C: try UInt32(pushing: C, "\(name) chunk"),
                       NC: try UInt32(pushing: NC, "\(name) chunks"), flags: try UInt32(pushing: flags, "\(name) flags"),
                       NSEQ: try UInt32(pushing: packing?.sequences ?? 0, "\(name) sequences"))
    }

    package func kernel(_ shader: ShaderSource, bindings: Int, mode: Int = 0, workgroup: Int = 64) throws -> Kernel {
        // The scalar GLA kernels share these constants; each declares the ones it uses.
        let shared: [String: SpecializationValue] = ["local_size_x": .int(workgroup), "GATE": .int(gateMode), "MODE": .int(mode), "CH": .int(C)]
        return try device.kernel(KernelDescriptor(shader: shader, bindings: bindings,
                                                  specialization: shared.filter { shader.interface.specializationIDs[$0.key] != nil }))
    }

    package func grid(invocations: Int, workgroup: Int) -> (x: Int, y: Int, z: Int) {
        let groups = max(1, (invocations + workgroup - 1) / workgroup)
        return grid(groups: groups)
    }

    package func grid(groups: Int) -> (x: Int, y: Int, z: Int) {
        let maxX = device.capabilities.maxWorkgroupCount[0]
        let x = min(groups, maxX)
        return (x, (groups + x - 1) / x, 1)
    }

    /// The shared first half of both passes: the chunk-local gate sums and the boundary
    /// states (into `states`).
    package func encodeStates(_ stream: Stream, states: BufferSlice, finalState: Tensor? = nil) throws -> Buffer? {
        let g = gateMode
        var gcum: Buffer?
        if let gates {
            let buffer = try device.makeBuffer(byteCount: gates.byteCount)
            gcum = buffer
            let k = try kernel(Shaders.scanGlaCumsum, bindings: 3)
            try stream.dispatch(k, bindings: [gates.slice, buffer.whole, table], push: push(flags: 0),
                                groups: grid(invocations: B * H * (g == 2 ? Dk : 1) * NC, workgroup: 64))
            try stream.barrier()
        }
        let gcumSlice = gcum?.whole ?? q.slice
        let contributions = try stateContributions(mode: 0)
        try stream.dispatch(contributions.kernel, bindings: [k.slice, v.slice, gcumSlice, states, table], push: push(flags: 0),
                            groups: contributions.groups)
        try stream.barrier()
        let scan = try kernel(Shaders.scanGlaScan, bindings: 5, mode: 0)
        // Packed: the scan also writes each sequence's final state (flag 8).
        try stream.dispatch(scan, bindings: [states, gcumSlice, initial?.slice ?? q.slice, finalState?.slice ?? states, table],
                            push: push(flags: (initial != nil ? 1 : 0) | (finalState != nil ? 8 : 0)), groups: grid(invocations: B * H * Dk * Dv, workgroup: 64))
        try stream.barrier()
        return gcum
    }

    /// Checks the forward's operands (before anything is recorded).
    package func checkForward(output: Tensor, finalState: Tensor?, chunkStates: Tensor?) throws {
        let name = Self.opName
        try output.expect(op: name, "output", shape: [B, L, H, Dv], device: device)
        try expectOutputType("output", output)
        try output.expectBindable(op: name, "output")
        if let finalState { try finalState.expect(op: name, "finalState", shape: [stateBatch, H, Dk, Dv], dtype: .f32, device: device) }
        if let chunkStates {
            try chunkStates.expect(op: name, "chunkStates", shape: [B, H, slots, Dk, Dv], dtype: .f32, device: device)
            try chunkStates.expectBindable(op: name, "chunkStates")
        }
        try expectNoOverlap([("output", output)] + (finalState.map { [("finalState", $0)] } ?? []) + (chunkStates.map { [("chunkStates", $0)] } ?? []))
    }

    package func forward(output: Tensor, finalState: Tensor?, chunkStates: Tensor?, on stream: Stream) throws -> GLADispatch {
        try checkForward(output: output, finalState: finalState, chunkStates: chunkStates)
        if isEmpty {
            // No kernel: o = q S is zero (Dk = 0) or empty; after zero steps (L = 0) every
            // state, final or boundary, is the initial one (or zero without one).
            try output.recordFill(bits: 0, on: stream)
            for (isBoundary, state) in [(false, finalState), (true, chunkStates)] {
                guard let state, !state.isEmpty else { continue }
                if let initial, let packing, isBoundary, packing.sequences > 1, H > 1 {
                    // Packed boundary states are [1, H, N_seq, Dk, Dv]: sequence-major initial
                    // states go in (sequence, head) by (sequence, head).
                    let bytes = Dk * Dv * 4
                    for s in 0..<packing.sequences {
                        for h in 0..<H {
                            try stream.copy(from: try initial.buffer.slice(offset: initial.slice.offset + (s * H + h) * bytes, byteCount: bytes),
                                            to: try state.buffer.slice(offset: state.slice.offset + (h * packing.sequences + s) * bytes, byteCount: bytes))
                        }
                    }
                } else if let initial { try state.recordCopy(from: initial, on: stream) } else { try state.recordFill(bits: 0, on: stream) }
            }
            return GLADispatch(chunkLength: C, chunks: NC, path: emptyInputPath)
        }
        let (statesSlice, gcum) = try encodeForwardStates(stream, chunkStates: chunkStates, finalState: packing != nil ? finalState : nil)
        try encodeForwardOutput(stream, states: statesSlice, gcum: gcum, output: output)
        if let finalState, packing == nil {
            try stream.barrier()
            try encodeFinalState(stream, states: statesSlice, into: finalState)
        }
        return GLADispatch(chunkLength: C, chunks: NC, path: label)
    }

    /// The forward's first half: the boundary states (into `chunkStates` when given) and the
    /// chunk-local gate sums. Callers that run work between the halves (the cross-rank scan of
    /// ContextParallelLinearAttention) record the second half, perhaps on another stream of
    /// the same queue, after it.
    /// `finalState`: packed calls only, written by the state scan (dense calls copy it with
    /// `encodeFinalState` after the output).
    package func encodeForwardStates(_ stream: Stream, chunkStates: Tensor?, finalState: Tensor? = nil) throws -> (states: BufferSlice, gcum: Buffer?) {
        let states = try chunkStates?.slice ?? device.makeBuffer(byteCount: B * H * slots * Dk * Dv * 4).whole
        let gcum = try encodeStates(stream, states: states, finalState: finalState)
        return (states, gcum)
    }

    /// The forward's second half: o from the boundary states.
    package func encodeForwardOutput(_ stream: Stream, states: BufferSlice, gcum: Buffer?, output: Tensor) throws {
        let outputKernel = try outputKernel(output: output.dtype)
        try stream.dispatch(outputKernel, bindings: [q.slice, k.slice, v.slice, gcum?.whole ?? q.slice, states, output.slice, table],
                            push: push(flags: 0), groups: grid(groups: B * H * NC))
    }

    /// The final state: the last boundary state of each (b, h).
    package func encodeFinalState(_ stream: Stream, states: BufferSlice, into finalState: Tensor) throws {
        for bh in 0..<(B * H) {
            let from = try states.buffer.slice(offset: states.offset + ((bh * (NC + 1) + NC) * Dk * Dv) * 4, byteCount: Dk * Dv * 4)
            let to = try finalState.buffer.slice(offset: finalState.slice.offset + bh * Dk * Dv * 4, byteCount: Dk * Dv * 4)
            try stream.copy(from: from, to: to)
        }
    }

    /// Checks the backward's operands (before anything is recorded).
    package func checkBackward(dOutput: Tensor, dFinalState: Tensor?, dq: Tensor, dk: Tensor, dv: Tensor,
                       dLogGates: Tensor?, dInitialState: Tensor?) throws {
        let name = Self.opName
        try dOutput.expect(op: name, "dOutput", shape: [B, L, H, Dv], dtype: inputType, device: device)
        if let dFinalState { try dFinalState.expect(op: name, "dFinalState", shape: [stateBatch, H, Dk, Dv], dtype: .f32, device: device) }
        try dq.expect(op: name, "dq", shape: [B, L, H, Dk], device: device)
        try expectOutputType("dq", dq)
        try dk.expect(op: name, "dk", shape: [B, L, H, Dk], dtype: dq.dtype, device: device)
        try dv.expect(op: name, "dv", shape: [B, L, H, Dv], dtype: dq.dtype, device: device)
        switch (op.gating, dLogGates) {
        case (.none, nil):
            break
        case (.none, .some):
            throw VkAttnError.invalidValue(op: name, operand: "dLogGates", reason: "given, but the gating is .none")
        case (_, nil):
            throw VkAttnError.invalidValue(op: name, operand: "dLogGates", reason: "required for \(op.gating) gating")
        case (.perHead, let g?):
            try g.expect(op: name, "dLogGates", shape: [B, L, H], dtype: .f32, device: device)
        case (.perKey, let g?):
            try g.expect(op: name, "dLogGates", shape: [B, L, H, Dk], dtype: .f32, device: device)
        }
        if let dInitialState { try dInitialState.expect(op: name, "dInitialState", shape: [stateBatch, H, Dk, Dv], dtype: .f32, device: device) }
        let outputs = [("dq", dq), ("dk", dk), ("dv", dv)] + (dLogGates.map { [("dLogGates", $0)] } ?? [])
            + (dInitialState.map { [("dInitialState", $0)] } ?? [])
        for (operand, t) in outputs + [("dOutput", dOutput)] + (dFinalState.map { [("dFinalState", $0)] } ?? []) {
            try t.expectBindable(op: name, operand)
        }
        try expectNoOverlap(outputs)
    }

    package func backward(dOutput: Tensor, dFinalState: Tensor?, dq: Tensor, dk: Tensor, dv: Tensor,
                  dLogGates: Tensor?, dInitialState: Tensor?, on stream: Stream) throws -> GLADispatch {
        try checkBackward(dOutput: dOutput, dFinalState: dFinalState, dq: dq, dk: dk, dv: dv, dLogGates: dLogGates, dInitialState: dInitialState)
        if isEmpty {
            // No kernel: with no steps or an empty state, nothing reaches o through q, k, v or
            // the gates (zero gradients), and the initial state's gradient is dFinalState's.
            for t in [dq, dk, dv] + (dLogGates.map { [$0] } ?? []) { try t.recordFill(bits: 0, on: stream) }
            if let dInitialState {
                if let dFinalState { try dInitialState.recordCopy(from: dFinalState, on: stream) } else { try dInitialState.recordFill(bits: 0, on: stream) }
            }
            return GLADispatch(chunkLength: C, chunks: NC, path: emptyInputPath)
        }
        let work = try encodeBackwardStates(stream, dOutput: dOutput)
        try encodeBackwardGradients(stream, work, dOutput: dOutput, dFinalState: dFinalState, dq: dq, dk: dk, dv: dv,
                                    dLogGates: dLogGates, dInitialState: dInitialState)
        return GLADispatch(chunkLength: C, chunks: NC, path: label + (coopmat.map { $0.gradsSubgroups == nil ? ", gradients scalar-\(inputType) (\($0.gradsSkipped))" : "" } ?? ""))
    }

    /// What the backward's first half leaves for the second.
    package struct BackwardWork {
        let states: Buffer, dstates: Buffer, gcum: Buffer?
        var gcumSlice: BufferSlice
    }

    /// The backward's first half, which needs no final-state gradient: the boundary states and
    /// the per-chunk contributions of dO to the state gradients. Callers that run work
    /// between the halves (the cross-rank suffix scan) record the second half after it.
    package func encodeBackwardStates(_ stream: Stream, dOutput: Tensor) throws -> BackwardWork {
        let stateBytes = B * H * slots * Dk * Dv * 4
        let states = try device.makeBuffer(byteCount: stateBytes)
        let dstates = try device.makeBuffer(byteCount: stateBytes)
        let contributions = try stateContributions(mode: 1)
        let gcum = try encodeStates(stream, states: states.whole)
        let gcumSlice = gcum?.whole ?? q.slice
        try stream.dispatch(contributions.kernel, bindings: [q.slice, dOutput.slice, gcumSlice, dstates.whole, table], push: push(flags: 0),
                            groups: contributions.groups)
        try stream.barrier()
        return BackwardWork(states: states, dstates: dstates, gcum: gcum, gcumSlice: gcumSlice)
    }

    /// The backward's second half: the state-gradient pass from `dFinalState`, then dq, dk,
    /// dv and the gate gradient.
    package func encodeBackwardGradients(_ stream: Stream, _ work: BackwardWork, dOutput: Tensor, dFinalState: Tensor?, dq: Tensor, dk: Tensor,
                                 dv: Tensor, dLogGates: Tensor?, dInitialState: Tensor?) throws {
        let (states, dstates, gcumSlice) = (work.states, work.dstates, work.gcumSlice)
        let gated = gates != nil
        let rloc = try device.makeBuffer(byteCount: gated ? B * L * H * Dk * 4 : 16)
        let totals = try device.makeBuffer(byteCount: gated ? B * H * NC * Dk * 4 : 16)
        let scan = try kernel(Shaders.scanGlaScan, bindings: 5, mode: 1)
        let coopGrads = coopmat.flatMap { cm in cm.gradsSubgroups.map { (cm, $0) } }
        let carry = try kernel(Shaders.scanGlaGate, bindings: 6, mode: 0)
        let gateGrad = try kernel(Shaders.scanGlaGate, bindings: 6, mode: 1)
        let scanFlags = (dFinalState != nil ? 2 : 0) | (dInitialState != nil ? 4 : 0)
        try stream.dispatch(scan, bindings: [dstates.whole, gcumSlice, dFinalState?.slice ?? q.slice, dInitialState?.slice ?? dstates.whole, table],
                            push: push(flags: scanFlags), groups: grid(invocations: B * H * Dk * Dv, workgroup: 64))
        try stream.barrier()
        if let (cm, subgroups) = coopGrads {
            try stream.dispatch(try cm.gradsKernel(device: device, subgroups: subgroups, gate: gateMode, chunk: C, dk: Dk, dv: Dv, output: dq.dtype),
                                bindings: [q.slice, k.slice, v.slice, gcumSlice, states.whole, dstates.whole, dOutput.slice,
                                           dq.slice, dk.slice, dv.slice, table],
                                push: push(flags: 0), groups: grid(groups: B * H * NC))
            if gated {
                try stream.barrier()
                let zsum = try kernel(dq.dtype == .f32 ? Shaders.scanGlaZsumF16o32 : Shaders.scanGlaZsumF16, bindings: 7)
                try stream.dispatch(zsum, bindings: [q.slice, k.slice, dq.slice, dk.slice, rloc.whole, totals.whole, table],
                                    push: push(flags: 0), groups: grid(invocations: B * H * NC * Dk, workgroup: 64))
            }
        } else {
            let grads = try kernel(variant(Shaders.scanGlaGradsF32, f16: Shaders.scanGlaGradsF16, f16o32: Shaders.scanGlaGradsF16o32,
                                           bf16: Shaders.scanGlaGradsBf16, bf16o32: Shaders.scanGlaGradsBf16o32, output: dq.dtype),
                                   bindings: 13, workgroup: gradsWorkgroup)
            try stream.dispatch(grads, bindings: [q.slice, k.slice, v.slice, gcumSlice, states.whole, dstates.whole, dOutput.slice,
                                                  dq.slice, dk.slice, dv.slice, rloc.whole, totals.whole, table],
                                push: push(flags: 0), groups: grid(groups: B * H * NC))
        }
        if let dLogGates {
            try stream.barrier()
            try stream.dispatch(carry, bindings: [rloc.whole, totals.whole, states.whole, dFinalState?.slice ?? q.slice, dLogGates.slice, table],
                                push: push(flags: dFinalState != nil ? 2 : 0), groups: grid(invocations: B * H * Dk, workgroup: 64))
            try stream.barrier()
            try stream.dispatch(gateGrad, bindings: [rloc.whole, totals.whole, states.whole, dFinalState?.slice ?? q.slice, dLogGates.slice, table],
                                push: push(flags: 0), groups: grid(invocations: B * L * H * (op.gating == .perKey ? Dk : 1), workgroup: 64))
        }
    }

    package func expectNoOverlap(_ outputs: [(String, Tensor)]) throws {
        let inputs = [("q", q), ("k", k), ("v", v)] + (gates.map { [("logGates", $0)] } ?? []) + (initial.map { [("initialState", $0)] } ?? [])
        for (oName, o) in outputs {
            for (iName, i) in inputs where o.buffer === i.buffer
                && o.slice.offset < i.slice.offset + i.byteCount && i.slice.offset < o.slice.offset + o.byteCount {
                throw VkAttnError.invalidValue(op: Self.opName, operand: oName, reason: "overlaps \(iName)")
            }
        }
    }
}

/// Shaders/scan/gla_*.comp (and Shaders/parallel/linear_carry.comp): the chunked GLA sizes.
package struct GLAPush: PushConstantBlock {
    package var B: UInt32, L: UInt32, H: UInt32, Dk: UInt32, Dv: UInt32
    /// Chunk length and chunks.
    package var C: UInt32, NC: UInt32
    package var flags: UInt32
    /// Packed sequences (0: a dense call).
    package var NSEQ: UInt32

    package init(B: UInt32, L: UInt32, H: UInt32, Dk: UInt32, Dv: UInt32, C: UInt32, NC: UInt32, flags: UInt32, NSEQ: UInt32 = 0) {
        (self.B, self.L, self.H, self.Dk, self.Dv, self.C, self.NC, self.flags, self.NSEQ) = (B, L, H, Dk, Dv, C, NC, flags, NSEQ)
    }
}

/// The chunk table of a packed GLA call (Shaders/common/scan_gla.glsl): chunks cut at every
/// sequence boundary, each sequence owning its chunks + 1 boundary-state slots.
package struct GLAPacking: Sendable {
    /// N_seq.
    package let sequences: Int
    /// Chunks over all sequences.
    package let chunks: Int
    /// Per sequence: first chunk and chunk count.
    package let sequenceChunks: [(first: Int, count: Int)]
    /// The table's words: chunks (first row, rows, sequence, slot), sequences (first chunk,
    /// chunks), then every row's chunk.
    package let table: [UInt32]

    package init(cuSeqlens cu: [Int32], chunkLength c: Int) {
        let n = cu.count - 1
        var chunkWords: [UInt32] = []
        var seqs: [(first: Int, count: Int)] = []
        var rowChunk: [UInt32] = []
        var chunk = 0
        for s in 0..<max(n, 0) {
            let (start, end) = (Int(cu[s]), Int(cu[s + 1]))
            let first = chunk
            var t = start
            while t < end {
                let rows = min(c, end - t)
                chunkWords += [UInt32(t), UInt32(rows), UInt32(s), UInt32(chunk + s)]
                rowChunk += Array(repeating: UInt32(chunk), count: rows)
                t += rows
                chunk += 1
            }
            seqs.append((first, chunk - first))
        }
        sequences = max(n, 0)
        chunks = chunk
        sequenceChunks = seqs
        table = chunkWords + seqs.flatMap { [UInt32($0.first), UInt32($0.count)] } + rowChunk
    }

    /// The boundary-state slot of sequence `s`'s final state.
    package func finalSlot(_ s: Int) -> Int { sequenceChunks[s].first + s + sequenceChunks[s].count }
}
