import VkAttnParallel

extension MPICommunicator {
    /// Bytes rank `rank` hands to MPI in one call of `op` on this backend: LASP's chain and
    /// ZeCO's all-scan stay point to point (`op.expectedBytesSent`); LASP-2's all-scan is one
    /// MPI_Iexscan to which every rank hands its one value (`valueBytes`), however Open MPI
    /// then moves it (for N > 1; a single rank's call is not counted here).
    /// - Parameters:
    ///   - op: the linear-attention scheduler.
    ///   - rank: the rank, in 0..<op.lengths.count.
    ///   - shape: batch, heads and head dimensions of the problem.
    ///   - backward: the backward pass instead of the forward.
    /// - Returns: the bytes that rank hands to MPI.
    public static func expectedBytesSent(of op: ContextParallelLinearAttention, rank: Int,
                                         shape: ContextParallelLinearAttention.Shape, backward: Bool) -> Int {
        guard case .lasp2 = op.scheme else { return op.expectedBytesSent(rank: rank, shape: shape, backward: backward) }
        return ContextParallelLinearAttention.valueBytes(shape)
    }

    /// The bytes one rank hands to MPI per call of `op`, with the papers' formulas beside
    /// them: as `op.expectedTraffic` except LASP-2, whose MPI_Iexscan takes one value per
    /// rank, which Open MPI's libnbc forwards as a chain (linear, its default: one value per
    /// hop, N - 1 hops) or by recursive doubling (OMPI_MCA_coll_libnbc_iexscan_algorithm=2:
    /// ceil(log2 N) values per rank); the paper's all-gather sends N - 1 values per rank.
    /// - Parameters:
    ///   - op: the linear-attention scheduler.
    ///   - shape: batch, heads and head dimensions of the problem.
    /// - Returns: the busiest rank's bytes per call, one step, and the formula.
    public static func expectedTraffic(of op: ContextParallelLinearAttention, shape: ContextParallelLinearAttention.Shape) -> ExpectedTraffic {
        guard case .lasp2 = op.scheme else { return op.expectedTraffic(shape: shape) }
        let n = op.lengths.count, value = ContextParallelLinearAttention.valueBytes(shape)
        // ceil(log2 N) for N > 1.
        let rounds = n > 1 ? Int.bitWidth - (n - 1).leadingZeroBitCount : 0
        return ExpectedTraffic(
            bytes: Double(value), steps: 1,
            formula: "LASP-2 on MPI_Iexscan: each rank hands MPI one state B H Dk (Dv+1) 4 = \(value) B; Open MPI's "
                + "libnbc moves it as a chain (default: N-1 hops of \(value) B) or by recursive doubling (\(rounds) x \(value) B per rank); "
                + "the paper's all-gather: (N-1) states = \((n - 1) * value) B per rank")
    }
}
