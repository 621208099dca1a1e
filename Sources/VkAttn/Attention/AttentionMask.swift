/// Which keys each query may attend, beyond the sequence bounds.
///
/// Positions are relative to each sequence. With `Sq` queries and `Sk` keys, query `i` is
/// aligned with key `i + (Sk - Sq)` (bottom-right, as FlashAttention >= 2.1 does), so that the
/// last query always sees the last key; `anchor: .topLeft` aligns it with key `i` instead, and
/// `diagonalOffset` moves the diagonal by that many keys (a block of a sharded sequence whose
/// keys sit before or after its queries: ring attention's zigzag and striped blocks). Causal
/// and sliding-window masks are a band around that diagonal; a block mask further restricts
/// attention to listed key blocks. Masks compose.
public struct AttentionMask: Hashable, Sendable {
    /// Where the diagonal of query 0 starts.
    public enum Anchor: Hashable, Sendable {
        /// Query i is aligned with key i + Sk - Sq (each sequence's last query with its last key).
        case bottomRight
        /// Query i is aligned with key i.
        case topLeft
    }

    /// Keys after the aligned diagonal are masked.
    public var causal: Bool
    /// Sliding window: keys more than `left` before / `right` after the aligned diagonal are
    /// masked; nil means unbounded on that side.
    public var windowLeft: Int?
    /// The window's extent after the diagonal; see ``windowLeft``.
    public var windowRight: Int?
    /// Block-sparse mask, or nil.
    public var blocks: BlockMask?
    /// Alignment of the diagonal (default bottom-right).
    public var anchor: Anchor
    /// Keys the diagonal is moved by (positive: later keys), after the anchor.
    public var diagonalOffset: Int

    /// - Parameters:
    ///   - causal: Mask keys after the diagonal.
    ///   - windowLeft: Keys kept before the diagonal; nil: all.
    ///   - windowRight: Keys kept after the diagonal; nil: all (causal caps it at 0).
    ///   - blocks: A block-sparse pattern that further restricts attention; nil: none.
    ///   - anchor: Where query 0's diagonal starts.
    ///   - diagonalOffset: Keys the diagonal is moved by (the ops take at most +-2^30).
    public init(causal: Bool = false, windowLeft: Int? = nil, windowRight: Int? = nil, blocks: BlockMask? = nil,
                anchor: Anchor = .bottomRight, diagonalOffset: Int = 0) {
        self.causal = causal
        self.windowLeft = windowLeft
        self.windowRight = windowRight
        self.blocks = blocks
        self.anchor = anchor
        self.diagonalOffset = diagonalOffset
    }

    /// The key on the diagonal of query `i` (of `sq` queries, `sk` keys). The offset is taken
    /// within +-2^40 here (the ops refuse anything beyond +-2^30), so absurd values cannot trap.
    /// - Parameters:
    ///   - i: The query's position in its sequence.
    ///   - sq: The sequence's query count.
    ///   - sk: The sequence's key count.
    /// - Returns: The key position aligned with query `i` (may lie outside `0..<sk`).
    public func diagonal(query i: Int, sq: Int, sk: Int) -> Int {
        i + (anchor == .topLeft ? 0 : sk - sq) + max(-Self.unboundedWindow << 10, min(Self.unboundedWindow << 10, diagonalOffset))
    }

    /// Windows of this many keys or more cover any sequence VkAttn can hold: they are unbounded
    /// (the kernels' 32-bit band arithmetic would overflow on larger ones).
    public static let unboundedWindow = 1 << 30

    /// Every key of the sequence is visible.
    public static let none = AttentionMask()
    /// Bottom-right aligned causal: query i sees keys up to i + Sk - Sq.
    public static let causal = AttentionMask(causal: true)

