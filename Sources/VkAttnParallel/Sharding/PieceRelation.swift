import VkAttn

/// One call of a piece pair restricted to one sequence (its band or block offsets differ from
/// the other sequences').
struct SequenceCall: Hashable, Sendable {
    /// The sequence (index into the plan's lengths).
    let sequence: Int
    /// The sub-mask in the call's local coordinates (top-left anchor).
    let mask: AttentionMask
}

/// What one query piece does with one key piece under the global mask.
enum PieceRelation: Hashable, Sendable {
    /// No query sees any key.
    case skip
    /// One attention call over every sequence with this mask (local coordinates).
    case attend(AttentionMask)
    /// One call per listed sequence: the pieces' sub-masks differ between sequences.
    case perSequence([SequenceCall])

    /// Attention calls the relation makes.
    var calls: Int {
        switch self {
        case .skip: 0
        case .attend: 1
        case let .perSequence(list): list.count
        }
    }

    /// The exact relation of two pieces of the same sequences under the global `mask`
    /// (bottom-right anchor with Sq == Sk, i.e. query p's diagonal is key p; causal, windows
    /// and block mask). For every sequence with tokens in both pieces it derives the sub-mask
    /// in the pair's local coordinates (`PieceMask`); the pair is skipped when no sequence
    /// keeps a (query, key) pair, one unmasked call when every one keeps all, one call with the
    /// common sub-mask when the sequences share it, else one call per sequence that keeps any.
    /// - Throws: `VkAttnError.unsupported` for pieces of different strides, a block mask with
    ///   striped pieces, or a block mask whose chunks do not start on a block boundary.
    static func between(query: SequencePiece, key: SequencePiece, mask: AttentionMask) throws -> PieceRelation {
        let shared = query.counts.indices.filter { query.counts[$0] > 0 && key.counts[$0] > 0 }
        guard !shared.isEmpty else { return .skip }
        guard query.stride == key.stride else {
            throw VkAttnError.unsupported(op: "context parallel attention", reason: "pieces with strides \(query.stride) and \(key.stride)")
        }
        let band = GlobalBand(mask)
        if band.isUnbounded && mask.blocks == nil { return .attend(.none) }
        let sq = shared.map { query.counts[$0] }.max() ?? 0, sk = shared.map { key.counts[$0] }.max() ?? 0
        var masks: [PieceMask] = []
        var kept: [PieceMask.Kept] = []
        for b in shared {
            let m = try PieceMask(query: query, key: key, sequence: b, band: band, blocks: mask.blocks)
            masks.append(m)
            kept.append(m.kept(sq: query.counts[b], sk: key.counts[b]))
        }
        if kept.allSatisfy({ $0 == .none }) { return .skip }
        if kept.allSatisfy({ $0 == .all }) { return .attend(.none) }
        if let first = masks.first, masks.allSatisfy({ $0 == first }) { return .attend(first.attentionMask(sq: sq, sk: sk)) }
        return .perSequence(zip(zip(shared, masks), kept).compactMap { entry, k in
            let (b, m) = entry
            switch k {
            case .none: return nil
            case .all: return SequenceCall(sequence: b, mask: .none)
            case .some: return SequenceCall(sequence: b, mask: m.attentionMask(sq: query.counts[b], sk: key.counts[b]))
            }
        })
    }
}

/// The global mask's band around the diagonal (query p's diagonal is key p): keys in
/// [p - left, p + right], nil for unbounded, as the kernels read `AttentionMask` (windows of
/// `unboundedWindow` or more, and negative ones, are unbounded; causal caps `right` at 0).
struct GlobalBand: Hashable, Sendable {
    let left: Int?
    let right: Int?

    init(_ mask: AttentionMask) {
        func bounded(_ w: Int?) -> Int? { w.flatMap { $0 >= 0 && $0 < AttentionMask.unboundedWindow ? $0 : nil } }
        left = bounded(mask.windowLeft)
        let right = bounded(mask.windowRight)
        self.right = mask.causal ? min(right ?? 0, 0) : right
    }

    var isUnbounded: Bool { left == nil && right == nil }
}

/// One sequence's sub-mask of a (query piece, key piece) pair in the pair's local
/// coordinates: local query i (position qs + n i) keeps local key j (position ks + n j) for
/// j in [i + lo, i + hi] (nil: unbounded), and, with a block mask, the global blocks
/// translated by the pieces' first blocks.
///
/// With d = qs - ks and the global band [p - L, p + R]: ks + n j in [qs + n i - L, qs + n i + R]
/// <=> j in [i + ceil((d - L) / n), i + floor((d + R) / n)], exact for chunks (n = 1) and for
/// striped pieces (n = N) alike. A block mask needs n = 1 and chunk starts on block boundaries:
/// local block a is then global block qs / blockSize + a.
struct PieceMask: Hashable, Sendable {
    let lo: Int?
    let hi: Int?
    /// The global block mask and the pieces' first blocks (query, key); nil without one.
    let blocks: BlockMask?
    let queryBlock: Int
    let keyBlock: Int

