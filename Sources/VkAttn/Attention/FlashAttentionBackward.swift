import VulkanCompute
import VkAttnShaders

/// dQ, dK, dV of a backward pass, and the kernel variants that produced them.
public struct AttentionGradients: Sendable {
    /// Shaped as Q.
    public let dq: Tensor
    /// Shaped as K (summed over the query heads of each group).
    public let dk: Tensor
    /// Shaped as V (summed over the query heads of each group).
    public let dv: Tensor
    /// dL/dsink per query head ([Hq], f32) when the attention has sinks; nil otherwise.
    public let dsinks: Tensor?
    /// The dQ and dK/dV kernel variants (and the loop-capped splits, where there were any).
    public let path: String

    /// Gradient tensors for `into:` (the path is filled in by the op).
    /// - Parameters:
    ///   - dq: dQ, Q's shape.
    ///   - dk: dK, K's shape.
    ///   - dv: dV, V's shape.
    ///   - dsinks: dL/dsink, [Hq] f32, for attention with sinks; nil allocates it where needed.
    ///   - path: A kernel description; empty for caller-made gradients.
    public init(dq: Tensor, dk: Tensor, dv: Tensor, dsinks: Tensor? = nil, path: String = "") {
        self.dq = dq
        self.dk = dk
        self.dv = dv
        self.dsinks = dsinks
        self.path = path
    }
}

