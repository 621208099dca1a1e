import VulkanCompute
import VkAttnShaders

extension FlashAttention {
    /// How decode splits the key range: `splits` workgroup columns of `splitKeys` keys each.
    public struct DecodePlan: Hashable, Sendable {
        public let splits: Int
        public let splitKeys: Int
    }

    /// Decode: a few query rows per sequence (typically 1 to 16) against a long K/V cache.
    /// The key range is split across workgroups (split-KV: enough splits to give every compute
    /// unit work even for one query), each split writes an fp32 partial (O_s, LSE_s), and
    /// `AttentionMerge` combines them exactly. GQA heads that share a K/V head are packed into
    /// one tile so the cache is read once per group.
    ///
    /// Shapes and layouts as `forward` (the cache is K and V; a packed layout gives each
    /// sequence its own cache length). `splits` overrides the plan (tests, tuning).
    public func decode(q: Tensor, kCache: Tensor, vCache: Tensor, layout: AttentionLayout = .dense,
                       splits requested: Int? = nil, into outputs: AttentionOutput? = nil,
                       on stream: Stream) throws -> AttentionOutput {
        let op = "attention.decode"
        let g = try AttentionGeometry.resolve(op: op, q: q, k: kCache, v: vCache, layout: layout)
        let (scale, softcap) = try checkOptions(op: op, g)
        let device = stream.device
        guard q.device === device else { throw VkAttnError.deviceMismatch(op: op, operand: "stream") }
        let oType = try outputType(op: op, input: g.dtype)
        let out = try outputs ?? AttentionOutput(
            o: device.makeTensor(shape: g.qShape, dtype: oType),
            lse: device.makeTensor(shape: g.lseShape, dtype: .f32))
        try out.o.expect(op: op, "O", shape: g.qShape, dtype: oType, device: device)
        try out.lse.expect(op: op, "LSE", shape: g.lseShape, dtype: .f32, device: device)
        if let requested, requested < 1 {
            throw VkAttnError.invalidValue(op: op, operand: "splits", reason: "\(requested) must be at least 1")
        }

        let pack = g.groupSize > 1 && mask.blocks == nil
        let tiling = try AttentionTiling.choose(.forward, headDim: g.headDim, device: device, maxTile: mask.blocks?.blockSize,
                                                rows: g.maxSq * (pack ? g.groupSize : 1))
        let plan = Self.decodePlan(g, tiling: tiling, pack: pack, device: device, requested: requested)
        if plan.splits == 1 {
            let result = try forward(q: q, k: kCache, v: vCache, layout: layout, into: out, on: stream)
            return AttentionOutput(o: result.o, lse: result.lse, path: "decode single-pass " + result.path)
        }

        let launch = try AttentionLaunch(op: op, geometry: g, mask: mask, scale: scale, softcap: softcap, tiling: tiling,
                                         packGQA: pack, splits: plan.splits, splitKeys: plan.splitKeys, device: device)
        let partialO = try device.makeTensor(shape: [plan.splits] + g.qShape, dtype: .f32)
        let partialLSE = try device.makeTensor(shape: [plan.splits] + g.lseShape, dtype: .f32)
        try partialO.expectBindable(op: op, "partial O")
        let kernel = try device.kernel(KernelDescriptor(
            shader: Self.forwardShader(input: g.dtype, output: .f32), bindings: 9,
            pushConstantBytes: AttentionLaunch.pushConstantBytes,
            specialization: launch.specialization(workgroupSize: tiling.workgroupSize, split: true),
            requiredSubgroupSize: try AttentionTiling.subgroupRequirement(device),
            fullSubgroups: device.enabled.computeFullSubgroups))
        try stream.dispatch(kernel, bindings: [q.slice, kCache.slice, vCache.slice, partialO.slice, partialLSE.slice,
                                               launch.cuQ, launch.cuK, launch.maskOffsets, launch.maskColumns],
                            push: launch.pushConstants,
                            groups: (launch.rowTiles, pack ? g.headsKV : g.headsQ, g.batch * plan.splits))
        try stream.barrier()
        try AttentionMerge.encode(stream, partialO: partialO.slice, partialLSE: partialLSE.slice, o: out.o, lse: out.lse,
                                  splits: plan.splits, headDim: g.headDim, heads: g.headsQ,
                                  seqQ: g.isPacked ? g.totalQ : g.maxSq, totalQ: g.totalQ, packed: g.isPacked)
        return AttentionOutput(o: out.o, lse: out.lse,
                               path: "decode split-kv x\(plan.splits) (\(plan.splitKeys) keys) + merge, " + Self.path(g, tiling: tiling, pack: pack))
    }

    /// Enough splits that the grid has about four workgroups per compute unit (16 units
    /// assumed where the device does not say), never more splits than key tiles.
    static func decodePlan(_ g: AttentionGeometry, tiling: AttentionTiling, pack: Bool, device: Device, requested: Int?) -> DecodePlan {
        let rows = g.maxSq * (pack ? g.groupSize : 1)
        let rowTiles = max(1, (rows + tiling.br - 1) / tiling.br)
        let baseGroups = rowTiles * (pack ? g.headsKV : g.headsQ) * g.batch
        let keyTiles = max(1, (g.maxSk + tiling.bc - 1) / tiling.bc)
        let target = 4 * (device.capabilities.computeUnits ?? 16)
        let wanted = requested ?? (target + baseGroups - 1) / baseGroups
        let limit = device.capabilities.maxWorkgroupCount[2] / max(1, g.batch)
        let splits = max(1, min(wanted, keyTiles, limit))
        let keysPerSplit = (g.maxSk + splits - 1) / splits
        let splitKeys = (keysPerSplit + tiling.bc - 1) / tiling.bc * tiling.bc
        return DecodePlan(splits: max(1, (g.maxSk + splitKeys - 1) / splitKeys), splitKeys: splitKeys)
    }
}
