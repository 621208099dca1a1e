import VulkanCompute
import VkAttnShaders

/// Packed variable-length batches of the linear recurrence (`cuSeqlens`): the dense chunked
/// kernels run on copies of the decays (and of b, or of dh) in which each sequence's entry
/// step has a decay of 0 and carries its initial state (or its exit step the final-state
/// gradient), so no state crosses a sequence boundary; small kernels (Shaders/recurrence/
/// varlen.comp) prepare the copies and gather the per-sequence final states (or fix up da at
/// the entry steps and write dh0). Costs one copy of two inputs over the dense call.
struct RecurrenceVarlen {
    let op: LinearRecurrence
    let device: Device
    let cu: [Int32]
    let steps: Int, channels: Int
    var sequences: Int { cu.count - 1 }
    var stateShape: [Int] { [sequences, channels] + (op.complex ? [2] : []) }

    static let opName = LinearRecurrence.opName

    /// Validates the packed shapes: batch 1, `cu` against the steps, states [N_seq, D(, 2)].
    init(op: LinearRecurrence, device: Device, a: Tensor, cuSeqlens: [Int32], states: [(String, Tensor?)]) throws {
        let name = Self.opName
        self.op = op
        self.device = device
        cu = cuSeqlens
        let rank = op.complex ? 4 : 3
        guard a.shape.count == rank, !op.complex || a.shape[3] == 2 else {
            throw VkAttnError.shapeMismatch(op: name, operand: "a", expected: op.complex ? "[1, T, D, 2] or [1, D, T, 2]" : "[1, T, D] or [1, D, T]",
                                            actual: "\(a.shape)")
        }
        guard a.shape[0] == 1 else {
            throw VkAttnError.shapeMismatch(op: name, operand: "a", expected: op.layout == .bld ? "[1, T, D] with cuSeqlens (packed sequences)"
                                            : "[1, D, T] with cuSeqlens (packed sequences)", actual: "\(a.shape)")
        }
        (steps, channels) = op.layout == .bld ? (a.shape[1], a.shape[2]) : (a.shape[2], a.shape[1])
        try AttentionGeometry.checkCumulative(op: name, "cuSeqlens", cuSeqlens, total: steps)
        let shape = [cuSeqlens.count - 1, channels] + (op.complex ? [2] : [])
        for (operand, s) in states {
            if let s { try s.expect(op: name, operand, shape: shape, dtype: .f32, device: device) }
        }
    }

    var isEmpty: Bool { steps == 0 || channels == 0 }

    static func overlaps(_ x: Tensor, _ y: Tensor) -> Bool {
        x.buffer === y.buffer && x.slice.offset < y.slice.offset + y.byteCount && y.slice.offset < x.slice.offset + x.byteCount
    }

    func expectNoOverlap(outputs: [(String, Tensor?)], inputs: [(String, Tensor?)]) throws {
        for (oName, o) in outputs {
            guard let o else { continue }
            for (iName, i) in inputs {
                if let i, Self.overlaps(o, i) {
                    throw VkAttnError.invalidValue(op: Self.opName, operand: oName, reason: "overlaps \(iName)")
                }
            }
        }
    }

    func kernel(mode: Int) throws -> Kernel {
        try device.kernel(KernelDescriptor(shader: op.complex ? Shaders.recurrenceVarlenComplex : Shaders.recurrenceVarlenReal, bindings: 7,
                                           specialization: ["local_size_x": .int(64), "MODE": .int(mode)]))
    }

    func push(s0: Bool, s1: Bool, out: Bool) throws -> RecurrenceVarlenPush {
        RecurrenceVarlenPush(T: try UInt32(pushing: steps, "\(Self.opName) T"), D: try UInt32(pushing: channels, "\(Self.opName) D"),
                             NSEQ: try UInt32(pushing: sequences, "\(Self.opName) sequences"), layoutBDL: op.layout == .bdl ? 1 : 0,
                             reverse: op.reverse ? 1 : 0, hasS0: s0 ? 1 : 0, hasS1: s1 ? 1 : 0, hasOut: out ? 1 : 0)
    }

    func groups(_ plan: RecurrencePlan) -> (x: Int, y: Int, z: Int) { plan.grid(invocations: sequences * channels, workgroup: 64) }

