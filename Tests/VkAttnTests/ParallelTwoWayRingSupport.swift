import Testing
import VkAttn
import VkAttnParallel
import TestSupport

/// Bytes each of the first `n` ranks sends in one forward and one backward of `c` under
/// `scheme` (TokenRing and double-ring tests), with the op they ran.
func measuredTraffic(_ group: DeviceGroup, _ c: ParallelCase, ranks n: Int, sharding: SequenceSharding,
                     scheme: ContextParallelScheme) async throws -> (op: ContextParallelAttention, forward: [Int], backward: [Int]) {
    let plan = try ShardPlan(lengths: c.lengths, ranks: n, sharding: sharding)
    let op = ContextParallelAttention(plan: plan, scheme: scheme, attention: c.attention)
    let comms = try group.communicators(first: n)
    func tensors(_ x: [Float], heads: Int) throws -> [Tensor] {
        try comms.map { comm in
            try comm.device.makeTensor(plan.shard(x, width: heads * c.headDim, rank: comm.rank),
                                       shape: [plan.tokens(rank: comm.rank), heads, c.headDim], dtype: c.dtype)
        }
    }
    let q = try tensors(c.q, heads: c.headsQ), k = try tensors(c.k, heads: c.headsKV)
    let v = try tensors(c.v, heads: c.headsKV), dO = try tensors(c.dO, heads: c.headsQ)
    group.resetTraffic()
    let outs = try await op.forward(q: q, k: k, v: v, communicators: comms)
    let forward = group.traffic.prefix(n).map(\.bytesSent)
    group.resetTraffic()
    _ = try await op.backward(q: q, k: k, v: v, o: outs.map(\.output), lse: outs.compactMap(\.lse), dO: dO, communicators: comms)
    return (op, forward, group.traffic.prefix(n).map(\.bytesSent))
}

/// Runs `c` under `scheme` on the first `n` ranks of `group`, forward and backward, and
/// expects every output within the case's tolerance of the one-device `want`.
func expectMatchesOneDevice(_ group: DeviceGroup, _ c: ParallelCase, _ want: ParallelCase.Results, ranks n: Int,
                            sharding: SequenceSharding, scheme: ContextParallelScheme,
                            sourceLocation: SourceLocation = #_sourceLocation) async throws {
    let got = try await c.parallel(try group.communicators(first: n), sharding: sharding, scheme: scheme, backward: true)
    for (name, err) in ParallelCase.errors(got, want) {
        #expect(err <= c.tolerance, "\(name) error \(err), \(scheme) x\(n) \(sharding): \(c)", sourceLocation: sourceLocation)
    }
}