extension FlashAttention {
    /// The backward pass (FlashAttention-2 with recomputation): gradients of a loss with
    /// respect to Q, K, V given dO, from the forward's O and LSE (same mask, scale, softcap).
    /// Three dispatches: Delta = rowsum(dO * O), then dQ (per query tile) and dK/dV (per key
    /// tile, summing a GQA group's heads) independently. No atomics: results are identical
    /// run to run.
    ///
    /// dO has Q's shape and dtype; O has Q's shape (the input dtype, or f32 for f16 inputs);
    /// LSE is f32 in the LSE layout. Gradients are in `gradientDType` (nil: the input dtype;
    /// f16 inputs may ask for f32).
    /// - Parameters:
    ///   - q: Q of the forward pass. With zero sizes (as for the forward) no kernel is recorded:
    ///     every gradient is zero, its non-empty ones written by fills.
    ///   - k: K of the forward pass.
    ///   - v: V of the forward pass.
    ///   - o: The forward's O.
    ///   - lse: The forward's LSE.
    ///   - dO: The loss's gradient with respect to O.
    ///   - layout: The forward's layout.
    ///   - gradientDType: The type of dQ, dK, dV; nil means the inputs'.
    ///   - outputs: dQ, dK, dV to write; nil allocates them.
    ///   - stream: A stream of Q's device.
    /// - Returns: dQ, dK, dV (and dsinks with sinks) and the kernels' path.
    /// - Throws: ``VkAttnError`` naming the operand or option the op does not take, before
    ///   anything is recorded; ``VkAttnError/unsupported(op:reason:)`` when a GQA group is too
    ///   large for a loop-capped device.
    public func backward(q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, dO: Tensor,
                         layout: AttentionLayout = .dense, gradientDType: DType? = nil,
                         into outputs: AttentionGradients? = nil, on stream: Stream) throws -> AttentionGradients {
        let op = "attention.backward"
        let g = try AttentionGeometry.resolve(op: op, q: q, k: k, v: v, layout: layout)
        // Head dims up to the forward's (576/512) where the device's shared memory holds a
        // tile: the tiling throws `unsupported` naming the shared memory otherwise.
        let (scale, softcap) = try checkOptions(op: op, g)
        let device = stream.device
        guard q.device === device else { throw VkAttnError.deviceMismatch(op: op, operand: "stream") }
        try dO.expect(op: op, "dO", shape: g.oShape, dtype: g.dtype, device: device)
        try o.expect(op: op, "O", shape: g.oShape, device: device)
        guard o.dtype == g.dtype || (g.dtype.isHalfWidth && o.dtype == .f32) else {
            throw VkAttnError.dtypeMismatch(op: op, operand: "O", expected: g.dtype.isHalfWidth ? "\(g.dtype) or f32" : "f32", actual: o.dtype.rawValue)
        }
        try lse.expect(op: op, "LSE", shape: g.lseShape, dtype: .f32, device: device)
        let gType = try FlashAttention(outputDType: gradientDType).outputType(op: op, input: g.dtype)
        let grads = try outputs ?? AttentionGradients(
            dq: device.makeTensor(shape: g.qShape, dtype: gType),
            dk: device.makeTensor(shape: g.kvShape, dtype: gType),
            dv: device.makeTensor(shape: g.vShape, dtype: gType))
        try grads.dq.expect(op: op, "dQ", shape: g.qShape, dtype: gType, device: device)
        try grads.dk.expect(op: op, "dK", shape: g.kvShape, dtype: gType, device: device)
        try grads.dv.expect(op: op, "dV", shape: g.vShape, dtype: gType, device: device)
        for (name, t) in [("O", o), ("dO", dO), ("dQ", grads.dq), ("dK", grads.dk), ("dV", grads.dv)] {
            try t.expectBindable(op: op, name)
        }
        var dsinks: Tensor?
        if sinks != nil {
            dsinks = try grads.dsinks ?? device.makeTensor(shape: [g.headsQ], dtype: .f32)
            try dsinks?.expect(op: op, "dsinks", shape: [g.headsQ], dtype: .f32, device: device)
        }
        if g.isEmpty { return try recordEmptyBackward(grads, dsinks: dsinks, on: stream) }  // zero gradients, no kernel
        let delta = try device.makeTensor(shape: g.lseShape, dtype: .f32)

        let blocks = mask.blocks
        let operands = [("Q", q), ("K", k), ("V", v), ("dO", dO)]
        let dqTiling = try tiling(.dq, op: op, geometry: g, shader: Self.backwardVariant(input: g.dtype, output: gType, cooperative: true).dq,
                                  operands: operands, device: device)
        let dkdvTiling = try tiling(.dkdv, op: op, geometry: g, shader: Self.backwardVariant(input: g.dtype, output: gType, cooperative: true).dkdv,
                                    operands: operands, device: device)
        // Devices that cap an invocation's loop iterations (lavapipe) get the streamed range
        // split into fp32 partials, summed in split order afterwards.
        let dqSplit = try Self.backwardSplit(op: op, tiling: dqTiling, streamed: g.maxSk, tile: dqTiling.bc,
                                             repeats: 1, device: device)
        let dkdvSplit = try Self.backwardSplit(op: op, tiling: dkdvTiling, streamed: g.maxSq, tile: dkdvTiling.br,
                                               repeats: g.groupSize, device: device)
        let dqLaunch = try AttentionLaunch(op: op, geometry: g, mask: mask, scale: scale, softcap: softcap,
                                           tiling: dqTiling, packGQA: false, splits: dqSplit.splits, splitKeys: dqSplit.size,
                                           alibiSlopes: alibiSlopes, sinks: sinks, device: device)
        let keyBlocks = blocks.map { (g.maxSk + $0.blockSize - 1) / $0.blockSize } ?? 0
        let dkdvLaunch = try AttentionLaunch(op: op, geometry: g, mask: mask, scale: scale, softcap: softcap,
                                             tiling: dkdvTiling, packGQA: false, splits: dkdvSplit.splits, splitKeys: dkdvSplit.size,
                                             blocks: blocks?.transposed(keyBlocks: keyBlocks), alibiSlopes: alibiSlopes, device: device)
        let keyTiles = max(1, (g.maxSk + dkdvTiling.bc - 1) / dkdvTiling.bc)
        try AttentionLaunch.checkGrid(op: op, [keyTiles, g.headsKV, g.batch * dkdvSplit.splits], device: device)

        // Delta = rowsum(dO * O), in the LSE layout.
        let tpr = AttentionTiling.threadsPerRow(device)
        let rowsumGroup = min(256, device.capabilities.maxWorkgroupInvocations) / tpr * tpr
        let rows = g.totalQ * g.headsQ
        let groups = (rows + rowsumGroup / tpr - 1) / (rowsumGroup / tpr)
        let gx = min(groups, device.capabilities.maxWorkgroupCount[0])
        let rowsum = try device.kernel(KernelDescriptor(
            shader: Self.rowsumShader(dO: g.dtype, o: o.dtype), bindings: 5,
            specialization: ["local_size_x": .int(rowsumGroup), "D": .int(g.headDimV), "TPR": .int(tpr), "VARLEN": .bool(g.isPacked)]))
        try stream.dispatch(rowsum, bindings: [dO.slice, o.slice, delta.slice, dqLaunch.cuQ, dqLaunch.cuK],
                            push: dqLaunch.pushConstants, groups: (gx, (groups + gx - 1) / gx, 1))
        try stream.barrier()
        if let dsinks {
            // dL/dsink_h = -sum over the head's rows of exp(sink_h - LSE) * Delta: one workgroup per head.
            let sinkGrad = try device.kernel(KernelDescriptor(
                shader: Shaders.attentionSinkGrad, bindings: 6,
                specialization: ["local_size_x": .int(64), "VARLEN": .bool(g.isPacked)]))
            try stream.dispatch(sinkGrad, bindings: [lse.slice, delta.slice, dsinks.slice, dqLaunch.cuQ, dqLaunch.cuK, dqLaunch.sinks],
                                push: dqLaunch.pushConstants, groups: (g.headsQ, 1, 1))
        }

        // dQ: one column of workgroups per split, into dQ itself or into fp32 partials.
        let dqParts = dqSplit.splits > 1 ? try device.makeTensor(shape: [dqSplit.splits] + g.qShape, dtype: .f32) : nil
        let dqKernel = try device.kernel(KernelDescriptor(
            shader: Self.backwardVariant(input: g.dtype, output: dqParts == nil ? gType : .f32, cooperative: dqTiling.matrix != nil,
                                         rolled: Self.rolledCooperativeLoops(device)).dq, bindings: 12,
            specialization: dqLaunch.specialization(workgroupSize: dqTiling.workgroupSize, split: dqParts != nil),
            requiredSubgroupSize: try AttentionTiling.subgroupRequirement(device),
            fullSubgroups: device.enabled.computeFullSubgroups))
        try stream.dispatch(dqKernel, bindings: [q.slice, k.slice, v.slice, dO.slice, lse.slice, delta.slice,
                                                 (dqParts ?? grads.dq).slice,
                                                 dqLaunch.cuQ, dqLaunch.cuK, dqLaunch.maskOffsets, dqLaunch.maskColumns, dqLaunch.alibiSlopes],
                            push: dqLaunch.pushConstants, groups: (dqLaunch.rowTiles, g.headsQ, g.batch * dqSplit.splits))
        let dkParts = dkdvSplit.splits > 1 ? try device.makeTensor(shape: [dkdvSplit.splits] + g.kvShape, dtype: .f32) : nil
        let dvParts = dkdvSplit.splits > 1 ? try device.makeTensor(shape: [dkdvSplit.splits] + g.vShape, dtype: .f32) : nil
        let dkdvKernel = try device.kernel(KernelDescriptor(
            shader: Self.backwardVariant(input: g.dtype, output: dkParts == nil ? gType : .f32, cooperative: dkdvTiling.matrix != nil,
                                         rolled: Self.rolledCooperativeLoops(device)).dkdv, bindings: 13,
            specialization: dkdvLaunch.specialization(workgroupSize: dkdvTiling.workgroupSize, split: dkParts != nil),
            requiredSubgroupSize: try AttentionTiling.subgroupRequirement(device),
            fullSubgroups: device.enabled.computeFullSubgroups))
        try stream.dispatch(dkdvKernel, bindings: [q.slice, k.slice, v.slice, dO.slice, lse.slice, delta.slice,
                                                   (dkParts ?? grads.dk).slice, (dvParts ?? grads.dv).slice,
                                                   dkdvLaunch.cuQ, dkdvLaunch.cuK, dkdvLaunch.maskOffsets, dkdvLaunch.maskColumns, dkdvLaunch.alibiSlopes],
                            push: dkdvLaunch.pushConstants, groups: (keyTiles, g.headsKV, g.batch * dkdvSplit.splits))
        for (parts, out, splits) in [(dqParts, grads.dq, dqSplit.splits), (dkParts, grads.dk, dkdvSplit.splits),
                                     (dvParts, grads.dv, dkdvSplit.splits)] {
            guard let parts else { continue }
            try stream.barrier()
            try Self.sumPartials(parts, into: out, splits: splits, stream: stream)
        }
        var path = Self.backwardPath("dQ", dqTiling, dtype: g.dtype) + ", " + Self.backwardPath("dKdV", dkdvTiling, dtype: g.dtype)
            + dkdvTiling.paddingText(headDim: g.headDim, headDimV: g.headDimV) + (mask.blocks.map { $0.heads > 1 ? ", blocks/head" : "" } ?? "")
        if dqSplit.splits > 1 || dkdvSplit.splits > 1 {
            path += ", loop-capped splits dQ x\(dqSplit.splits) dKdV x\(dkdvSplit.splits)"
        }
        return AttentionGradients(dq: grads.dq, dk: grads.dk, dv: grads.dv, dsinks: dsinks, path: path)
    }

