extension BlockMask {
    /// The op name the S2 builder's errors carry.
    static let s2OpName = "attention.s2Mask"

    /// S2-Attention's heterogeneous context sharding (Lin et al. 2024, "S2-Attention:
    /// Hardware-Aware Context Sharding Among Attention Heads", arXiv:2407.17678): every head
    /// attends a strided shard of the context blocks plus a local window of the most recent
    /// blocks, and the heads' shards differ so that together they cover the whole context.
    ///
    /// Query block `r` is aligned with key block `d(r) = r + keyBlocks - queryBlocks` (each
    /// sequence's last query block with its last key block, as ``AttentionMask``'s default
    /// bottom-right anchor when `Sk - Sq` is a multiple of `blockSize`). Head `h` attends key
    /// block `c` when
    /// - `c % stride == h % stride` (its shard: heads `h`, `h + stride`, ... share one), or
    /// - `d(r) - localBlocks < c <= d(r)` (the local window; without `causal` also the
    ///   `localBlocks - 1` blocks after the diagonal),
    ///
    /// and, with `causal`, never a block after `d(r)`. Pair a causal pattern with
    /// `AttentionMask(causal: true, blocks: ...)` for the positions inside the diagonal block.
    /// Since `stride <= heads`, every residue has a head, so the union over the heads is every
    /// key block (up to `d(r)` when causal): no token drops out of the layer's context.
    /// - Parameters:
    ///   - blockSize: Positions per block side (16, 32, 64, 128 or 256).
    ///   - queryBlocks: Query blocks per head (ceil(Sq / blockSize)).
    ///   - keyBlocks: Key blocks (ceil(Sk / blockSize)).
    ///   - heads: Query heads Hq; the mask holds one pattern per head.
    ///   - localBlocks: Blocks of the local window (0: shards only).
    ///   - stride: Shards (1: every head attends every block); at most `heads`.
    ///   - causal: Drop key blocks after each query block's diagonal block.
    /// - Returns: A mask of `heads` patterns of `queryBlocks` rows each.
    /// - Throws: ``VkAttnError/invalidValue(op:operand:reason:)`` (op `attention.s2Mask`) for a
    ///   block size the kernels do not take, a negative count, a stride below 1 or above `heads`,
    ///   or more blocks than the 32-bit block-CSR arrays hold.
    public static func s2Attention(blockSize: Int, queryBlocks: Int, keyBlocks: Int, heads: Int, localBlocks: Int, stride: Int,
                                   causal: Bool = false) throws -> BlockMask {
        let op = s2OpName
        guard supportedBlockSizes.contains(blockSize) else {
            throw VkAttnError.invalidValue(op: op, operand: "blockSize", reason: "\(blockSize) is not one of \(supportedBlockSizes)")
        }
        for (name, value) in [("queryBlocks", queryBlocks), ("keyBlocks", keyBlocks), ("localBlocks", localBlocks)] where value < 0 {
            throw VkAttnError.invalidValue(op: op, operand: name, reason: "\(value) is negative")
        }
        guard heads >= 1 else {
            throw VkAttnError.invalidValue(op: op, operand: "heads", reason: "\(heads) must be at least 1")
        }
        guard stride >= 1, stride <= heads else {
            throw VkAttnError.invalidValue(op: op, operand: "stride",
                                           reason: "\(stride) must be in 1...\(heads) (the heads' shards must cover every key block)")
        }
        let (rows, overflowRows) = heads.multipliedReportingOverflow(by: queryBlocks)
        let (entries, overflowEntries) = rows.multipliedReportingOverflow(by: keyBlocks)
        guard !overflowRows, !overflowEntries, entries < Int(Int32.max) else {
            throw VkAttnError.invalidValue(op: op, operand: "queryBlocks",
                                           reason: "\(heads) heads x \(queryBlocks) x \(keyBlocks) blocks exceed the 32-bit block-CSR arrays")
        }
        let shift = keyBlocks - queryBlocks
        let local = min(localBlocks, keyBlocks + queryBlocks)  // wider windows change nothing
        return BlockMask(blockSize: blockSize, heads: heads, queryBlocks: queryBlocks, keyBlocks: keyBlocks) { h, r, c in
            let diagonal = r + shift
            if causal && c > diagonal { return false }
            if c % stride == h % stride { return true }
            return c > diagonal - local && c < diagonal + local
        }
    }
}
