import VkAttn
/// How the tokens of each sequence are divided among the ranks of a context-parallel group.
public enum SequenceSharding: String, Sendable, Hashable, Codable, CaseIterable {
    /// Rank r holds the r-th of N consecutive chunks (simple, unbalanced under a causal mask).
    case contiguous
    /// 2N chunks; rank r holds chunks r and 2N-1-r, so every rank gets the same causal work
    /// (Megatron / TransformerEngine load balancing).
    case zigzag
    /// Rank r holds positions r, r + N, r + 2N, ... (Striped Attention).
    case striped
}

/// The positions of every sequence that one piece of a shard holds: for sequence b,
/// `starts[b] + stride * i` for i in 0..<counts[b]. A rank's shard is a list of pieces; a
/// piece is one packed attention operand ([tokens, heads, headDim] with `cuSeqlens`).
public struct SequencePiece: Hashable, Sendable {
    /// Per sequence, the first position the piece holds.
    public let starts: [Int]
    /// Per sequence, the number of positions the piece holds (may be 0).
    public let counts: [Int]
    /// The distance between consecutive positions: 1 for chunks, N for striped.
    public let stride: Int

    /// Tokens in the piece, over every sequence.
    public var tokens: Int { counts.reduce(0, +) }

    /// Cumulative counts (batch + 1 entries), the packed layout's cu_seqlens.
    public var cuSeqlens: [Int32] { counts.reduce(into: [Int32(0)]) { $0.append($0[$0.count - 1] + Int32($1)) } }
}

/// A global problem (packed sequences of `lengths` tokens; a dense batch is the case of equal
/// lengths) split over `ranks` ranks by `sharding`.
///
/// Rank-local layout: the rank's pieces one after another, each piece its sequences one after
/// another, each sequence's positions in increasing order. Local Q, K, V, O are
/// [localTokens, heads, headDim] and LSE is [Hq, localTokens] (the packed attention layouts).
/// Lengths that do not divide evenly give chunks that differ by one token (no padding tokens
/// are computed or sent); a rank may hold no token of some sequence.
public struct ShardPlan: Hashable, Sendable, TokenLayout {
    /// Tokens of each sequence of the global problem.
    public let lengths: [Int]
    /// The number of ranks.
    public let ranks: Int
    /// How the sequences are divided.
    public let sharding: SequenceSharding

    /// - Parameters:
    ///   - lengths: Tokens of each sequence; non-negative (empty sequences allowed). No
    ///     sequence, or none with a token, is the empty problem: every rank holds no token and
    ///     the ops return at once (see "Empty inputs" in docs/PARALLEL.md).
    ///   - ranks: The number of ranks; at least 1.
    ///   - sharding: How the sequences are divided.
    /// - Throws: `VkAttnError.invalidValue(op:operand:reason:)` for a negative length, a total
    ///   above Int32.max, a rank count below 1 or (with tokens) above the total, or a split
    ///   that leaves a rank without a token while others have some.
    public init(lengths: [Int], ranks: Int, sharding: SequenceSharding) throws {
        let op = "parallel.shardPlan"
        guard lengths.allSatisfy({ $0 >= 0 }) else {
            throw VkAttnError.invalidValue(op: op, operand: "lengths", reason: "\(lengths.prefix(8)) must be non-negative")
        }
        // Packed layouts count tokens in 32-bit cu_seqlens.
        let total = try Checked.sum(op: op, operand: "lengths", lengths)
        guard total <= Int(Int32.max) else {
            throw VkAttnError.invalidValue(op: op, operand: "lengths", reason: "\(total) tokens in all; 0 ... \(Int32.max) fit the packed layouts")
        }
        // No token at all is the empty problem (every rank holds nothing, on any number of ranks).
        guard ranks >= 1, total == 0 || ranks <= total else {
            throw VkAttnError.invalidValue(op: op, operand: "ranks", reason: "\(ranks) must be between 1 and the \(total) tokens")
        }
        self.lengths = lengths
        self.ranks = ranks
        self.sharding = sharding
        for r in 0..<ranks where total > 0 && tokens(rank: r) == 0 {
            throw VkAttnError.invalidValue(op: op, operand: "lengths", reason: "\(lengths.reduce(0, +)) tokens leave rank \(r) of \(ranks) without a token under \(sharding) sharding (a rank may hold nothing only when every rank does: the schedules pair every rank's queries with keys)")
        }
    }

