extension TreeDecode {
    /// Bytes one rank sends per call (Tree Attention, Shyam et al.): the all-reduce of
    /// max(LSE) (`queryRows` x 4 bytes), then of [num | den] (`queryRows` x (D + 1) x 4
    /// bytes). Recursive doubling sends the whole buffer once per exchange step among the
    /// largest power of two P <= N, and the busiest rank once more (the result back to a
    /// folded rank) when N > P. Steps: both all-reduces' (`steps`).
    /// - Parameters:
    ///   - ranks: N, the ranks of the group.
    ///   - queryRows: query rows times query heads (Tq Hq), the rows of one LSE.
    ///   - headDim: D.
    /// - Returns: the busiest rank's bytes per call, the exchange steps and the formula.
    public static func expectedTraffic(ranks: Int, queryRows: Int, headDim: Int) -> ExpectedTraffic {
        var p = 1
        while p * 2 <= ranks { p *= 2 }
        let sends = p.trailingZeroBitCount + (p < ranks ? 1 : 0)
        let rows = Double(queryRows)
        return ExpectedTraffic(bytes: Double(sends) * (rows * 4 + rows * Double(headDim + 1) * 4), steps: 2 * steps(ranks),
                               formula: "tree attention: all-reduce max of LSE (Tq Hq 4 B) and sum of [num | den] (Tq Hq (D+1) 4 B); the busiest rank sends each buffer log2 P times (+1 when N > P, P the largest power of two <= N)")
    }
}

extension TreeDecode {
    /// Bytes the busiest rank (a node's leader) sends per call with two-level all-reduces
    /// (`ranksPerNode` m, G = N / m nodes): per buffer, the all-reduce inside the node (log2 P_m
    /// sends, + 1 when m > P_m), the all-reduce between leaders (the same over G, between
    /// nodes: `interNodeBytes`), and m - 1 sends of the result inside the node.
    /// - Parameters:
    ///   - ranks: N, the ranks of the group.
    ///   - ranksPerNode: m, a divisor of N.
    ///   - queryRows: query rows times query heads (Tq Hq), the rows of one LSE.
    ///   - headDim: D.
    /// - Returns: the leader's bytes per call, with the inter-node share, the steps and the formula.
    public static func expectedTraffic(ranks: Int, ranksPerNode: Int, queryRows: Int, headDim: Int) -> ExpectedTraffic {
        func sends(_ n: Int) -> Double {
            var p = 1
            while p * 2 <= n { p *= 2 }
            return Double(p.trailingZeroBitCount + (p < n ? 1 : 0))
        }
        let m = max(1, ranksPerNode), g = max(1, ranks / m)
        let buffers = Double(queryRows) * 4 + Double(queryRows) * Double(headDim + 1) * 4
        let intra = (sends(m) + Double(m - 1)) * buffers, inter = sends(g) * buffers
        return ExpectedTraffic(bytes: intra + inter, steps: 2 * (steps(m) + steps(g) + (m > 1 ? 1 : 0)),
                               formula: "two-level tree attention: per buffer (LSE max Tq Hq 4 B, [num | den] Tq Hq (D+1) 4 B) the leader sends log2 P_m (+1) times in its node, log2 P_G (+1) times between nodes (inter-node), and m-1 copies of the result to its node",
                               interNodeBytes: inter)
    }
}
