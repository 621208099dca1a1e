/// A block-sparse attention pattern in block-CSR form: query block `r` attends key blocks
/// `columnIndices[rowOffsets[r] ..< rowOffsets[r + 1]]`. Blocks are `blockSize` x `blockSize`
/// positions (16, 32, 64, 128 or 256), relative to each sequence.
///
/// One pattern is shared by every head (`heads == 1`, the default), or each query head has its
/// own (`heads == Hq`): the rows of head `h` follow those of head `h - 1`, so `rowOffsets` has
/// `heads * queryBlocks + 1` entries and row `h * queryBlocks + r` lists the key blocks query
/// block `r` of head `h` attends (S2-Attention's heterogeneous sharding, ``s2Attention(blockSize:queryBlocks:keyBlocks:heads:localBlocks:stride:causal:)``,
/// is such a mask). Query heads of a GQA group may differ; the forward then runs one workgroup
/// row per query head (no GQA packing, as for every block mask).
public struct BlockMask: Hashable, Sendable {
    /// Positions per block side: 16, 32, 64, 128 or 256 (checked by the ops).
    public let blockSize: Int
    /// Patterns held: 1 (shared by every head) or the problem's query heads Hq (checked by the ops).
    public let heads: Int
    /// Start of each (head, query block) row's key blocks in ``columnIndices``:
    /// `heads * queryBlocks + 1` entries, starting at 0, never decreasing.
    public let rowOffsets: [Int32]
    /// The key blocks each row attends, strictly increasing within a row.
    public let columnIndices: [Int32]

    /// A mask shared by every head, from its block-CSR arrays, checked by the op that uses it
    /// (ceil(Sq / blockSize) query blocks; key blocks below ceil(Sk / blockSize)).
    /// - Parameters:
    ///   - blockSize: Positions per block side.
    ///   - rowOffsets: Query blocks + 1 offsets into `columnIndices`.
    ///   - columnIndices: The attended key blocks of each query block, in order.
    public init(blockSize: Int, rowOffsets: [Int32], columnIndices: [Int32]) {
        self.init(blockSize: blockSize, heads: 1, rowOffsets: rowOffsets, columnIndices: columnIndices)
    }

    /// A mask of `heads` patterns (1: shared; Hq: one per query head) from block-CSR arrays whose
    /// rows are head-major, checked by the op that uses it.
    /// - Parameters:
    ///   - blockSize: Positions per block side.
    ///   - heads: Patterns: 1 or the query heads Hq.
    ///   - rowOffsets: `heads * queryBlocks + 1` offsets into `columnIndices`; head `h`'s query
    ///     block `r` is row `h * queryBlocks + r`.
    ///   - columnIndices: The attended key blocks of each row, in order.
    public init(blockSize: Int, heads: Int, rowOffsets: [Int32], columnIndices: [Int32]) {
        self.blockSize = blockSize
        self.heads = heads
        self.rowOffsets = rowOffsets
        self.columnIndices = columnIndices
    }

    /// A shared mask from a dense predicate over (query block, key block).
    /// - Parameters:
    ///   - blockSize: Positions per block side.
    ///   - queryBlocks: Query blocks (ceil(Sq / blockSize) for the problem it masks).
    ///   - keyBlocks: Key blocks to test for each query block.
    ///   - attends: Whether query block r attends key block c.
    public init(blockSize: Int, queryBlocks: Int, keyBlocks: Int, _ attends: (Int, Int) -> Bool) {
        self.init(blockSize: blockSize, heads: 1, queryBlocks: queryBlocks, keyBlocks: keyBlocks) { _, r, c in attends(r, c) }
    }