    /// The band as the kernels see it: keys in `[diagonal - left, diagonal + right]`, -1 for
    /// unbounded. Causal caps `right` at 0.
    var band: (left: Int, right: Int) {
        let left = windowLeft.map { $0 >= Self.unboundedWindow ? -1 : $0 } ?? -1
        var right = windowRight.map { $0 >= Self.unboundedWindow ? -1 : $0 } ?? -1
        if causal { right = right < 0 ? 0 : min(right, 0) }
        return (left, right)
    }

    /// Whether query `i` (of `sq`) may attend key `j` (of `sk`).
    /// The CPU references and tests use this as the mask's definition.
    /// - Parameters:
    ///   - i: The query's position in its sequence.
    ///   - j: The key's position in its sequence.
    ///   - sq: The sequence's query count.
    ///   - sk: The sequence's key count.
    /// - Returns: Whether the pair is kept.
    public func allows(query i: Int, key j: Int, sq: Int, sk: Int) -> Bool {
        guard j >= 0, j < sk else { return false }
        let diagonal = self.diagonal(query: i, sq: sq, sk: sk)
        let (left, right) = band
        if left >= 0 && j < diagonal - left { return false }
        if right >= 0 && j > diagonal + right { return false }
        if let blocks, !blocks.allows(queryBlock: i / blocks.blockSize, keyBlock: j / blocks.blockSize) { return false }
        return true
    }

    /// The fraction of (query, key) pairs kept for a `sq` x `sk` problem (for FLOP counts).
    /// - Parameters:
    ///   - sq: Queries.
    ///   - sk: Keys.
    /// - Returns: Kept pairs over `sq * sk`; 0 for an empty problem.
    public func keptFraction(sq: Int, sk: Int) -> Double {
        guard sq > 0, sk > 0 else { return 0 }
        var kept = 0
        for i in 0..<sq {
            let diagonal = self.diagonal(query: i, sq: sq, sk: sk)
            let (left, right) = band
            var lo = 0, hi = sk - 1
            if left >= 0 { lo = max(lo, diagonal - left) }
            if right >= 0 { hi = min(hi, diagonal + right) }
            guard lo <= hi else { continue }
            if let blocks {
                for j in lo...hi where blocks.allows(queryBlock: i / blocks.blockSize, keyBlock: j / blocks.blockSize) { kept += 1 }
            } else {
                kept += hi - lo + 1
            }
        }
        return Double(kept) / (Double(sq) * Double(sk))
    }
}

/// A block-sparse attention pattern in block-CSR form: query block `r` attends key blocks
/// `columnIndices[rowOffsets[r] ..< rowOffsets[r + 1]]`. Blocks are `blockSize` x `blockSize`
/// positions (16, 32, 64, 128 or 256), relative to each sequence.
public struct BlockMask: Hashable, Sendable {
    /// Positions per block side: 16, 32, 64, 128 or 256 (checked by the ops).
    public let blockSize: Int
    /// Start of each query block's key blocks in ``columnIndices``: query blocks + 1 entries,
    /// starting at 0, never decreasing.
    public let rowOffsets: [Int32]
    /// The key blocks each query block attends, strictly increasing within a row.
    public let columnIndices: [Int32]

    /// A mask from its block-CSR arrays, checked by the op that uses it (ceil(Sq / blockSize)
    /// query blocks; key blocks below ceil(Sk / blockSize)).
    /// - Parameters:
    ///   - blockSize: Positions per block side.
    ///   - rowOffsets: Query blocks + 1 offsets into `columnIndices`.
    ///   - columnIndices: The attended key blocks of each query block, in order.
    public init(blockSize: Int, rowOffsets: [Int32], columnIndices: [Int32]) {
        self.blockSize = blockSize
        self.rowOffsets = rowOffsets
        self.columnIndices = columnIndices
    }