    /// How to split a backward kernel's streamed range (keys for dQ, query rows for dK/dV,
    /// walked `repeats` times: once per query head of a GQA group) so that no invocation runs
    /// more loop iterations than the device allows: `splits` ranges of `size` positions (a
    /// whole number of tiles). One split where the device has no cap or the range fits.
    static func backwardSplit(op: String, tiling: AttentionTiling, streamed: Int, tile: Int, repeats: Int,
                              device: Device) throws -> (splits: Int, size: Int) {
        let tiles = max(1, (streamed + tile - 1) / tile)
        guard let maxTiles = tiling.maxTilesPerInvocation(device: device), tiles * repeats > maxTiles else {
            return (1, tiles * tile)
        }
        let perSplit = maxTiles / repeats
        guard perSplit >= 1 else {
            throw VkAttnError.unsupported(op: op, reason: "a GQA group of \(repeats) query heads exceeds the loop iterations one invocation may run on \(device.label)")
        }
        let splits = (tiles + perSplit - 1) / perSplit
        return (splits, perSplit * tile)
    }

    /// out = sum of the `splits` fp32 partials stacked in `parts` (split order), converted to
    /// out's dtype.
    static func sumPartials(_ parts: Tensor, into out: Tensor, splits: Int, stream: Stream) throws {
        let device = stream.device
        let wg = Launch.workgroupSize(256, device: device)
        let kernel = try device.kernel(KernelDescriptor(
            shader: out.dtype == .f16 ? Shaders.attentionSumPartialsF16
                : out.dtype == .bf16 ? Shaders.attentionSumPartialsBf16 : Shaders.attentionSumPartialsF32,
            bindings: 2, specialization: ["local_size_x": .int(wg)]))
        let push = SumPartialsPush(count: try UInt32(pushing: out.elementCount, "elements"), splits: try UInt32(pushing: splits, "splits"))
        try stream.dispatch(kernel, bindings: [parts.slice, out.slice], push: push,
                            groups: (Launch.gridStrideGroups(items: out.elementCount, workgroupSize: wg, device: device), 1, 1))
    }