    /// A mask of `heads` patterns from a dense predicate over (head, query block, key block).
    /// - Parameters:
    ///   - blockSize: Positions per block side.
    ///   - heads: Patterns: 1 or the query heads Hq.
    ///   - queryBlocks: Query blocks per head (ceil(Sq / blockSize)).
    ///   - keyBlocks: Key blocks to test for each query block.
    ///   - attends: Whether head h's query block r attends key block c, as `attends(h, r, c)`.
    public init(blockSize: Int, heads: Int, queryBlocks: Int, keyBlocks: Int, _ attends: (Int, Int, Int) -> Bool) {
        var offsets: [Int32] = [0]
        var columns: [Int32] = []
        for h in 0..<max(0, heads) {
            for r in 0..<max(0, queryBlocks) {
                for c in 0..<max(0, keyBlocks) where attends(h, r, c) { columns.append(Int32(truncatingIfNeeded: c)) }
                offsets.append(Int32(truncatingIfNeeded: columns.count))
            }
        }
        self.init(blockSize: blockSize, heads: heads, rowOffsets: offsets, columnIndices: columns)
    }

    /// The number of query blocks of each pattern.
    public var queryBlocks: Int { heads > 0 ? max(0, rowOffsets.count - 1) / heads : 0 }

    /// Whether query block `r` attends key block `c` in the shared pattern (head 0's pattern
    /// when the mask has one per head).
    /// - Parameters:
    ///   - r: The query block.
    ///   - c: The key block.
    /// - Returns: Whether the block pair is kept.
    public func allows(queryBlock r: Int, keyBlock c: Int) -> Bool {
        allows(head: 0, queryBlock: r, keyBlock: c)
    }

    /// Whether query block `r` of query head `head` attends key block `c` (a shared mask gives
    /// every head the same answer).
    /// - Parameters:
    ///   - head: The query head.
    ///   - r: The query block.
    ///   - c: The key block.
    /// - Returns: Whether the block pair is kept for that head; false outside the mask.
    public func allows(head: Int, queryBlock r: Int, keyBlock c: Int) -> Bool {
        keyBlocks(head: head, queryBlock: r).contains(Int32(truncatingIfNeeded: c))
    }

    /// The key blocks query block `r` of query head `head` attends (empty outside the mask).
    /// - Parameters:
    ///   - head: The query head (any head reads the shared pattern when `heads` is 1).
    ///   - r: The query block.
    /// - Returns: The row's key blocks, increasing.
    public func keyBlocks(head: Int, queryBlock r: Int) -> ArraySlice<Int32> {
        let pattern = heads == 1 ? 0 : head
        guard pattern >= 0, pattern < heads, r >= 0, r < queryBlocks else { return [] }
        let row = pattern * queryBlocks + r
        let lo = Int(rowOffsets[row]), hi = Int(rowOffsets[row + 1])
        guard lo >= 0, lo <= hi, hi <= columnIndices.count else { return [] }
        return columnIndices[lo..<hi]
    }

    /// The sub-mask of query blocks `queryBlocks` and key blocks `keyBlocks`, renumbered from 0
    /// and keeping every head's pattern: a rank's share of a sharded sequence. Rows beyond this
    /// mask's are empty.
    /// - Parameters:
    ///   - queryBlocks: The query blocks kept (row `r` of the result is row `queryBlocks.lowerBound + r`).
    ///   - keyBlocks: The key blocks kept (key block `c` becomes `c - keyBlocks.lowerBound`).
    /// - Returns: A mask of `heads` patterns, `queryBlocks.count` rows each.
    public func cropped(queryBlocks: Range<Int>, keyBlocks: Range<Int>) -> BlockMask {
        var offsets: [Int32] = [0]
        var columns: [Int32] = []
        for h in 0..<max(0, heads) {
            for r in queryBlocks {
                for c in self.keyBlocks(head: h, queryBlock: r) where keyBlocks.contains(Int(c)) {
                    columns.append(Int32(truncatingIfNeeded: Int(c) - keyBlocks.lowerBound))
                }
                offsets.append(Int32(truncatingIfNeeded: columns.count))
            }
        }
        return BlockMask(blockSize: blockSize, heads: heads, rowOffsets: offsets, columnIndices: columns)
    }

    /// The block sizes the kernels take (positions per block side).
    public static let supportedBlockSizes = [16, 32, 64, 128, 256]