    /// A mask from a dense predicate over (query block, key block).
    /// - Parameters:
    ///   - blockSize: Positions per block side.
    ///   - queryBlocks: Query blocks (ceil(Sq / blockSize) for the problem it masks).
    ///   - keyBlocks: Key blocks to test for each query block.
    ///   - attends: Whether query block r attends key block c.
    public init(blockSize: Int, queryBlocks: Int, keyBlocks: Int, _ attends: (Int, Int) -> Bool) {
        var offsets: [Int32] = [0]
        var columns: [Int32] = []
        for r in 0..<queryBlocks {
            for c in 0..<keyBlocks where attends(r, c) { columns.append(Int32(c)) }
            offsets.append(Int32(columns.count))
            _ = r
        }
        self.init(blockSize: blockSize, rowOffsets: offsets, columnIndices: columns)
    }

    /// The number of query blocks.
    public var queryBlocks: Int { rowOffsets.count - 1 }

    func allows(queryBlock r: Int, keyBlock c: Int) -> Bool {
        guard r >= 0, r < queryBlocks else { return false }
        let row = columnIndices[Int(rowOffsets[r])..<Int(rowOffsets[r + 1])]
        return row.contains(Int32(c))
    }

    static let supportedBlockSizes = [16, 32, 64, 128, 256]

    /// Checks the structure against a problem of `maxSq` x `maxSk` positions.
    func validate(op: String, maxSq: Int, maxSk: Int) throws {
        guard BlockMask.supportedBlockSizes.contains(blockSize) else {
            throw VkAttnError.invalidValue(op: op, operand: "blockMask.blockSize", reason: "\(blockSize) is not one of \(BlockMask.supportedBlockSizes)")
        }
        let rows = (maxSq + blockSize - 1) / blockSize
        let cols = (maxSk + blockSize - 1) / blockSize
        guard rowOffsets.count == rows + 1 else {
            throw VkAttnError.invalidValue(op: op, operand: "blockMask.rowOffsets", reason: "has \(rowOffsets.count) entries, expected \(rows + 1) (one per query block of \(blockSize) plus one)")
        }
        guard rowOffsets.first == 0 else {
            throw VkAttnError.malformedSparse(op: op, row: 0, reason: "blockMask.rowOffsets must start at 0, got \(rowOffsets[0])")
        }
        for r in 0..<rows where rowOffsets[r + 1] < rowOffsets[r] {
            throw VkAttnError.malformedSparse(op: op, row: r, reason: "blockMask.rowOffsets decrease (\(rowOffsets[r]) -> \(rowOffsets[r + 1]))")
        }
        guard Int(rowOffsets[rows]) == columnIndices.count else {
            throw VkAttnError.malformedSparse(op: op, row: rows - 1, reason: "blockMask.rowOffsets end at \(rowOffsets[rows]) but there are \(columnIndices.count) column indices")
        }
        for r in 0..<rows {
            var previous: Int32 = -1
            for c in columnIndices[Int(rowOffsets[r])..<Int(rowOffsets[r + 1])] {
                guard c >= 0, Int(c) < cols else {
                    throw VkAttnError.malformedSparse(op: op, row: r, reason: "key block \(c) is outside [0, \(cols))")
                }
                guard c > previous else {
                    throw VkAttnError.malformedSparse(op: op, row: r, reason: "key blocks must be strictly increasing (\(previous) then \(c))")
                }
                previous = c
            }
        }
    }

    /// The transpose: for each key block, the query blocks that attend it (the backward pass
    /// walks key blocks).
    func transposed(keyBlocks: Int) -> BlockMask {
        var counts = [Int32](repeating: 0, count: keyBlocks + 1)
        for c in columnIndices { counts[Int(c) + 1] += 1 }
        for i in 0..<keyBlocks { counts[i + 1] += counts[i] }
        var next = counts
        var rows = [Int32](repeating: 0, count: columnIndices.count)
        for r in 0..<queryBlocks {
            for c in columnIndices[Int(rowOffsets[r])..<Int(rowOffsets[r + 1])] {
                rows[Int(next[Int(c)])] = Int32(r)
                next[Int(c)] += 1
            }
        }
        return BlockMask(blockSize: blockSize, rowOffsets: counts, columnIndices: rows)
    }
}
