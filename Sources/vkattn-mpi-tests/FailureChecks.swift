import VkAttn
import VkAttnParallel
import VkAttnMPI

/// Failure behaviour: one rank fails and every rank must end with an error naming it, not hang.
enum FailureChecks {
    /// Ring attention where rank `failing` passes a Q of the wrong shape: it throws a typed
    /// error before posting and aborts the group; the others have posted and must fail with
    /// `MPIError.peerFailed(rank: failing, ...)`.
    static func throwingRank(_ comm: MPICommunicator, failing: Int) async throws {
        let c = SchedulerCase(seed: 1, lengths: [40, 23], headsQ: 4, headsKV: 2, causal: true)
        let plan = try ShardPlan(lengths: c.lengths, ranks: comm.size, sharding: .zigzag)
        let cp = ContextParallelAttention(plan: plan, scheme: .ring, attention: c.attention)
        let device = comm.device, t = plan.tokens(rank: comm.rank)
        let qTokens = comm.rank == failing ? t + 1 : t
        let q = try device.makeTensor([Float](repeating: 0.1, count: qTokens * 4 * 32), shape: [qTokens, 4, 32])
        let k = try device.makeTensor([Float](repeating: 0.1, count: t * 2 * 32), shape: [t, 2, 32])
        _ = try await cp.forward(q: q, k: k, v: k, communicator: comm)
    }

    /// Rank `stalled` never takes part (it waits in a barrier); the others' receives time out
    /// (VKATTN_MPI_TIMEOUT), which aborts the group, so the stalled rank fails too.
    static func stalledRank(_ comm: MPICommunicator, stalled: Int) async throws {
        if comm.rank == stalled {
            try await comm.barrier()
            return
        }
        let device = comm.device, stream = try device.makeStream()
        let buffer = try device.makeBuffer(of: Float.self, count: 16)
        let request = try comm.receive(into: buffer.whole, from: stalled, tag: 7, on: stream)
        try await request.wait()
    }
}