    /// Checks the structure against a problem of `maxSq` x `maxSk` positions and `headsQ` query heads.
    func validate(op: String, maxSq: Int, maxSk: Int, headsQ: Int) throws {
        guard BlockMask.supportedBlockSizes.contains(blockSize) else {
            throw VkAttnError.invalidValue(op: op, operand: "blockMask.blockSize", reason: "\(blockSize) is not one of \(BlockMask.supportedBlockSizes)")
        }
        guard heads == 1 || heads == headsQ else {
            throw VkAttnError.invalidValue(op: op, operand: "blockMask.heads",
                                           reason: "\(heads) patterns: 1 (shared) or one per query head (\(headsQ)) expected")
        }
        let rows = (maxSq + blockSize - 1) / blockSize
        let cols = (maxSk + blockSize - 1) / blockSize
        let (total, overflow) = heads.multipliedReportingOverflow(by: rows)
        guard !overflow, rowOffsets.count == total + 1 else {
            throw VkAttnError.invalidValue(op: op, operand: "blockMask.rowOffsets",
                                           reason: "has \(rowOffsets.count) entries, expected \(heads) x \(rows) + 1 (\(rows) query blocks of \(blockSize) per pattern, \(heads) pattern\(heads == 1 ? "" : "s"), plus one)")
        }
        guard rowOffsets.first == 0 else {
            throw VkAttnError.malformedSparse(op: op, row: 0, reason: "blockMask.rowOffsets must start at 0, got \(rowOffsets[0])")
        }
        func place(_ row: Int) -> String { heads == 1 ? "query block \(row)" : "head \(row / max(1, rows)), query block \(row % max(1, rows))" }
        for r in 0..<total where rowOffsets[r + 1] < rowOffsets[r] {
            throw VkAttnError.malformedSparse(op: op, row: r, reason: "blockMask.rowOffsets decrease at \(place(r)) (\(rowOffsets[r]) -> \(rowOffsets[r + 1]))")
        }
        guard Int(rowOffsets[total]) == columnIndices.count else {
            throw VkAttnError.malformedSparse(op: op, row: max(0, total - 1), reason: "blockMask.rowOffsets end at \(rowOffsets[total]) but there are \(columnIndices.count) column indices")
        }
        for r in 0..<total {
            var previous: Int32 = -1
            for c in columnIndices[Int(rowOffsets[r])..<Int(rowOffsets[r + 1])] {
                guard c >= 0, Int(c) < cols else {
                    throw VkAttnError.malformedSparse(op: op, row: r, reason: "key block \(c) at \(place(r)) is outside [0, \(cols))")
                }
                guard c > previous else {
                    throw VkAttnError.malformedSparse(op: op, row: r, reason: "key blocks at \(place(r)) must be strictly increasing (\(previous) then \(c))")
                }
                previous = c
            }
        }
    }

    /// The transpose, head by head: for each key block, the query blocks that attend it (the
    /// backward's dK/dV pass walks key blocks). Row `h * keyBlocks + c` lists head `h`'s query
    /// blocks attending key block `c`. Only for validated masks.
    func transposed(keyBlocks: Int) -> BlockMask {
        let rows = queryBlocks
        var counts = [Int32](repeating: 0, count: heads * keyBlocks + 1)
        for h in 0..<heads {
            for r in 0..<rows {
                for c in self.keyBlocks(head: h, queryBlock: r) { counts[h * keyBlocks + Int(c) + 1] += 1 }
            }
        }
        for i in 0..<heads * keyBlocks { counts[i + 1] += counts[i] }
        var next = counts
        var entries = [Int32](repeating: 0, count: columnIndices.count)
        for h in 0..<heads {
            for r in 0..<rows {
                for c in self.keyBlocks(head: h, queryBlock: r) {
                    let slot = h * keyBlocks + Int(c)
                    entries[Int(next[slot])] = Int32(r)
                    next[slot] += 1
                }
            }
        }
        return BlockMask(blockSize: blockSize, heads: heads, rowOffsets: counts, columnIndices: entries)
    }
}
