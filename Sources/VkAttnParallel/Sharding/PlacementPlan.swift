import VkAttn

/// A data-aware placement of packed variable-length sequences on ranks (ByteScale, FlexSP):
/// each sequence runs on a group of consecutive ranks sized to its cost, short ones whole on
/// one rank, long ones split over several, so short sequences pay no ring traffic and the
/// predicted time (``PlacementCostModel``) is balanced across ranks.
///
/// Algorithm (greedy, longest processing time first): sequences by cost (their one-rank
/// compute time) descending; a sequence's group size g is the smallest in 1...min(ranks, L)
/// with cost / g at most the ideal per-rank load (total cost / ranks), else the largest; it
/// goes on the window of g consecutive ranks that minimises the window's largest load after
/// adding the sequence's predicted time there (so a window inside one node wins over one
/// across nodes by the slower link's cost; ties: inside a node, then the lowest rank). The
/// sequences on equal windows form one group with one ``ShardPlan`` (zigzag, for causal
/// balance, unless some sequence of the group has fewer than 2g tokens: contiguous; a window
/// of one rank is contiguous and runs as one local call). g <= L keeps every rank of a
/// group's plan with a token, so every group's plan is valid. Empty sequences join the first
/// group (they hold no token).
///
/// Execution order: ``groups`` in order (larger windows first, then by first rank); every rank
/// runs the groups it belongs to in that order, so no two ranks wait on each other in
/// opposite orders. A rank may belong to several groups, or to none (more ranks than the
/// batch needs).
///
/// Rank-local layout: the rank's groups one after another (in ``groups`` order), each group's
/// local tokens as its ``ShardPlan`` lays them out. Local Q, K, V, O are
/// [``tokens(rank:)``, heads, D] and LSE is [Hq, ``tokens(rank:)``].
public struct PlacementPlan: Hashable, Sendable, TokenLayout {
    /// Sequences on one window of consecutive ranks, run together by one context-parallel call.
    public struct Group: Hashable, Sendable {
        /// The group's ranks (of the whole communicator).
        public let ranks: Range<Int>
        /// Indices of the group's sequences in the global batch, ascending.
        public let sequences: [Int]
        /// The group's sequences split over its ranks (rank i of the plan is `ranks.lowerBound + i`).
        public let shardPlan: ShardPlan

        /// Whether the group is one rank's local call (no messages).
        public var isLocal: Bool { ranks.count == 1 }

        /// `[0-2]x1 seq ring zigzag` or `[3]x36 seq local`.
        /// - Parameter scheme: The exchange scheme the group runs (ignored for a local group).
        /// - Returns: The group as paths and the bench print it.
        public func label(scheme: ContextParallelScheme) -> String {
            let window = isLocal ? "[\(ranks.lowerBound)]" : "[\(ranks.lowerBound)-\(ranks.upperBound - 1)]"
            return "\(window)x\(sequences.count) seq " + (isLocal ? "local" : "\(scheme) \(shardPlan.sharding)")
        }
    }

    /// Tokens of each sequence of the global batch.
    public let lengths: [Int]
    /// The number of ranks.
    public let ranks: Int
    /// The model the placement balances and predicts with.
    public let model: PlacementCostModel
    /// The groups, in the global execution order.
    public let groups: [Group]
    /// Each rank's predicted seconds (see ``predictedTime(rank:)``).
    public let predictedTimes: [Double]

    /// The op name in errors.
    public static let opName = "parallel.placementPlan"

