import VulkanCompute
import VkAttnShaders

/// A validated recurrence call (forward or backward): shapes, chunking and kernels, built
/// before anything is recorded.
package struct RecurrencePlan {
    package let op: LinearRecurrence
    package let device: Device
    package let dims: LinearRecurrence.Dimensions
    package let a: Tensor
    package let x: Tensor            // b (forward) or dh (backward)
    package let out: Tensor          // h (forward) or db (backward)
    package let hf: Tensor?          // backward: the forward's h
    package let da: Tensor?          // backward
    package let initial: Tensor?     // h0 (forward) or dFinal (backward)
    package let forwardH0: Tensor?   // backward: the forward's h0 (for da at the forward's first step)
    package let state: Tensor?       // final state (forward) or dh0 (backward)
    package let isBackward: Bool
    package let path: RecurrenceAlgorithm
    package let vec: Bool
    package let wide: Bool
    package let chunkLength: Int
    package let chunks: Int

    package static let opName = LinearRecurrence.opName

    package init(op: LinearRecurrence, device: Device, a: Tensor, inputs: [(String, Tensor)], h0: Tensor?,
         outputs: [(String, Tensor)], state: (String, Tensor)?, backward forwardH0: Tensor??) throws {
        let name = Self.opName
        self.op = op
        self.device = device
        let cw = op.complex ? 2 : 1
        let rank = op.complex ? 4 : 3
        guard a.shape.count == rank, !op.complex || a.shape[3] == 2 else {
            throw VkAttnError.shapeMismatch(op: name, operand: "a", expected: op.complex ? "[B, L, D, 2] or [B, D, L, 2]" : "[B, L, D] or [B, D, L]",
                                            actual: "\(a.shape)")
        }
        let (batch, length, channels) = op.layout == .bld ? (a.shape[0], a.shape[1], a.shape[2]) : (a.shape[0], a.shape[2], a.shape[1])
        // Any of B, L, D may be zero: `encode` then records no kernel (see `encodeEmpty`).
        dims = .init(batch: batch, length: length, channels: channels)
        try a.expect(op: name, "a", shape: a.shape, dtype: .f32, device: device)
        let stateShape = [batch, channels] + (op.complex ? [2] : [])
        for (operand, t) in inputs + outputs {
            try t.expect(op: name, operand, shape: a.shape, dtype: .f32, device: device)
        }
        if let h0 { try h0.expect(op: name, forwardH0 == nil ? "h0" : "dFinal", shape: stateShape, dtype: .f32, device: device) }
        if let (operand, s) = state { try s.expect(op: name, operand, shape: stateShape, dtype: .f32, device: device) }
        if let fh = forwardH0, let fh { try fh.expect(op: name, "h0", shape: stateShape, dtype: .f32, device: device) }

        self.a = a
        self.x = inputs[0].1
        self.hf = inputs.count > 1 ? inputs[1].1 : nil
        self.out = outputs[0].1
        self.da = outputs.count > 1 ? outputs[1].1 : nil
        self.initial = h0
        self.forwardH0 = forwardH0 ?? nil
        self.state = state?.1
        self.isBackward = forwardH0 != nil

        let all = [a, x, out] + [hf, da, initial, self.forwardH0, self.state].compactMap { $0 }
        for t in all {
            try t.expectBindable(op: name, "a tensor of \(a.shape)")
            guard t.slice.offset % max(4, device.capabilities.minStorageBufferOffsetAlignment) == 0 else {
                throw VkAttnError.invalidValue(op: name, operand: "tensor offset", reason: "\(t.slice.offset) is not a multiple of \(device.capabilities.minStorageBufferOffsetAlignment)")
            }
        }
        // Outputs must not overlap any input (the replay reads a and b after others wrote).
        for (oName, o) in outputs {
            for (iName, i) in [("a", a)] + inputs where o.buffer === i.buffer
                && o.slice.offset < i.slice.offset + i.byteCount && i.slice.offset < o.slice.offset + o.byteCount {
                throw VkAttnError.invalidValue(op: name, operand: oName, reason: "overlaps \(iName)")
            }
        }

                let rowAligned = op.layout == .bld ? (channels * cw) % 4 == 0 : (length * cw) % 4 == 0
        vec = rowAligned && all.allSatisfy { $0.slice.offset % 16 == 0 }
        if op.wideLoads == true && !device.enabled.shaderInt64 {
            throw VkAttnError.unsupported(op: name, reason: "wideLoads needs shaderInt64, which \(device.label) lacks")
        }
        wide = vec && (op.wideLoads ?? (device.enabled.shaderInt64 && device.capabilities.type == .cpu))

        // Chunks: enough (channel group, chunk) invocations to fill the device, 64 to 1024
        // steps (the maps cost 2 values per chunk; lavapipe caps an invocation's loop
        // iterations), and always a few chunks per channel (at most L / 4 steps each), so that
        // time is cut even where channels alone would fill the device.
        let groups = op.layout == .bld ? batch * channels * cw / (vec ? 4 : cw) : batch * channels
        if let forced = op.chunkLength {
            guard forced >= 4, forced % 4 == 0, forced <= 1 << 14 else {
                throw VkAttnError.invalidValue(op: name, operand: "chunkLength", reason: "\(forced) must be a multiple of 4 in 4...16384")
            }
            chunkLength = forced
        } else {
            let target = device.capabilities.type == .cpu ? 4096 : (device.capabilities.computeUnits ?? 64) * 2048
            var ct = 64
            while ct < 1024 && groups * ((length + ct - 1) / ct) > target { ct *= 2 }
            chunkLength = min(ct, max(4, ((length + 3) / 4 + 3) / 4 * 4))
        }
        chunks = (length + chunkLength - 1) / chunkLength
        // The carries pass walks every chunk of a channel in one invocation (lavapipe's cap).
        guard device.capabilities.type != .cpu || chunks < 60_000 else {
            throw VkAttnError.unsupported(op: name, reason: "\(chunks) chunks per channel exceed the loop cap of \(device.label); use a longer chunkLength")
        }
        path = try Self.choosePath(op: op, device: device, length: length, chunkLength: chunkLength, chunks: chunks)
        let workspaceBytes = 3 * chunks * batch * channels * cw * 4
        guard workspaceBytes <= device.capabilities.maxStorageBufferRange else {
            throw VkAttnError.tooLarge(op: name, operand: "chunk maps (raise chunkLength)", bytes: workspaceBytes,
                                       limit: device.capabilities.maxStorageBufferRange)
        }
        guard length < 1 << 30, a.elementCount < 1 << 31 else {
            throw VkAttnError.tooLarge(op: name, operand: "a", bytes: a.byteCount, limit: 1 << 33)
        }
    }

    package var label: String {
        "\(path.rawValue)/\(op.layout.rawValue)\(op.complex ? "/complex" : "")/\(vec ? (wide ? "u64x2" : "u32x4") : "scalar")/chunk\(chunkLength)"
    }

    package func chunkShader() -> ShaderSource {
        let variants: [ShaderSource]
        switch (op.layout, op.complex) {
        case (.bld, false): variants = [Shaders.recurrenceBldReal, Shaders.recurrenceBldRealQf, Shaders.recurrenceBldRealW64, Shaders.recurrenceBldRealW64Qf]
        case (.bld, true): variants = [Shaders.recurrenceBldComplex, Shaders.recurrenceBldComplexQf, Shaders.recurrenceBldComplexW64, Shaders.recurrenceBldComplexW64Qf]
        case (.bdl, false): variants = [Shaders.recurrenceBdlReal, Shaders.recurrenceBdlRealQf, Shaders.recurrenceBdlRealW64, Shaders.recurrenceBdlRealW64Qf]
        case (.bdl, true): variants = [Shaders.recurrenceBdlComplex, Shaders.recurrenceBdlComplexQf, Shaders.recurrenceBdlComplexW64, Shaders.recurrenceBdlComplexW64Qf]
        }
        // With the Vulkan memory model on, the chained path's atomics use QueueFamily scope.
        return variants[(wide ? 2 : 0) + (device.enabled.vulkanMemoryModel ? 1 : 0)]
    }

    /// Polls of an unpublished predecessor chunk before the chained path reduces it.
    package static let chainPolls = 16

    /// The path: forced, or the device's preference, falling back to chunked where the chained
    /// path could exceed lavapipe's loop cap: an invocation that reduces every predecessor runs
    /// at most L + chunk + chunks * (polls + 2) loop iterations, and the cap is 65535.
    package static func choosePath(op: LinearRecurrence, device: Device, length: Int, chunkLength: Int, chunks: Int) throws -> RecurrenceAlgorithm {
        let preferred = op.algorithm ?? RecurrenceAlgorithm.preferred(for: device)
        guard preferred == .chained, device.capabilities.type == .cpu else { return preferred }
        let worst = length + chunkLength + chunks * (chainPolls + 2 + op.forcedFallbacks) + 64
        if worst < 60_000 { return .chained }
        if op.algorithm == .chained {
            throw VkAttnError.unsupported(op: opName, reason: "the chained path on \(device.label) (a CPU device that caps each invocation at 65535 loop iterations) would need up to \(worst) iterations at L = \(length); use .chunked or longer chunks")
        }
        return .chunked
    }

    /// Processing runs backward in memory for a reversed forward, and for the backward pass
    /// of a forward one.
    package var runsReversed: Bool { op.reverse != isBackward }

    package func chunkKernel(pass: Int) throws -> Kernel {
        try device.kernel(KernelDescriptor(
            shader: chunkShader(), bindings: 16,
            specialization: ["local_size_x": .int(64), "PASS": .int(pass), "REVERSE": .bool(runsReversed), "BACKWARD": .bool(isBackward),
                             "VEC": .bool(vec), "SPIN": .int(Self.chainPolls), "FORCE_FALLBACK": .int(op.forcedFallbacks)]))
    }

    package func grid(invocations: Int, workgroup: Int) -> (x: Int, y: Int, z: Int) {
        let groups = max(1, (invocations + workgroup - 1) / workgroup)
        let maxX = device.capabilities.maxWorkgroupCount[0]
        let x = min(groups, maxX)
        return (x, (groups + x - 1) / x, 1)
    }

    package func encode(on stream: Stream) throws -> RecurrenceDispatch {
        if a.isEmpty { return try encodeEmpty(on: stream) }
        let cw = op.complex ? 2 : 1
        let channels = dims.batch * dims.channels
        let chained = path == .chained
        // Chained: two status words per float of each chunk's end state; chunked: the maps
        // (A and B planes) and the start states.
        let mapsBuffer = try device.makeBuffer(byteCount: (chained ? 1 : 2) * chunks * channels * cw * 4)
        let startsBuffer = try device.makeBuffer(byteCount: (chained ? 2 : 1) * chunks * channels * cw * 4)
        let passes = chained ? [try chunkKernel(pass: 4)] : [try chunkKernel(pass: 1), try chunkKernel(pass: 3)]
        let carries = try device.kernel(KernelDescriptor(
            shader: op.complex ? Shaders.recurrenceCarriesComplex : Shaders.recurrenceCarriesReal,
            bindings: 5, specialization: ["local_size_x": .int(64), "BACKWARD": .bool(isBackward)]))

        let dummy = a.slice
        let bindings = [a.slice, a.slice, x.slice, x.slice, out.slice, out.slice, mapsBuffer.whole, startsBuffer.whole,
                        hf?.slice ?? dummy, hf?.slice ?? dummy, da?.slice ?? out.slice, da?.slice ?? out.slice,
                        forwardH0?.slice ?? dummy, startsBuffer.whole, initial?.slice ?? dummy,
                        state?.slice ?? mapsBuffer.whole]
        let (L, nc, ct) = (try UInt32(pushing: dims.length, "L"), try UInt32(pushing: chunks, "chunks"), try UInt32(pushing: chunkLength, "chunk length"))
        let (hasH0, hasInit, hasFinal): (UInt32, UInt32, UInt32) = (forwardH0 != nil ? 1 : 0, initial != nil ? 1 : 0, state != nil ? 1 : 0)
        let tFirst = UInt32(op.reverse ? dims.length - 1 : 0)  // the forward's first step
        let groups = op.layout == .bld ? dims.batch * dims.channels * cw / (vec ? 4 : cw) * chunks : channels * chunks
        func dispatchPass(_ kernel: Kernel) throws {
            let grid = grid(invocations: groups, workgroup: 64)
            if op.layout == .bld {
                let push = RecurrenceBLDPush(L: L, D: try UInt32(pushing: dims.channels, "D"), B: try UInt32(pushing: dims.batch, "B"), nc: nc, ct: ct,
                                             hasH0: hasH0, hasInit: hasInit, hasFinal: hasFinal, tFirst: tFirst)
                try stream.dispatch(kernel, bindings: bindings, push: push, groups: grid)
            } else {
                let push = RecurrenceBDLPush(L: L, C: try UInt32(pushing: channels, "channels"), nc: nc, ct: ct,
                                             hasH0: hasH0, hasInit: hasInit, hasFinal: hasFinal, tFirst: tFirst)
                try stream.dispatch(kernel, bindings: bindings, push: push, groups: grid)
            }
        }
        let carryPush = RecurrenceCarriesPush(C: try UInt32(pushing: channels, "channels"), nc: nc, hasInit: hasInit, hasFinal: hasFinal,
                                              L: L, D: try UInt32(pushing: dims.channels, "D"), layoutBDL: op.layout == .bdl ? 1 : 0, tFirst: tFirst)

        if chained {
            try stream.fill(startsBuffer.whole, word: 0)
            try stream.barrier()
            try dispatchPass(passes[0])
            return RecurrenceDispatch(algorithm: .chained, chunkLength: chunkLength, chunks: chunks, path: label)
        }
        try dispatchPass(passes[0])
        try stream.barrier()
        try stream.dispatch(carries, bindings: [mapsBuffer.whole, startsBuffer.whole, initial?.slice ?? dummy,
                                                state?.slice ?? startsBuffer.whole, a.slice],
                            push: carryPush, groups: grid(invocations: channels, workgroup: 64))
        try stream.barrier()
        try dispatchPass(passes[1])
        return RecurrenceDispatch(algorithm: .chunked, chunkLength: chunkLength, chunks: chunks, path: label)
    }
}