    /// The packed forward: h, and the per-sequence final states.
    func forward(a: Tensor, b: Tensor, h0: Tensor?, h: Tensor, finalState: Tensor?, on stream: Stream) throws -> RecurrenceDispatch {
        let name = Self.opName
        try b.expect(op: name, "b", shape: a.shape, dtype: .f32, device: device)
        try h.expect(op: name, "h", shape: a.shape, dtype: .f32, device: device)
        try expectNoOverlap(outputs: [("h", h), ("finalState", finalState)], inputs: [("a", a), ("b", b), ("h0", h0)])
        if let finalState { try expectNoOverlap(outputs: [("finalState", finalState)], inputs: [("h", h)]) }
        if isEmpty {
            // No kernel: empty sequences keep their initial states.
            let plan = try RecurrencePlan(op: op, device: device, a: a, inputs: [("b", b)], h0: nil, outputs: [("h", h)], state: nil, backward: nil)
            if let finalState, !finalState.isEmpty {
                if let h0 { try finalState.recordCopy(from: h0, on: stream) } else { try finalState.recordFill(bits: 0, on: stream) }
            }
            return RecurrenceDispatch(algorithm: plan.path, chunkLength: plan.chunkLength, chunks: 0, path: emptyInputPath)
        }
        let aW = try device.makeTensor(shape: a.shape, dtype: .f32), bW = try device.makeTensor(shape: a.shape, dtype: .f32)
        let plan = try RecurrencePlan(op: op, device: device, a: aW, inputs: [("b", bW)], h0: nil, outputs: [("h", h)], state: nil, backward: nil)
        let cuBuffer = try device.makeBuffer(cu)
        try stream.copy(from: a.slice, to: aW.slice)
        try stream.copy(from: b.slice, to: bW.slice)
        try stream.barrier()
        try stream.dispatch(try kernel(mode: 0), bindings: [cuBuffer.whole, a.slice, aW.slice, bW.slice, h0?.slice ?? a.slice, aW.slice, a.slice],
                            push: try push(s0: h0 != nil, s1: false, out: false), groups: groups(plan))
        try stream.barrier()
        let dispatch = try plan.encode(on: stream)
        if let finalState {
            try stream.barrier()
            try stream.dispatch(try kernel(mode: 1), bindings: [cuBuffer.whole, a.slice, h.slice, aW.slice, h0?.slice ?? a.slice, finalState.slice, a.slice],
                                push: try push(s0: h0 != nil, s1: false, out: true), groups: groups(plan))
        }
        return RecurrenceDispatch(algorithm: dispatch.algorithm, chunkLength: dispatch.chunkLength, chunks: dispatch.chunks,
                                  path: dispatch.path + "/packed")
    }

    /// The packed backward: da, db, and the per-sequence dh0.
    func backward(a: Tensor, h: Tensor, h0: Tensor?, dh: Tensor, dFinal: Tensor?, da: Tensor, db: Tensor, dh0: Tensor?,
                  on stream: Stream) throws -> RecurrenceDispatch {
        let name = Self.opName
        for (operand, t) in [("h", h), ("dh", dh), ("da", da), ("db", db)] {
            try t.expect(op: name, operand, shape: a.shape, dtype: .f32, device: device)
        }
        try expectNoOverlap(outputs: [("da", da), ("db", db), ("dh0", dh0)],
                            inputs: [("a", a), ("h", h), ("h0", h0), ("dh", dh), ("dFinal", dFinal)])
        try expectNoOverlap(outputs: [("dh0", dh0)], inputs: [("da", da), ("db", db)])
        if Self.overlaps(da, db) { throw VkAttnError.invalidValue(op: name, operand: "da", reason: "overlaps db") }
        if isEmpty {
            let plan = try RecurrencePlan(op: op, device: device, a: a, inputs: [("dh", dh), ("h", h)], h0: nil,
                                          outputs: [("db", db), ("da", da)], state: nil, backward: .some(nil))
            if let dh0, !dh0.isEmpty {
                if let dFinal { try dh0.recordCopy(from: dFinal, on: stream) } else { try dh0.recordFill(bits: 0, on: stream) }
            }
            return RecurrenceDispatch(algorithm: plan.path, chunkLength: plan.chunkLength, chunks: 0, path: emptyInputPath)
        }
        let aW = try device.makeTensor(shape: a.shape, dtype: .f32), dhW = try device.makeTensor(shape: a.shape, dtype: .f32)
        let plan = try RecurrencePlan(op: op, device: device, a: aW, inputs: [("dh", dhW), ("h", h)], h0: nil,
                                      outputs: [("db", db), ("da", da)], state: nil, backward: .some(nil))
        let cuBuffer = try device.makeBuffer(cu)
        try stream.copy(from: a.slice, to: aW.slice)
        try stream.copy(from: dh.slice, to: dhW.slice)
        try stream.barrier()
        try stream.dispatch(try kernel(mode: 2), bindings: [cuBuffer.whole, a.slice, aW.slice, dhW.slice, dFinal?.slice ?? a.slice, aW.slice, a.slice],
                            push: try push(s0: dFinal != nil, s1: false, out: false), groups: groups(plan))
        try stream.barrier()
        let dispatch = try plan.encode(on: stream)
        try stream.barrier()
        try stream.dispatch(try kernel(mode: 3), bindings: [cuBuffer.whole, a.slice, db.slice, da.slice, h0?.slice ?? a.slice,
                                                            dh0?.slice ?? aW.slice, dFinal?.slice ?? a.slice],
                            push: try push(s0: h0 != nil, s1: dFinal != nil, out: dh0 != nil), groups: groups(plan))
        return RecurrenceDispatch(algorithm: dispatch.algorithm, chunkLength: dispatch.chunkLength, chunks: dispatch.chunks,
                                  path: dispatch.path + "/packed")
    }
}

/// Shaders/recurrence/varlen.comp.
struct RecurrenceVarlenPush: PushConstantBlock {
    var T: UInt32, D: UInt32, NSEQ: UInt32
    var layoutBDL: UInt32, reverse: UInt32
    var hasS0: UInt32, hasS1: UInt32, hasOut: UInt32
}
