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