    /// The data-aware placement.
    /// - Parameters:
    ///   - lengths: Tokens of each sequence; non-negative (empty sequences allowed).
    ///   - ranks: The number of ranks; at least 1.
    ///   - model: The cost model.
    /// - Throws: `VkAttnError.invalidValue(op:operand:reason:)` for a negative length, a total
    ///   above Int32.max or fewer than 1 rank.
    public init(lengths: [Int], ranks: Int, model: PlacementCostModel) throws {
        try Self.check(lengths: lengths, ranks: ranks)
        let order = lengths.indices.filter { lengths[$0] > 0 }
            .sorted { (model.computeTime(length: lengths[$0]), $1) > (model.computeTime(length: lengths[$1]), $0) }
        let ideal = order.reduce(0.0) { $0 + model.computeTime(length: lengths[$1]) } / Double(ranks)
        var load = [Double](repeating: 0, count: ranks)
        var windows: [Range<Int>] = []
        var members: [Range<Int>: [Int]] = [:]
        for i in order {
            let length = lengths[i], cost = model.computeTime(length: length)
            let most = min(ranks, length)
            // Relative slack: cost / g and the ideal are sums of the same floating terms.
            let g = (1...most).first { cost / Double($0) <= ideal * (1 + 1e-9) } ?? most
            var best: (after: Double, across: Int, window: Range<Int>)?
            for s in 0...(ranks - g) {
                let w = s..<(s + g)
                let after = w.map { load[$0] }.max(by: <).map { $0 + model.groupTime(computeSeconds: cost / Double(g), tokens: length, window: w) } ?? 0
                let key = (after, model.isInsideNode(w) ? 0 : 1, s)
                if let b = best, (b.after, b.across, b.window.lowerBound) <= key { continue }
                best = (key.0, key.1, w)
            }
            guard let w = best?.window else {  // unreachable (g <= ranks), but never a silent drop
                throw VkAttnError.invalidValue(op: Self.opName, operand: "ranks", reason: "no window of \(g) ranks among \(ranks) for sequence \(i)")
            }
            let t = model.groupTime(computeSeconds: cost / Double(g), tokens: length, window: w)
            for r in w { load[r] += t }
            if members[w] == nil { windows.append(w) }
            members[w, default: []].append(i)
        }
        windows.sort { ($0.count, -$0.lowerBound) > ($1.count, -$1.lowerBound) }
        var lists = windows.map { members[$0, default: []] }
        let empty = lengths.indices.filter { lengths[$0] == 0 }
        if lists.isEmpty {
            windows = [0..<1]
            lists = [empty]
        } else {
            lists[0] += empty
        }
        let groups = try zip(windows, lists).map { w, list -> Group in
            let sorted = list.sorted()
            let seqLengths = sorted.map { lengths[$0] }
            let g = w.count
            let zigzag = g > 1 && seqLengths.allSatisfy { $0 == 0 || $0 >= 2 * g }
            return Group(ranks: w, sequences: sorted,
                         shardPlan: try ShardPlan(lengths: seqLengths, ranks: g, sharding: zigzag ? .zigzag : .contiguous))
        }
        self.init(lengths: lengths, ranks: ranks, model: model, groups: groups)
    }

    init(lengths: [Int], ranks: Int, model: PlacementCostModel, groups: [Group]) {
        self.lengths = lengths
        self.ranks = ranks
        self.model = model
        self.groups = groups
        predictedTimes = (0..<ranks).map { r in
            groups.filter { $0.ranks.contains(r) }.reduce(0.0) { total, group in
                let compute = model.flops(pairs: Self.pairs(group, localRank: r - group.ranks.lowerBound, causal: model.causal)) / model.flopsPerSecond
                return total + model.groupTime(computeSeconds: compute, tokens: group.shardPlan.totalTokens, window: group.ranks)
            }
        }
    }

    /// The naive plan: every sequence over every rank (one group, ``ShardPlan`` zigzag), the
    /// baseline the data-aware placement is compared with.
    /// - Parameters:
    ///   - lengths: Tokens of each sequence; non-negative.
    ///   - ranks: The number of ranks; at least 1.
    ///   - model: The cost model its predictions use.
    /// - Throws: `VkAttnError.invalidValue(op:operand:reason:)` as ``init(lengths:ranks:model:)``,
    ///   and as `ShardPlan` does for more ranks than tokens or a rank left without a token.
    public static func naive(lengths: [Int], ranks: Int, model: PlacementCostModel) throws -> PlacementPlan {
        try check(lengths: lengths, ranks: ranks)
        let plan = try ShardPlan(lengths: lengths, ranks: ranks, sharding: .zigzag)
        return PlacementPlan(lengths: lengths, ranks: ranks, model: model,
                             groups: [Group(ranks: 0..<ranks, sequences: Array(lengths.indices), shardPlan: plan)])
    }

    /// The same groups predicted with another model (the backward's beside the forward's).
    /// - Parameter model: The model to predict with; the groups are kept as they are.
    /// - Returns: The plan with ``model`` and ``predictedTimes`` of `model`.
    public func predicted(with model: PlacementCostModel) -> PlacementPlan {
        PlacementPlan(lengths: lengths, ranks: ranks, model: model, groups: groups)
    }

    static func check(lengths: [Int], ranks: Int) throws {
        let op = opName
        if let bad = lengths.firstIndex(where: { $0 < 0 }) {
            throw VkAttnError.invalidValue(op: op, operand: "lengths", reason: "sequence \(bad) has \(lengths[bad]) tokens; lengths must be non-negative")
        }
        let total = try Checked.sum(op: op, operand: "lengths", lengths)
        guard total <= Int(Int32.max) else {
            throw VkAttnError.invalidValue(op: op, operand: "lengths", reason: "\(total) tokens in all; 0 ... \(Int32.max) fit the packed layouts")
        }
        guard ranks >= 1 else {
            throw VkAttnError.invalidValue(op: op, operand: "ranks", reason: "\(ranks) must be at least 1")
        }
    }

