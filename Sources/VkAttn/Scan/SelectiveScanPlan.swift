import VulkanCompute
import VkAttnShaders

/// A validated selective-scan call: shapes, sequence boundaries, the chunk table and the
/// kernels' geometry, built before anything is recorded.
package struct SelectiveScanPlan {
    package let op: SelectiveScan
    package let device: Device
    package let x: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor
    package let D: Tensor?, z: Tensor?, bias: Tensor?, initial: Tensor?
    /// Rows (B * L, or T packed), channels, state size, sequences.
    package let T: Int, Dch: Int, N: Int, sequences: Int
    package let packed: Bool
    /// x, delta, z, B, C and dOutput: f32, f16 or bf16.
    package let inputType: DType
    /// Lanes over n (a power of two >= N), the workgroup size and channels per workgroup.
    package let lanes: Int, workgroup: Int, channelsPerGroup: Int
    package let chunkLength: Int
    /// Per chunk (start row, rows, sequence, 0), then each sequence's first chunk (S + 1).
    package let table: [UInt32]
    package let chunks: Int
    package let isBackward: Bool

    package static let opName = SelectiveScan.opName
    /// Channels per backward workgroup (Shaders/mamba/selective_bwd.comp's BLOCK).
    package static let block = 64
    /// Slices one reduce.comp invocation sums at most (lavapipe's loop cap).
    package static let reduceGroup = 4096

    package var stateShape: [Int] { [sequences, Dch, N] }

    package init(op: SelectiveScan, device: Device, x: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor?,
                 z: Tensor?, deltaBias: Tensor?, initialState: Tensor?, cuSeqlens: [Int32]?, backward: Bool) throws {
        let name = Self.opName
        (self.op, self.device, self.x, self.delta, self.A, self.B, self.C) = (op, device, x, delta, A, B, C)
        (self.D, self.z, self.bias, self.initial, self.isBackward) = (D, z, deltaBias, initialState, backward)
        guard x.shape.count == 3 else {
            throw VkAttnError.shapeMismatch(op: name, operand: "x", expected: "[B, L, Dch]", actual: "\(x.shape)")
        }
        let (batch, length) = (x.shape[0], x.shape[1])
        Dch = x.shape[2]
        inputType = x.dtype
        guard inputType == .f32 || inputType.isHalfWidth else {
            throw VkAttnError.dtypeMismatch(op: name, operand: "x", expected: "f32, f16 or bf16", actual: inputType.rawValue)
        }
        if inputType.isHalfWidth && !device.enabled.storageBuffer16BitAccess {
            throw VkAttnError.unsupported(op: name, reason: "\(inputType) inputs need storageBuffer16BitAccess, which \(device.label) lacks")
        }
        try x.expect(op: name, "x", shape: x.shape, dtype: inputType, device: device)
        try delta.expect(op: name, "delta", shape: x.shape, dtype: inputType, device: device)
        guard A.shape.count == 2, A.shape[0] == Dch else {
            throw VkAttnError.shapeMismatch(op: name, operand: "A", expected: "[\(Dch), N]", actual: "\(A.shape)")
        }
        N = A.shape[1]
        try A.expect(op: name, "A", shape: A.shape, dtype: .f32, device: device)
        guard N <= 256 else {
            throw VkAttnError.unsupported(op: name, reason: "state sizes N up to 256 (A is \(A.shape))")
        }
        try B.expect(op: name, "B", shape: [batch, length, N], dtype: inputType, device: device)
        try C.expect(op: name, "C", shape: [batch, length, N], dtype: inputType, device: device)
        if let D { try D.expect(op: name, "D", shape: [Dch], dtype: .f32, device: device) }
        if let z { try z.expect(op: name, "z", shape: x.shape, dtype: inputType, device: device) }
        if let deltaBias { try deltaBias.expect(op: name, "deltaBias", shape: [Dch], dtype: .f32, device: device) }
        var cu: [Int32]
        if let cuSeqlens {
            guard batch == 1 else {
                throw VkAttnError.shapeMismatch(op: name, operand: "x", expected: "[1, T, Dch] with cuSeqlens (one packed batch)", actual: "\(x.shape)")
            }
            try AttentionGeometry.checkCumulative(op: name, "cuSeqlens", cuSeqlens, total: length)
            cu = cuSeqlens
            packed = true
        } else {
            guard batch * length < Int(Int32.max) else {
                throw VkAttnError.tooLarge(op: name, operand: "x", bytes: x.byteCount, limit: Int(Int32.max) * 4)
            }
            cu = (0...batch).map { Int32($0 * length) }
            packed = false
        }
        T = batch * length
        sequences = cu.count - 1
        if let initialState { try initialState.expect(op: name, "initialState", shape: [sequences, Dch, N], dtype: .f32, device: device) }
        let inputs = [("x", x), ("delta", delta), ("A", A), ("B", B), ("C", C)] + [("D", D), ("z", z), ("deltaBias", deltaBias), ("initialState", initialState)].compactMap { n, t in t.map { (n, $0) } }
        try Self.checkBindable(inputs, device: device)

        var lanes = 1
        while lanes < N { lanes *= 2 }
        self.lanes = lanes
        workgroup = max(64, lanes)
        channelsPerGroup = workgroup / lanes
        // One lane per state index in a workgroup; 16 KiB of shared memory (forward: a C h
        // product per row and lane; backward: four such arrays of 1024 / W rows).
        guard workgroup <= device.capabilities.maxWorkgroupInvocations, workgroup <= device.capabilities.maxWorkgroupSize[0],
              16 * 1024 + 256 <= device.capabilities.maxComputeSharedMemoryBytes else {
            throw VkAttnError.unsupported(op: name, reason: "N = \(N) needs workgroups of \(workgroup) invocations and 16 KiB of shared memory, more than \(device.label) offers")
        }
        let most = backward ? 1024 / workgroup : min(64, 4096 / workgroup)
        if let forced = op.chunkLength, forced < 1 {
            throw VkAttnError.invalidValue(op: name, operand: "chunkLength", reason: "\(forced) must be at least 1")
        }
        chunkLength = min(op.chunkLength ?? most, most)
        var table: [UInt32] = []
        var firsts: [UInt32] = [0]
        var longest = 0
        for s in 0..<sequences {
            let (lo, hi) = (Int(cu[s]), Int(cu[s + 1]))
            var row = lo
            while row < hi {
                let rows = min(chunkLength, hi - row)
                table += [UInt32(row), UInt32(rows), UInt32(s), 0]
                row += rows
            }
            firsts.append(UInt32(table.count / 4))
            longest = max(longest, (hi - lo + chunkLength - 1) / chunkLength)
        }
        chunks = table.count / 4
        self.table = table + firsts
        // Lavapipe caps an invocation at 65535 loop iterations: the carry pass walks every
        // chunk of a sequence in one invocation (the per-chunk kernels loop over at most
        // 64 rows times 64 rounds; the reductions over 4096 slices at most).
        if device.capabilities.type == .cpu && longest >= 60_000 {
            throw VkAttnError.unsupported(op: name, reason: "\(longest) chunks in one sequence exceed the loop cap of \(device.label) (a CPU device that caps each invocation at 65535 loop iterations)")
        }
        let limit = device.capabilities.maxStorageBufferRange
        let plane = chunks * Dch * N
        let planes = backward ? 3 : 2
        guard planes * plane * 4 <= limit else {
            throw VkAttnError.tooLarge(op: name, operand: "chunk maps (use shorter sequences or fewer channels)", bytes: planes * plane * 4, limit: limit)
        }
        let blocks = (Dch + Self.block - 1) / Self.block
        if backward {
            let partials = (plane + 2 * blocks * T * N) * 4
            guard partials <= limit else {
                throw VkAttnError.tooLarge(op: name, operand: "gradient partials", bytes: partials, limit: limit)
            }
        }
        guard T * max(Dch, N) < 1 << 31, 3 * plane < 1 << 31, 2 * blocks * T * N < 1 << 31 else {
            throw VkAttnError.tooLarge(op: name, operand: "x", bytes: x.byteCount, limit: 1 << 33)
        }
    }

    /// Tensors must be bindable whole at offsets the device aligns.
    static func checkBindable(_ tensors: [(String, Tensor)], device: Device) throws {
        let align = max(4, device.capabilities.minStorageBufferOffsetAlignment)
        for (operand, t) in tensors {
            try t.expectBindable(op: opName, operand)
            guard t.slice.offset % align == 0 else {
                throw VkAttnError.invalidValue(op: opName, operand: operand, reason: "offset \(t.slice.offset) is not a multiple of \(align)")
            }
        }
    }

    /// Outputs must not overlap an input or each other.
    func checkNoOverlap(_ outputs: [(String, Tensor)], inputs extra: [(String, Tensor)]) throws {
        let inputs = [("x", x), ("delta", delta), ("A", A), ("B", B), ("C", C)]
            + [("D", D), ("z", z), ("deltaBias", bias), ("initialState", initial)].compactMap { n, t in t.map { (n, $0) } } + extra
        for (index, (oName, o)) in outputs.enumerated() {
            for (iName, i) in inputs + outputs.prefix(index) where !o.isEmpty && !i.isEmpty && o.buffer === i.buffer
                && o.slice.offset < i.slice.offset + i.byteCount && i.slice.offset < o.slice.offset + o.byteCount {
                throw VkAttnError.invalidValue(op: Self.opName, operand: oName, reason: "overlaps \(iName)")
            }
        }
    }

    package var isEmpty: Bool { T == 0 || Dch == 0 }

    package var label: String {
        "chunked-3-pass/chunk\(chunkLength)/lanes\(lanes)x\(channelsPerGroup)/\(packed ? "packed" : "dense")/\(inputType)"
    }

    var flags: UInt32 {
        (D != nil ? 1 : 0) | (z != nil ? 2 : 0) | (bias != nil ? 4 : 0) | (op.deltaSoftplus ? 8 : 0)
    }

    func push(flags extra: UInt32, groups: Int, partB: Int = 0, partC: Int = 0) throws -> SelectiveScanPush {
        SelectiveScanPush(T: try UInt32(pushing: T, "T"), Dch: try UInt32(pushing: Dch, "Dch"), N: UInt32(N),
                          nChunks: try UInt32(pushing: chunks, "chunks"), nSeq: try UInt32(pushing: sequences, "sequences"),
                          flags: flags | extra, plane: try UInt32(pushing: chunks * Dch * N, "plane"),
                          nGroups: try UInt32(pushing: groups, "groups"), partB: try UInt32(pushing: partB, "partB"),
                          partC: try UInt32(pushing: partC, "partC"))
    }

    func grid(groups: Int) -> (x: Int, y: Int, z: Int) {
        let g = max(1, groups)
        let x = min(g, device.capabilities.maxWorkgroupCount[0])
        return (x, (g + x - 1) / x, 1)
    }

    func grid(invocations: Int, workgroup: Int) -> (x: Int, y: Int, z: Int) {
        grid(groups: (invocations + workgroup - 1) / workgroup)
    }

    /// A shader of the input type: f32, f16 or bf16 variants.
    func variant(_ f32: ShaderSource, _ f16: ShaderSource, _ bf16: ShaderSource) -> ShaderSource {
        inputType == .f16 ? f16 : inputType == .bf16 ? bf16 : f32
    }

    func chunkKernel(pass: Int, output: DType = .f32) throws -> Kernel {
        let narrow = output != .f32
        let shader = variant(Shaders.mambaSelectiveChunkF32, narrow ? Shaders.mambaSelectiveChunkF16 : Shaders.mambaSelectiveChunkF16o32,
                             narrow ? Shaders.mambaSelectiveChunkBf16 : Shaders.mambaSelectiveChunkBf16o32)
        return try device.kernel(KernelDescriptor(shader: shader, bindings: 13, specialization: [
            "local_size_x": .int(workgroup), "NL": .int(lanes), "CT": .int(chunkLength), "PASS": .int(pass), "WGS": .int(workgroup)]))
    }

    func carryKernel(backward: Bool) throws -> Kernel {
        try device.kernel(KernelDescriptor(shader: Shaders.mambaSelectiveCarry, bindings: 5, specialization: [
            "local_size_x": .int(64), "BACKWARD": .bool(backward)]))
    }

    /// The channel groups of the per-chunk passes.
    var forwardGroups: Int { (Dch + channelsPerGroup - 1) / channelsPerGroup }

    /// Buffers of at least 16 bytes (a binding never has range 0).
    func workspace(floats: Int) throws -> Buffer { try device.makeBuffer(byteCount: max(16, floats * 4)) }

    /// Records the forward's passes: maps, starts (and final states), then out (or y).
    func encodeForward(_ stream: Stream, table: Buffer, maps: Buffer, states: Buffer, steps: BufferSlice, output: BufferSlice,
                       outputType: DType = .f32, writeY: Bool,
                       finalState: Tensor?, dy: BufferSlice? = nil, runOutput: Bool = true) throws {
        let dummy = x.slice
        // Bindings a pass never writes still count as written for synchronization validation:
        // each dispatch's unused writable binding gets a scratch word of its own, never an input.
        let unused = { try self.workspace(floats: 4).whole }
        let chunkBindings = { (out: BufferSlice) in
            [self.x.slice, steps, self.A.slice, self.B.slice, self.C.slice, self.D?.slice ?? dummy, self.z?.slice ?? dummy,
             dummy, table.whole, maps.whole, states.whole, dy ?? dummy, out]
        }
        let groups = chunks * forwardGroups
        try stream.dispatch(try chunkKernel(pass: 1), bindings: chunkBindings(try unused()), push: try push(flags: 0, groups: forwardGroups),
                            groups: grid(groups: groups))
        if dy != nil {
            try stream.dispatch(try chunkKernel(pass: 2), bindings: chunkBindings(try unused()), push: try push(flags: 0, groups: forwardGroups),
                                groups: grid(groups: groups))
        }
        try stream.barrier()
        let final = finalState.flatMap { $0.isEmpty ? nil : $0 }
        let carryFlags: UInt32 = (initial != nil ? 16 : 0) | (final != nil ? 32 : 0)
        try stream.dispatch(try carryKernel(backward: false),
                            bindings: [maps.whole, states.whole, initial?.slice ?? dummy, final?.slice ?? unused(), table.whole],
                            push: try push(flags: carryFlags, groups: 1), groups: grid(invocations: sequences * Dch * N, workgroup: 64))
        guard runOutput else { return }
        try stream.barrier()
        try stream.dispatch(try chunkKernel(pass: 3, output: outputType), bindings: chunkBindings(output),
                            push: try push(flags: writeY ? 64 : 0, groups: forwardGroups), groups: grid(groups: groups))
    }

    /// True when the steps differ from delta (a bias or the softplus): steps.comp writes them.
    var needsSteps: Bool { bias != nil || op.deltaSoftplus || inputType != .f32 }

    func stepsKernel(pass: Int) throws -> Kernel {
        try device.kernel(KernelDescriptor(shader: variant(Shaders.mambaStepsF32, Shaders.mambaStepsF16, Shaders.mambaStepsBf16), bindings: 6, specialization: ["local_size_x": .int(64), "PASS": .int(pass)]))
    }

    /// The steps dt of every (row, channel): delta itself, or steps.comp's output (then a
    /// barrier) in a new workspace.
    func encodeSteps(_ stream: Stream) throws -> (slice: BufferSlice, buffer: Buffer?) {
        guard needsSteps else { return (delta.slice, nil) }
        let steps = try workspace(floats: T * Dch)
        try stream.dispatch(try stepsKernel(pass: 0), bindings: [delta.slice, bias?.slice ?? delta.slice, steps.whole, delta.slice, delta.slice, steps.whole],
                            push: try push(flags: 0, groups: 1), groups: grid(invocations: T * Dch, workgroup: 64))
        try stream.barrier()
        return (steps.whole, steps)
    }

    package func forward(output: Tensor, finalState: Tensor?, on stream: Stream) throws -> SelectiveScanDispatch {
        let name = Self.opName
        try output.expect(op: name, "output", shape: x.shape, device: device)
        guard output.dtype == .f32 || output.dtype == inputType else {
            throw VkAttnError.dtypeMismatch(op: name, operand: "output", expected: inputType == .f32 ? "f32" : "f32 or \(inputType)", actual: output.dtype.rawValue)
        }
        if let finalState { try finalState.expect(op: name, "finalState", shape: stateShape, dtype: .f32, device: device) }
        let outputs = [("output", output)] + (finalState.map { [("finalState", $0)] } ?? [])
        try Self.checkBindable(outputs, device: device)
        try checkNoOverlap(outputs, inputs: [])
        if isEmpty {
            // No kernel: out is empty; after zero steps (or with no channels) each final state
            // is the initial one, or zero without one.
            if let finalState {
                if let initial { try finalState.recordCopy(from: initial, on: stream) } else { try finalState.recordFill(bits: 0, on: stream) }
            }
            return SelectiveScanDispatch(chunkLength: chunkLength, chunks: chunks, path: emptyInputPath)
        }
        let tableBuffer = try device.makeBuffer(table)
        let plane = chunks * Dch * N
        let maps = try workspace(floats: 2 * plane), states = try workspace(floats: plane)
        let steps = try encodeSteps(stream)
        try encodeForward(stream, table: tableBuffer, maps: maps, states: states, steps: steps.slice, output: output.slice, outputType: output.dtype, writeY: false,
                          finalState: finalState)
        return SelectiveScanDispatch(chunkLength: chunkLength, chunks: chunks, path: label)
    }

    /// The backward's outputs.
    package struct Gradients {
        let dx: Tensor, dDelta: Tensor, dA: Tensor, dB: Tensor, dC: Tensor
        let dD: Tensor?, dz: Tensor?, dDeltaBias: Tensor?, dInitialState: Tensor?
    }

    func checkBackward(dOutput: Tensor, dFinalState: Tensor?, grads g: Gradients) throws {
        let name = Self.opName
        try dOutput.expect(op: name, "dOutput", shape: x.shape, dtype: inputType, device: device)
        if let dFinalState { try dFinalState.expect(op: name, "dFinalState", shape: stateShape, dtype: .f32, device: device) }
        try g.dx.expect(op: name, "dx", shape: x.shape, dtype: .f32, device: device)
        try g.dDelta.expect(op: name, "dDelta", shape: x.shape, dtype: .f32, device: device)
        try g.dA.expect(op: name, "dA", shape: A.shape, dtype: .f32, device: device)
        try g.dB.expect(op: name, "dB", shape: B.shape, dtype: .f32, device: device)
        try g.dC.expect(op: name, "dC", shape: C.shape, dtype: .f32, device: device)
        for (operand, grad, input, shape) in [("dD", g.dD, D, [Dch]), ("dz", g.dz, z, x.shape), ("dDeltaBias", g.dDeltaBias, bias, [Dch])] {
            guard let grad else { continue }
            guard input != nil else {
                throw VkAttnError.invalidValue(op: name, operand: operand, reason: "given, but the forward had no \(operand.dropFirst())")
            }
            try grad.expect(op: name, operand, shape: shape, dtype: .f32, device: device)
        }
        if let d = g.dInitialState { try d.expect(op: name, "dInitialState", shape: stateShape, dtype: .f32, device: device) }
        let outputs = [("dx", g.dx), ("dDelta", g.dDelta), ("dA", g.dA), ("dB", g.dB), ("dC", g.dC)]
            + [("dD", g.dD), ("dz", g.dz), ("dDeltaBias", g.dDeltaBias), ("dInitialState", g.dInitialState)].compactMap { n, t in t.map { (n, $0) } }
        let extra = [("dOutput", dOutput)] + (dFinalState.map { [("dFinalState", $0)] } ?? [])
        try Self.checkBindable(outputs + extra, device: device)
        try checkNoOverlap(outputs, inputs: extra)
    }

    package func backward(dOutput: Tensor, dFinalState: Tensor?, grads g: Gradients, on stream: Stream) throws -> SelectiveScanDispatch {
        try checkBackward(dOutput: dOutput, dFinalState: dFinalState, grads: g)
        if isEmpty {
            // No kernel: nothing reaches out, so every gradient is zero (those of A, B, C, D and
            // the bias may be non-empty), and the initial state's is dFinalState's.
            for t in [g.dx, g.dDelta, g.dA, g.dB, g.dC] + [g.dD, g.dz, g.dDeltaBias].compactMap({ $0 }) {
                try t.recordFill(bits: 0, on: stream)
            }
            if let d = g.dInitialState {
                if let dFinalState { try d.recordCopy(from: dFinalState, on: stream) } else { try d.recordFill(bits: 0, on: stream) }
            }
            return SelectiveScanDispatch(chunkLength: chunkLength, chunks: chunks, path: emptyInputPath)
        }
        let dummy = x.slice
        let tableBuffer = try device.makeBuffer(table)
        let plane = chunks * Dch * N
        let blocks = (Dch + Self.block - 1) / Self.block
        let maps = try workspace(floats: 3 * plane), states = try workspace(floats: 2 * plane)
        let needY = g.dz != nil || g.dD != nil
        let yws = try workspace(floats: needY ? T * Dch : 0)
        let partB = plane, partC = plane + blocks * T * N
        let partials = try workspace(floats: plane + 2 * blocks * T * N)

        // Maps (P, U, Q), then the start states and the incoming adjoints, then y.
        // The steps and dy = dOut silu(z) of every (row, channel).
        let steps = try workspace(floats: T * Dch), dy = try workspace(floats: T * Dch)
        try stream.dispatch(try stepsKernel(pass: 2), bindings: [delta.slice, bias?.slice ?? delta.slice, steps.whole, dOutput.slice,
                                                                  z?.slice ?? dOutput.slice, dy.whole],
                            push: try push(flags: 0, groups: 1), groups: grid(invocations: T * Dch, workgroup: 64))
        try stream.barrier()
        try encodeForward(stream, table: tableBuffer, maps: maps, states: states, steps: steps.whole, output: yws.whole, writeY: true, finalState: nil,
                          dy: dy.whole, runOutput: g.dz != nil)
        try stream.barrier()  // the carry below rewrites the states the forward's last pass read
        let dInit = g.dInitialState.flatMap { $0.isEmpty ? nil : $0 }
        let carryFlags: UInt32 = (dFinalState != nil ? 16 : 0) | (dInit != nil ? 32 : 0)
        try stream.dispatch(try carryKernel(backward: true),
                            bindings: [maps.whole, states.whole, dFinalState?.slice ?? dummy, dInit?.slice ?? workspace(floats: 4).whole, tableBuffer.whole],
                            push: try push(flags: carryFlags, groups: 1), groups: grid(invocations: sequences * Dch * N, workgroup: 64))
        try stream.barrier()

        let bwd = try device.kernel(KernelDescriptor(shader: variant(Shaders.mambaSelectiveBwdF32, Shaders.mambaSelectiveBwdF16, Shaders.mambaSelectiveBwdBf16), bindings: 16, specialization: [
            "local_size_x": .int(workgroup), "NL": .int(lanes), "CT": .int(chunkLength), "WGS": .int(workgroup)]))
        let bwdFlags: UInt32 = (g.dz != nil ? 128 : 0) | (g.dD != nil ? 256 : 0)
        try stream.dispatch(bwd, bindings: [x.slice, steps.whole, A.slice, B.slice, C.slice, D?.slice ?? dummy, z?.slice ?? dummy,
                                            dy.whole, tableBuffer.whole, states.whole, dOutput.slice, yws.whole,
                                            g.dx.slice, g.dDelta.slice, g.dz?.slice ?? workspace(floats: 4).whole, partials.whole],
                            push: try push(flags: bwdFlags, groups: blocks, partB: partB, partC: partC),
                            groups: grid(groups: chunks * blocks))
        try stream.barrier()
        if op.deltaSoftplus {
            // dDelta holds dL/d(dt): times softplus'(delta + bias).
            try stream.dispatch(try stepsKernel(pass: 1), bindings: [delta.slice, bias?.slice ?? delta.slice, g.dDelta.slice,
                                                                      delta.slice, delta.slice, g.dDelta.slice],
                                push: try push(flags: 0, groups: 1), groups: grid(invocations: T * Dch, workgroup: 64))
            try stream.barrier()
        }

        // Reductions: dA over chunks, dB and dC over channel blocks, dD and dDeltaBias over rows.
        var reductions: [(BufferSlice, Int, Int, Int, Tensor)] = [
            (partials.whole, 0, Dch * N, chunks, g.dA), (partials.whole, partB, T * N, blocks, g.dB), (partials.whole, partC, T * N, blocks, g.dC),
        ]
        if let dD = g.dD { reductions.append((yws.whole, 0, Dch, T, dD)) }
        if let dBias = g.dDeltaBias { reductions.append((g.dDelta.slice, 0, Dch, T, dBias)) }
        try encodeReductions(stream, reductions)
        return SelectiveScanDispatch(chunkLength: chunkLength, chunks: chunks, path: label)
    }

    /// Sums (input, float offset, M, S) over S slices of M floats into each output, in rounds
    /// of at most `reduceGroup` slices per invocation.
    func encodeReductions(_ stream: Stream, _ work: [(BufferSlice, Int, Int, Int, Tensor)]) throws {
        let kernel = try device.kernel(KernelDescriptor(shader: Shaders.mambaReduce, bindings: 2, specialization: ["local_size_x": .int(64)]))
        var pending = work.map { (source: $0.0, offset: $0.1, m: $0.2, s: $0.3, out: $0.4) }
        while !pending.isEmpty {
            var next: [(source: BufferSlice, offset: Int, m: Int, s: Int, out: Tensor)] = []
            for r in pending where r.m > 0 {
                let g = Self.reduceGroup
                if r.s > g {
                    let groups = (r.s + g - 1) / g
                    let temp = try workspace(floats: groups * r.m)
                    try stream.dispatch(kernel, bindings: [r.source, temp.whole],
                                        push: ReducePush(M: try UInt32(pushing: r.m, "M"), S: try UInt32(pushing: r.s, "S"), G: UInt32(g),
                                                         offset: try UInt32(pushing: r.offset, "offset")),
                                        groups: grid(invocations: groups * r.m, workgroup: 64))
                    next.append((temp.whole, 0, r.m, groups, r.out))
                } else {
                    try stream.dispatch(kernel, bindings: [r.source, r.out.slice],
                                        push: ReducePush(M: try UInt32(pushing: r.m, "M"), S: try UInt32(pushing: r.s, "S"), G: UInt32(max(1, r.s)),
                                                         offset: try UInt32(pushing: r.offset, "offset")),
                                        groups: grid(invocations: r.m, workgroup: 64))
                }
            }
            if !next.isEmpty { try stream.barrier() }
            pending = next
        }
    }
}

/// Shaders/common/mamba_selective.glsl: the selective scan's sizes and flags.
struct SelectiveScanPush: PushConstantBlock {
    var T: UInt32, Dch: UInt32, N: UInt32
    var nChunks: UInt32, nSeq: UInt32
    var flags: UInt32
    /// Floats between the planes of the maps and states.
    var plane: UInt32
    /// Workgroups per chunk.
    var nGroups: UInt32
    /// Float offsets of dB's and dC's partials.
    var partB: UInt32, partC: UInt32
}

/// Shaders/mamba/reduce.comp.
struct ReducePush: PushConstantBlock {
    var M: UInt32, S: UInt32, G: UInt32
    var offset: UInt32
}