    /// Global cumulative lengths (the packed layout of the whole problem).
    public var cuSeqlens: [Int32] { lengths.reduce(into: [Int32(0)]) { $0.append($0[$0.count - 1] + Int32($1)) } }
    /// Tokens of the whole problem.
    public var totalTokens: Int { lengths.reduce(0, +) }

    /// Chunk k of n of a sequence of length `length`: [k L / n, (k + 1) L / n).
    static func chunk(_ k: Int, of n: Int, length: Int) -> (start: Int, count: Int) {
        let start = k * length / n
        return (start, (k + 1) * length / n - start)
    }

    /// A rank's shard: one piece for contiguous and striped sharding, two for zigzag.
    /// - Parameter r: A rank in 0..<ranks.
    /// - Returns: The pieces, in local order.
    public func pieces(rank r: Int) -> [SequencePiece] {
        func chunkPiece(_ k: Int, of n: Int) -> SequencePiece {
            let chunks = lengths.map { Self.chunk(k, of: n, length: $0) }
            return SequencePiece(starts: chunks.map(\.start), counts: chunks.map(\.count), stride: 1)
        }
        switch sharding {
        case .contiguous:
            return [chunkPiece(r, of: ranks)]
        case .zigzag:
            return [chunkPiece(r, of: 2 * ranks), chunkPiece(2 * ranks - 1 - r, of: 2 * ranks)]
        case .striped:
            return [SequencePiece(starts: lengths.map { _ in r }, counts: lengths.map { max(0, ($0 - r + ranks - 1) / ranks) }, stride: ranks)]
        }
    }

    /// - Parameter rank: A rank in 0..<ranks.
    /// - Returns: The rank's local tokens.
    public func tokens(rank: Int) -> Int { pieces(rank: rank).reduce(0) { $0 + $1.tokens } }

    /// The global token (index into the packed global problem) of each local token of `rank`.
    /// - Parameter rank: A rank in 0..<ranks.
    /// - Returns: One global token index per local token, in local order.
    public func globalTokens(rank: Int) -> [Int] {
        let cu = cuSeqlens
        var out: [Int] = []
        for piece in pieces(rank: rank) {
            for b in lengths.indices {
                for i in 0..<piece.counts[b] { out.append(Int(cu[b]) + piece.starts[b] + piece.stride * i) }
            }
        }
        return out
    }

}

extension ShardPlan {
    /// The key pieces (rank, piece index) of other ranks that some query of `rank` attends
    /// (under a causal mask: only pieces with positions before its queries): what the
    /// all-gather scheme moves to `rank`.
    /// - Parameters:
    ///   - rank: The rank whose queries attend.
    ///   - causal: Whether the mask is causal.
    /// - Returns: The (rank, piece index) pairs, by source rank.
    /// - Throws: `VkAttnError.unsupported(op:reason:)` for a piece pair the schedules cannot
    ///   express (see ``keyPieces(neededBy:mask:)``).
    public func keyPieces(neededBy rank: Int, causal: Bool) throws -> [(rank: Int, piece: Int)] {
        try keyPieces(neededBy: rank, mask: causal ? .causal : .none)
    }

    /// The key pieces (rank, piece index) of other ranks that some query of `rank` attends
    /// under `mask` (a piece whose every (query, key) pair the mask removes is left out):
    /// what the all-gather scheme moves to `rank`.
    /// - Parameters:
    ///   - rank: The rank whose queries attend.
    ///   - mask: The global mask (causal, sliding window, block mask; bottom-right anchor and
    ///     no diagonal offset, as `ContextParallelAttention.validate` requires).
    /// - Returns: The (rank, piece index) pairs, by source rank.
    /// - Throws: `VkAttnError.unsupported(op:reason:)` for a piece pair the schedules cannot
    ///   express: a block mask with striped sharding, or a chunk whose start is not a multiple
    ///   of the block size (docs/PARALLEL.md, "Masks across ranks").
    public func keyPieces(neededBy rank: Int, mask: AttentionMask) throws -> [(rank: Int, piece: Int)] {
        let mine = pieces(rank: rank)
        var out: [(Int, Int)] = []
        for source in 0..<ranks where source != rank {
            for (c, key) in pieces(rank: source).enumerated() where key.tokens > 0 {
                let attended = try mine.contains { query in
                    if case .skip = try PieceRelation.between(query: query, key: key, mask: mask) { return false }
                    return true
                }
                if attended { out.append((source, c)) }
            }
        }
        return out
    }
}
