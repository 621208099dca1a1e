import VulkanCompute
import VkAttnShaders

extension FlashAttention {
    /// How decode splits the key range: `splits` workgroup columns of `splitKeys` keys each.
    public struct DecodePlan: Hashable, Sendable {
        /// Workgroup columns over the key range (1: a single pass, no merge).
        public let splits: Int
        /// Keys per split, a whole number of key tiles.
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
    /// - Parameters:
    ///   - q: The query rows: [B, Sq, Hq, D] or [totalQ, Hq, D]. Zero sizes (an empty cache
    ///     too) record no kernel, as for the forward.
    ///   - kCache: K of the cache: [B, Sk, Hkv, Dk] or [totalK, Hkv, Dk], or
    ///     [pages, pageSize, Hkv, Dk] with `pages`; Q's type, or f16 or bf16 under any Q.
    ///   - vCache: V of the cache, K's shape with Dv and K's type.
    ///   - layout: Dense, or packed with per-sequence query and cache lengths (paged caches
    ///     take the packed layout: `cuSeqlensK` gives each sequence's cached keys).
    ///   - pages: The block table of a paged cache; nil for a contiguous one.
    ///   - requested: Workgroup columns over the key range; nil lets the device decide. At most
    ///     the number of key tiles.
    ///   - outputs: O and LSE to write; nil allocates them.
    ///   - stream: A stream of Q's device.
    /// - Returns: O, LSE and the path (`decode split-kv xN ... + merge` or `decode single-pass`).
    /// - Throws: ``VkAttnError`` as ``forward(q:k:v:layout:pages:into:on:)-(Tensor,Tensor,Tensor,_,_,_,_)``, and
    ///   ``VkAttnError/invalidValue(op:operand:reason:)`` for a split count below 1 or above what
    ///   the cache allows.
    public func decode(q: Tensor, kCache: Tensor, vCache: Tensor, layout: AttentionLayout = .dense, pages: KVPages? = nil,
                       splits requested: Int? = nil, into outputs: AttentionOutput? = nil,
                       on stream: Stream) throws -> AttentionOutput {
        guard q.device === stream.device else { throw VkAttnError.deviceMismatch(op: "attention.decode", operand: "stream") }
        return try decodePlan(q: q, kCache: kCache, vCache: vCache, layout: layout, pages: pages, splits: requested)
            .encode(q: q, k: kCache, v: vCache, into: outputs, on: stream)
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