    /// Query-key pairs the queries of `localRank` compute in `group` (its pieces' exact positions).
    static func pairs(_ group: Group, localRank: Int, causal: Bool) -> Double {
        let plan = group.shardPlan
        return plan.pieces(rank: localRank).reduce(0.0) { total, piece in
            total + plan.lengths.indices.reduce(0.0) { sum, b in
                let c = Double(piece.counts[b]), s = Double(piece.starts[b]), stride = Double(piece.stride)
                // Causal: position p sees p + 1 keys; the piece's positions are s + stride i.
                return sum + (causal ? c * (s + 1) + stride * c * (c - 1) / 2 : c * Double(plan.lengths[b]))
            }
        }
    }

    // MARK: Predictions

    /// A rank's predicted seconds: over its groups, its compute plus the ring copies the compute
    /// does not cover (``PlacementCostModel/groupTime(computeSeconds:tokens:window:)``).
    /// - Parameter rank: A rank in 0..<ranks.
    /// - Returns: Seconds; 0 for a rank without a group.
    public func predictedTime(rank: Int) -> Double { predictedTimes.indices.contains(rank) ? predictedTimes[rank] : 0 }

    /// The largest predicted rank time (the call's predicted span).
    public var predictedMakespan: Double { predictedTimes.max() ?? 0 }

    /// The largest predicted rank time over the mean (1 is perfect balance; 1 when nothing is computed).
    public var predictedImbalance: Double {
        let mean = predictedTimes.reduce(0, +) / Double(max(1, ranks))
        return mean > 0 ? predictedMakespan / mean : 1
    }

    /// Bytes a rank sends per call by the ring formula, summed over its groups: (g - 1) K/V
    /// blocks 2 (T / g) Hkv D b, and for the backward g fp32 dK/dV blocks 2 (T / g) Hkv D 4.
    /// - Parameter rank: A rank in 0..<ranks.
    /// - Returns: Bytes (an average block where T does not divide by g).
    public func predictedBytes(rank: Int) -> Double {
        groups.filter { $0.ranks.contains(rank) && !$0.isLocal }.reduce(0.0) { total, group in
            let g = Double(group.ranks.count)
            let block = 2 * Double(group.shardPlan.totalTokens) / g * Double(model.headsKV * model.headDim)
            return total + (g - 1) * block * Double(model.elementBytes) + (model.backward ? g * block * 4 : 0)
        }
    }

    // MARK: Layout

    /// Tokens of the whole batch.
    public var totalTokens: Int { lengths.reduce(0, +) }

    /// Global cumulative lengths (the packed layout of the whole batch).
    public var cuSeqlens: [Int32] { lengths.reduce(into: [Int32(0)]) { $0.append($0[$0.count - 1] + Int32($1)) } }

    /// The groups `rank` belongs to, in execution order, with where their tokens start in the
    /// rank's local layout.
    /// - Parameter rank: A rank in 0..<ranks.
    /// - Returns: (index into ``groups``, first local token, tokens) per group of the rank.
    public func localGroups(rank: Int) -> [(group: Int, offset: Int, tokens: Int)] {
        var offset = 0
        return groups.indices.compactMap { i in
            let group = groups[i]
            guard group.ranks.contains(rank) else { return nil }
            let t = group.shardPlan.tokens(rank: rank - group.ranks.lowerBound)
            defer { offset += t }
            return (i, offset, t)
        }
    }

    /// - Parameter rank: A rank in 0..<ranks.
    /// - Returns: The rank's local tokens over all of its groups.
    public func tokens(rank: Int) -> Int { localGroups(rank: rank).reduce(0) { $0 + $1.tokens } }

    /// The global token (index into the packed batch) of each local token of `rank`.
    /// - Parameter rank: A rank in 0..<ranks.
    /// - Returns: One global token index per local token, in local order.
    public func globalTokens(rank: Int) -> [Int] {
        let cu = cuSeqlens
        var out: [Int] = []
        for entry in localGroups(rank: rank) {
            let group = groups[entry.group]
            for piece in group.shardPlan.pieces(rank: rank - group.ranks.lowerBound) {
                for (b, sequence) in group.sequences.enumerated() {
                    for i in 0..<piece.counts[b] { out.append(Int(cu[sequence]) + piece.starts[b] + piece.stride * i) }
                }
            }
        }
        return out
    }

}