    enum Kept { case none, some, all }

    init(query: SequencePiece, key: SequencePiece, sequence b: Int, band: GlobalBand, blocks: BlockMask?) throws {
        let n = query.stride, d = query.starts[b] - key.starts[b]
        func floorDiv(_ x: Int, _ y: Int) -> Int { x >= 0 ? x / y : -((-x + y - 1) / y) }
        lo = band.left.map { -floorDiv($0 - d, n) }
        hi = band.right.map { floorDiv(d + $0, n) }
        self.blocks = blocks
        guard let blocks else {
            queryBlock = 0
            keyBlock = 0
            return
        }
        let size = blocks.blockSize
        guard n == 1 else {
            throw VkAttnError.unsupported(op: "context parallel attention", reason: "a block mask with striped sharding (a piece of stride \(n) is no set of whole blocks): use contiguous or zigzag sharding")
        }
        guard query.starts[b] % size == 0, key.starts[b] % size == 0 else {
            throw VkAttnError.unsupported(op: "context parallel attention", reason: "a block mask of block size \(size) needs every chunk to start on a block boundary; sequence \(b) has chunks starting at \(query.starts[b]) and \(key.starts[b]) (a sequence of a multiple of 2N x \(size) tokens splits on block boundaries)")
        }
        queryBlock = query.starts[b] / size
        keyBlock = key.starts[b] / size
    }

    /// The keys query i may see in 0..<sk by the band (empty when lower > upper).
    func band(_ i: Int, sk: Int) -> (lower: Int, upper: Int) {
        (max(0, lo.map { i + $0 } ?? 0), min(sk - 1, hi.map { i + $0 } ?? sk - 1))
    }

    /// Whether the sub-mask keeps no pair, some, or all of an sq x sk problem.
    func kept(sq: Int, sk: Int) -> Kept {
        guard blocks != nil else {
            // The band alone: rows first...last see a key (i + hi >= 0, i + lo <= sk - 1), and
            // every row sees every key when the band covers the whole rectangle.
            if let lo, let hi, lo > hi { return .none }
            let first = max(0, hi.map { -$0 } ?? 0), last = min(sq - 1, lo.map { sk - 1 - $0 } ?? sq - 1)
            guard first <= last else { return .none }
            return (lo.map { sq - 1 + $0 <= 0 } ?? true) && (hi.map { $0 >= sk - 1 } ?? true) ? .all : .some
        }
        // A per-head mask keeps a pair when any head's pattern does (the call computes every
        // head; a pair is skipped only when no head sees a key).
        var any = false, all = true
        for i in 0..<sq {
            let (lower, upper) = band(i, sk: sk)
            for h in 0..<max(1, blocks?.heads ?? 1) {
                var count = max(0, upper - lower + 1)
                if let blocks, count > 0 {
                    count = 0
                    let size = blocks.blockSize, row = queryBlock + i / size
                    if row < blocks.queryBlocks {
                        for c in blocks.keyBlocks(head: h, queryBlock: row) {
                            let first = (Int(c) - keyBlock) * size
                            count += max(0, min(upper, first + size - 1) - max(lower, first) + 1)
                        }
                    }
                }
                if count > 0 { any = true }
                if count < sk { all = false }
                if any && !all { return .some }
            }
        }
        return any ? (all ? .all : .some) : .none
    }

    /// The sub-mask as the attention op takes it, for calls of at most sq x sk positions per
    /// sequence (top-left anchor; the block mask cropped to those blocks).
    func attentionMask(sq: Int, sk: Int) -> AttentionMask {
        var mask: AttentionMask
        switch (lo, hi) {
        case (nil, nil): mask = AttentionMask(anchor: .topLeft)
        case let (nil, hi?): mask = AttentionMask(causal: true, anchor: .topLeft, diagonalOffset: hi)
        case let (lo?, nil): mask = AttentionMask(windowLeft: 0, anchor: .topLeft, diagonalOffset: lo)
        case let (lo?, hi?): mask = AttentionMask(causal: true, windowLeft: max(0, hi - lo), anchor: .topLeft, diagonalOffset: hi)
        }
        if let blocks {
            mask.blocks = Self.translate(blocks, queryBlock: queryBlock, rows: (sq + blocks.blockSize - 1) / blocks.blockSize,
                                         keyBlock: keyBlock, columns: (sk + blocks.blockSize - 1) / blocks.blockSize)
        }
        return mask
    }

    /// Rows [queryBlock, queryBlock + rows) and columns [keyBlock, keyBlock + columns) of
    /// `blocks`, renumbered from 0 (rows past the global mask's are empty). One mask in, one
    /// out: a per-head mask translates head by head.
    static func translate(_ blocks: BlockMask, queryBlock: Int, rows: Int, keyBlock: Int, columns: Int) -> BlockMask {
        blocks.cropped(queryBlocks: queryBlock..<(queryBlock + rows), keyBlocks: keyBlock..<(keyBlock + columns))
    }
}