/// Shaders/recurrence/bld.comp: [B, L, D] tensors.
struct RecurrenceBLDPush: PushConstantBlock {
    var L: UInt32, D: UInt32, B: UInt32
    /// Chunks and chunk length.
    var nc: UInt32, ct: UInt32
    var hasH0: UInt32, hasInit: UInt32, hasFinal: UInt32
    var tFirst: UInt32
}

/// Shaders/recurrence/bdl.comp: [B, D, L] tensors, C = B * D rows.
struct RecurrenceBDLPush: PushConstantBlock {
    var L: UInt32, C: UInt32
    var nc: UInt32, ct: UInt32
    var hasH0: UInt32, hasInit: UInt32, hasFinal: UInt32
    var tFirst: UInt32
}

/// Shaders/recurrence/carries.comp.
struct RecurrenceCarriesPush: PushConstantBlock {
    var C: UInt32, nc: UInt32
    var hasInit: UInt32, hasFinal: UInt32
    var L: UInt32, D: UInt32
    var layoutBDL: UInt32
    var tFirst: UInt32
}

extension RecurrencePlan {
    /// No elements (B, L or D is zero): no kernel. With L = 0 and states to write, the final
    /// state (forward) or dh0 (backward) is the initial one, h0 or dFinal, copied
    /// (vkCmdCopyBuffer), or zero without one (vkCmdFillBuffer); the outputs are empty.
    func encodeEmpty(on stream: Stream) throws -> RecurrenceDispatch {
        if let state {
            if let initial {
                try state.recordCopy(from: initial, on: stream)
            } else {
                try state.recordFill(bits: 0, on: stream)
            }
        }
        return RecurrenceDispatch(algorithm: path, chunkLength: chunkLength, chunks: 0, path: emptyInputPath)
    }
}
