/// A split of a packed batch's tokens over ranks, as the host sees it: which global token each
/// local token of a rank is. `ShardPlan` (every sequence over every rank) and `PlacementPlan`
/// (each sequence on a group of ranks) share the host-side moves between the global packed
/// layout and the ranks' local ones through this protocol.
public protocol TokenLayout {
    /// Tokens of the whole packed batch.
    var totalTokens: Int { get }
    /// The global token (index into the packed batch) of each local token of `rank`.
    /// - Parameter rank: A rank of the layout.
    /// - Returns: One global token index per local token, in local order.
    func globalTokens(rank: Int) -> [Int]
}

extension TokenLayout {
    /// Rank `rank`'s rows of a global [totalTokens, width] array.
    /// - Parameters:
    ///   - global: totalTokens x width values.
    ///   - width: Values per token (heads x headDim).
    ///   - rank: The rank.
    /// - Returns: The rank's [localTokens, width] values.
    public func shard<T>(_ global: [T], width: Int, rank: Int) -> [T] {
        globalTokens(rank: rank).flatMap { global[($0 * width)..<(($0 + 1) * width)] }
    }

    /// The global [totalTokens, width] array from every rank's rows.
    /// - Parameters:
    ///   - locals: Each rank's [localTokens, width] values, in rank order.
    ///   - width: Values per token.
    ///   - fill: The value of tokens no rank holds.
    /// - Returns: The global [totalTokens, width] values.
    public func unshard<T>(_ locals: [[T]], width: Int, fill: T) -> [T] {
        var out = [T](repeating: fill, count: totalTokens * width)
        for (rank, local) in locals.enumerated() {
            for (i, g) in globalTokens(rank: rank).enumerated() {
                out[(g * width)..<((g + 1) * width)] = local[(i * width)..<((i + 1) * width)]
            }
        }
        return out
    }

    /// Rank `rank`'s columns of a global [heads, totalTokens] array (LSE).
    /// - Parameters:
    ///   - global: heads x totalTokens values.
    ///   - heads: Rows of the array.
    ///   - rank: The rank.
    /// - Returns: The rank's [heads, localTokens] values.
    public func shardColumns<T>(_ global: [T], heads: Int, rank: Int) -> [T] {
        let tokens = globalTokens(rank: rank), total = totalTokens
        return (0..<heads).flatMap { h in tokens.map { global[h * total + $0] } }
    }

    /// The global [heads, totalTokens] array from every rank's [heads, localTokens] columns.
    /// - Parameters:
    ///   - locals: Each rank's [heads, localTokens] values, in rank order.
    ///   - heads: Rows of the array.
    ///   - fill: The value of tokens no rank holds.
    /// - Returns: The global [heads, totalTokens] values.
    public func unshardColumns<T>(_ locals: [[T]], heads: Int, fill: T) -> [T] {
        let total = totalTokens
        var out = [T](repeating: fill, count: heads * total)
        for (rank, local) in locals.enumerated() {
            let tokens = globalTokens(rank: rank)
            for h in 0..<heads {
                for (i, g) in tokens.enumerated() { out[h * total + g] = local[h * tokens.count + i] }
            }
        }
        return out
    }
}
