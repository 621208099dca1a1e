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
        let prepared = try prepare(op: "attention.decode", q: q, k: kCache, v: vCache, layout: layout, outputs: outputs, stream: stream)
        if let requested, requested < 1 {
            throw VkAttnError.invalidValue(op: prepared.op, operand: "splits", reason: "\(requested) must be at least 1")
        }
        let g = prepared.geometry, device = stream.device
        let tiling = try forwardTiling(prepared, q: q, k: kCache, v: vCache, device: device,
                                       rows: g.maxSq * (prepared.pack ? g.groupSize : 1))
        if let requested {
            // More splits than key tiles (or than the grid holds) would be clamped: say so instead.
            let keyTiles = max(1, (g.maxSk + tiling.bc - 1) / tiling.bc)
            let limit = device.capabilities.maxWorkgroupCount[2] / max(1, g.batch)
            guard requested <= keyTiles, requested <= limit else {
                throw VkAttnError.invalidValue(op: prepared.op, operand: "splits",
                                               reason: "\(requested) is more than the \(min(keyTiles, limit)) splits of \(tiling.bc)-key tiles this cache allows")
            }
        }
        var plan = Self.decodePlan(g, tiling: tiling, pack: prepared.pack, device: device, requested: requested)
        // Never more keys per split than one invocation may walk (lavapipe's loop cap).
        if let maxTiles = tiling.maxTilesPerInvocation(headDim: g.headDim, device: device), plan.splitKeys > maxTiles * tiling.bc {
            let splitKeys = maxTiles * tiling.bc
            plan = DecodePlan(splits: (g.maxSk + splitKeys - 1) / splitKeys, splitKeys: splitKeys)
        }
        if plan.splits == 1 {
            let result = try encodeSingle(prepared, q: q, k: kCache, v: vCache, tiling: tiling, stream: stream)
            return AttentionOutput(o: result.o, lse: result.lse, path: "decode single-pass " + result.path)
        }
        return try encodeSplit(prepared, q: q, k: kCache, v: vCache, tiling: tiling, splitKeys: plan.splitKeys,
                               splits: plan.splits, stream: stream, label: "decode split-kv")
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