    static func rowsumShader(dO: DType, o: DType) -> ShaderSource {
        switch (dO, o) {
        case (.f16, .f16): return Shaders.attentionBackwardRowsumF16
        case (.f16, _): return Shaders.attentionBackwardRowsumF16o32
        case (.bf16, .bf16): return Shaders.attentionBackwardRowsumBf16
        case (.bf16, _): return Shaders.attentionBackwardRowsumBf16o32
        default: return Shaders.attentionBackwardRowsumF32
        }
    }

    /// `dQ coopmat-f16 8x8x8 Br32 Bc32 wg32` or `dQ scalar-f32 Br32 Bc32 wg64 [no coopmat: ...]`.
    static func backwardPath(_ name: String, _ t: AttentionTiling, dtype: DType) -> String {
        let kernel = t.matrix.map { "coopmat-\(dtype) \(CooperativeMatrix.text($0))" } ?? "scalar-\(dtype)"
        return "\(name) \(kernel) Br\(t.br) Bc\(t.bc) wg\(t.workgroupSize)" + (t.cooperativeMatrixSkipped.map { " [no coopmat: \($0)]" } ?? "")
    }

    static func backwardVariant(input: DType, output: DType, cooperative: Bool = false,
                                rolled: Bool = false) -> (dq: ShaderSource, dkdv: ShaderSource) {
        if cooperative {
            if input == .bf16 {
                return output == .f32 ? (Shaders.attentionBackwardDqCoopmatBf16o32, Shaders.attentionBackwardDkdvCoopmatBf16o32)
                    : (Shaders.attentionBackwardDqCoopmatBf16, Shaders.attentionBackwardDkdvCoopmatBf16)
            }
            switch (output == .f32, rolled) {
            case (true, false): return (Shaders.attentionBackwardDqCoopmatF16o32, Shaders.attentionBackwardDkdvCoopmatF16o32)
            case (true, true): return (Shaders.attentionBackwardDqCoopmatF16o32Cpu, Shaders.attentionBackwardDkdvCoopmatF16o32Cpu)
            case (false, false): return (Shaders.attentionBackwardDqCoopmatF16, Shaders.attentionBackwardDkdvCoopmatF16)
            case (false, true): return (Shaders.attentionBackwardDqCoopmatF16Cpu, Shaders.attentionBackwardDkdvCoopmatF16Cpu)
            }
        }
        switch (input, output) {
        case (.f16, .f16): return (Shaders.attentionBackwardDqF16, Shaders.attentionBackwardDkdvF16)
        case (.f16, _): return (Shaders.attentionBackwardDqF16o32, Shaders.attentionBackwardDkdvF16o32)
        case (.bf16, .bf16): return (Shaders.attentionBackwardDqBf16, Shaders.attentionBackwardDkdvBf16)
        case (.bf16, _): return (Shaders.attentionBackwardDqBf16o32, Shaders.attentionBackwardDkdvBf16o32)
        default: return (Shaders.attentionBackwardDqF32, Shaders.attentionBackwardDkdvF32)
        }
    }
}

/// Shaders/attention/sum_partials.comp.
struct SumPartialsPush: PushConstantBlock {
    var count: UInt32
    var splits: UInt32
}
