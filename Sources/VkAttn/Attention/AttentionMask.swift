/// Which keys each query may attend, beyond the sequence bounds.
///
/// Positions are relative to each sequence. With `Sq` queries and `Sk` keys, query `i` is
/// aligned with key `i + (Sk - Sq)` (bottom-right, as FlashAttention >= 2.1 does), so that the
/// last query always sees the last key; `anchor: .topLeft` aligns it with key `i` instead, and
/// `diagonalOffset` moves the diagonal by that many keys (a block of a sharded sequence whose
/// keys sit before or after its queries: ring attention's zigzag and striped blocks). Causal
/// and sliding-window masks are a band around that diagonal; a block mask further restricts
/// attention to listed key blocks, the same for every head or per query head. Masks compose.
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
    /// Block-sparse mask (one pattern shared by every head, or one per query head), or nil.
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

    /// Whether query `i` (of `sq`) may attend key `j` (of `sk`), for a mask shared by every head
    /// (a per-head block mask answers with head 0's pattern: use ``allows(head:query:key:sq:sk:)``).
    /// - Parameters:
    ///   - i: The query's position in its sequence.
    ///   - j: The key's position in its sequence.
    ///   - sq: The sequence's query count.
    ///   - sk: The sequence's key count.
    /// - Returns: Whether the pair is kept.
    public func allows(query i: Int, key j: Int, sq: Int, sk: Int) -> Bool {
        allows(head: 0, query: i, key: j, sq: sq, sk: sk)
    }

    /// Whether query `i` (of `sq`) of query head `head` may attend key `j` (of `sk`).
    /// The CPU references and tests use this as the mask's definition.
    /// - Parameters:
    ///   - head: The query head (a shared block mask gives every head the same pattern).
    ///   - i: The query's position in its sequence.
    ///   - j: The key's position in its sequence.
    ///   - sq: The sequence's query count.
    ///   - sk: The sequence's key count.
    /// - Returns: Whether the pair is kept.
    public func allows(head: Int, query i: Int, key j: Int, sq: Int, sk: Int) -> Bool {
        guard j >= 0, j < sk else { return false }
        let diagonal = self.diagonal(query: i, sq: sq, sk: sk)
        let (left, right) = band
        if left >= 0 && j < diagonal - left { return false }
        if right >= 0 && j > diagonal + right { return false }
        if let blocks {
            guard blocks.blockSize > 0, blocks.allows(head: head, queryBlock: i / blocks.blockSize, keyBlock: j / blocks.blockSize) else { return false }
        }
        return true
    }

    /// The fraction of (query, key) pairs kept for a `sq` x `sk` problem (for FLOP counts),
    /// averaged over the block mask's patterns when it has one per head.
    /// - Parameters:
    ///   - sq: Queries.
    ///   - sk: Keys.
    /// - Returns: Kept pairs over `sq * sk` (per head); 0 for an empty problem.
    public func keptFraction(sq: Int, sk: Int) -> Double {
        guard sq > 0, sk > 0 else { return 0 }
        let patterns = max(1, blocks?.heads ?? 1)
        var kept = 0
        for i in 0..<sq {
            let diagonal = self.diagonal(query: i, sq: sq, sk: sk)
            let (left, right) = band
            var lo = 0, hi = sk - 1
            if left >= 0 { lo = max(lo, diagonal - left) }
            if right >= 0 { hi = min(hi, diagonal + right) }
            guard lo <= hi else { continue }
            guard let blocks else {
                kept += (hi - lo + 1) * patterns
                continue
            }
            // Intersect the band with each listed key block of the row.
            let size = blocks.blockSize
            guard size > 0 else { continue }
            for h in 0..<patterns {
                for c in blocks.keyBlocks(head: h, queryBlock: i / size) {
                    let first = max(lo, Int(c) * size), last = min(hi, Int(c) * size + size - 1)
                    if first <= last { kept += last - first + 1 }
                }
            }
        }
        return Double(kept) / (Double(sq) * Double(sk) * Double(patterns))
    }
}
