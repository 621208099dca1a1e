extension ContextParallelLinearAttention {
    /// Bytes of one scan value: a state row with its decay per key row, B H Dk (Dv + 1) fp32.
    /// - Parameter shape: batch, heads and head dimensions of the problem.
    /// - Returns: the bytes of one rank's (a, B).
    public static func valueBytes(_ shape: Shape) -> Int {
        shape.batch * shape.heads * shape.dk * (shape.dv + 1) * 4
    }

    /// Bytes rank `rank` of `lengths.count` sends in one call: LASP's chain and ZeCO's
    /// all-scan pass one value (`valueBytes`) per hop, from every rank but the last in the
    /// forward and every rank but the first in the backward (the state gradient flows
    /// back); LASP-2's all-gather sends the value to each of the N - 1 other ranks.
    /// - Parameters:
    ///   - rank: the rank, in 0..<lengths.count.
    ///   - shape: batch, heads and head dimensions of the problem.
    ///   - backward: the backward pass instead of the forward.
    /// - Returns: the bytes that rank sends (0 for a rank outside the group).
    public func expectedBytesSent(rank: Int, shape: Shape, backward: Bool) -> Int {
        let n = lengths.count, value = Self.valueBytes(shape)
        guard (0..<n).contains(rank) else { return 0 }
        switch scheme {
        case .lasp2:
            return (n - 1) * value
        case .lasp, .zeco:
            // The flow's last rank has no one to pass the prefix to.
            return (backward ? rank > 0 : rank < n - 1) ? value : 0
        case .ring, .tokenRing, .doubleRing, .allGather, .allToAll, .hierarchical:
            return 0  // not a linear scheme: validate refuses it
        }
    }

    /// Bytes the busiest rank sends per call by the papers' formulas (`expectedBytesSent`
    /// of that rank; forward and backward alike), in one communication step.
    /// - Parameter shape: batch, heads and head dimensions of the problem.
    /// - Returns: the busiest rank's bytes per call, one step, and the formula.
    public func expectedTraffic(shape: Shape) -> ExpectedTraffic {
        let n = lengths.count
        let value = Double(Self.valueBytes(shape))
        guard n > 1 else { return ExpectedTraffic(bytes: 0, steps: 1, formula: "one rank: no traffic") }
        switch scheme {
        case .lasp2:
            return ExpectedTraffic(bytes: Double(n - 1) * value, steps: 1,
                                   formula: "LASP-2: one all-gather, each rank sends its state to N-1 ranks: (N-1) B H Dk (Dv+1) 4 = \(Int(Double(n - 1) * value)) B")
        case .lasp:
            return ExpectedTraffic(bytes: value, steps: 1,
                                   formula: "LASP: a chain, each rank but the last (backward: the first) sends one state B H Dk (Dv+1) 4 = \(Int(value)) B")
        case let .zeco(segments):
            return ExpectedTraffic(bytes: value, steps: 1,
                                   formula: "ZeCO all-scan: a chain in \(segments) segments, each rank but the last (backward: the first) sends one state B H Dk (Dv+1) 4 = \(Int(value)) B")
        case .ring, .tokenRing, .doubleRing, .allGather, .allToAll, .hierarchical:
            return ExpectedTraffic(bytes: 0, steps: 0, formula: "\(scheme) is not a linear-attention scheme")
        }
    }
}
