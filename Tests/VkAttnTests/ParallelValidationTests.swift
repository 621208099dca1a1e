import Testing
import VkAttn
import VkAttnParallel
import TestSupport

/// Bad configurations are typed errors, thrown before anything is posted or dispatched; the
/// group stays usable afterwards.
@Suite("Parallel: bad configurations")
struct ParallelValidationTests {
    static func tensors(_ comms: [LocalCommunicator], plan: ShardPlan, hq: Int, hkv: Int, d: Int = 32,
                        extraToken: Int? = nil) throws -> (q: [Tensor], k: [Tensor], v: [Tensor]) {
        var q: [Tensor] = [], k: [Tensor] = [], v: [Tensor] = []
        for comm in comms {
            let t = plan.tokens(rank: comm.rank) + (comm.rank == extraToken ? 1 : 0)
            q.append(try comm.device.makeTensor(shape: [t, hq, d], dtype: .f32))
            k.append(try comm.device.makeTensor(shape: [t, hkv, d], dtype: .f32))
            v.append(try comm.device.makeTensor(shape: [t, hkv, d], dtype: .f32))
        }
        return (q, k, v)
    }

    static func expectError(_ cp: ContextParallelAttention, _ comms: [LocalCommunicator], hq: Int, hkv: Int,
                            extraToken: Int? = nil, _ check: (VkAttnError) -> Bool, _ what: String) async throws {
        let t = try tensors(comms, plan: cp.plan, hq: hq, hkv: hkv, extraToken: extraToken)
        do {
            _ = try await cp.forward(q: t.q, k: t.k, v: t.v, communicators: comms)
            Issue.record("\(what): no error")
        } catch let error as VkAttnError {
            #expect(check(error), "\(what): \(error)")
        }
    }

    @Test func badConfigurationsAreTypedErrorsAndLeaveTheGroupUsable() async throws {
        try await withGroup { group in
            let comms = try group.communicators()
            let plan = try ShardPlan(lengths: [64], ranks: 4, sharding: .zigzag)
            func isValue(_ operand: String) -> (VkAttnError) -> Bool {
                { if case let .invalidValue(_, o, _) = $0 { return o == operand } else { return false } }
            }
            let unsupported: (VkAttnError) -> Bool = { if case .unsupported = $0 { return true } else { return false } }
            try await Self.expectError(ContextParallelAttention(plan: plan, scheme: .allToAll), comms, hq: 5, hkv: 5,
                                       isValue("heads"), "5 heads over 4 ranks")
            try await Self.expectError(ContextParallelAttention(plan: plan, scheme: .allToAll), comms, hq: 12, hkv: 3,
                                       isValue("kvHeads"), "3 KV heads over 4 ranks")
            try await Self.expectError(ContextParallelAttention(plan: plan, scheme: .hierarchical(ulysses: 3)), comms, hq: 6, hkv: 6,
                                       isValue("ulysses"), "ulysses 3 of 4 ranks")
            try await Self.expectError(ContextParallelAttention(plan: plan, scheme: .allGather(headSlices: 3)), comms, hq: 4, hkv: 2,
                                       isValue("headSlices"), "3 slices of 2 KV heads")
            // Windows and block masks run (ParallelMaskTests); what stays refused: a global anchor or
            // offset, a block mask with striped sharding, chunks off the block boundaries.
            try await Self.expectError(ContextParallelAttention(plan: plan, attention: FlashAttention(mask: AttentionMask(causal: true, diagonalOffset: 3))),
                                       comms, hq: 2, hkv: 2, unsupported, "diagonal offset")
            let blocks = BlockMask(blockSize: 16, queryBlocks: 4, keyBlocks: 4) { r, c in c <= r }
            try await Self.expectError(ContextParallelAttention(plan: try ShardPlan(lengths: [64], ranks: 4, sharding: .striped),
                                                                attention: FlashAttention(mask: AttentionMask(blocks: blocks))),
                                       comms, hq: 2, hkv: 2, unsupported, "block mask, striped")
            try await Self.expectError(ContextParallelAttention(plan: plan, attention: FlashAttention(mask: AttentionMask(blocks: blocks))),
                                       comms, hq: 2, hkv: 2, unsupported, "block mask, zigzag chunks of 8 tokens")
            try await Self.expectError(ContextParallelAttention(plan: try ShardPlan(lengths: [64], ranks: 2, sharding: .zigzag)),
                                       comms, hq: 2, hkv: 2, isValue("ranks"), "plan for 2 ranks on 4")
            try await Self.expectError(ContextParallelAttention(plan: plan), comms, hq: 2, hkv: 2, extraToken: 2,
                                       { if case let .shapeMismatch(_, o, _, _) = $0 { return o == "Q" } else { return false } }, "rank 2 Q too long")
            #expect(throws: VkAttnError.self) { try ShardPlan(lengths: [5], ranks: 4, sharding: .zigzag) }
            #expect(throws: VkAttnError.self) { try ShardPlan(lengths: [-1, 4], ranks: 2, sharding: .striped) }
            #expect(group.abortError == nil, "a typed error before dispatch must not abort the group")
            // The group still works.
            let t = try Self.tensors(comms, plan: plan, hq: 2, hkv: 2)
            for (i, x) in (t.q + t.k + t.v).enumerated() { try x.write(floats: [Float](repeating: Float(i % 3) / 4, count: x.elementCount)) }
            let out = try await ContextParallelAttention(plan: plan).forward(q: t.q, k: t.k, v: t.v, communicators: comms)
            #expect(out.count == 4)
        }
    }

    @Test func treeDecodeRejectsMasksAndGroupsRejectZeroRanks() async throws {
        #expect(throws: VkAttnError.self) { try DeviceGroup(ranks: 0) }
        try await withGroup(ranks: 2) { group in
            let comm = try group.communicators()[0]
            let q = try comm.device.makeTensor(shape: [1, 1, 2, 32], dtype: .f32)
            await #expect(throws: VkAttnError.self) {
                _ = try await TreeDecode(attention: FlashAttention(mask: .causal)).decode(q: q, kCache: q, vCache: q, communicator: comm)
            }
            #expect(group.abortError == nil)
        }
    }
}

extension ParallelValidationTests {
    /// SPMD calls: one rank's bad tensor is its typed error, and the abort it causes frees
    /// the peer that already posted (no hang).
    @Test func aRankWithABadTensorAbortsItsPeersInsteadOfHangingThem() async throws {
        try await withGroup(ranks: 2) { group in
            let comms = try group.communicators()
            let plan = try ShardPlan(lengths: [40], ranks: 2, sharding: .zigzag)
            let t = try Self.tensors(comms, plan: plan, hq: 2, hkv: 2, extraToken: 1)
            let cp = ContextParallelAttention(plan: plan, attention: FlashAttention(mask: .causal))
            let outcomes = await withTaskGroup(of: (Int, String).self) { tasks in
                for comm in comms {
                    tasks.addTask {
                        do {
                            _ = try await cp.forward(q: t.q[comm.rank], k: t.k[comm.rank], v: t.v[comm.rank], communicator: comm)
                            return (comm.rank, "ok")
                        } catch let error as VkAttnError {
                            return (comm.rank, "\(error)")
                        } catch {
                            return (comm.rank, "other: \(error)")
                        }
                    }
                }
                var out = ["", ""]
                for await (rank, text) in tasks { out[rank] = text }
                return out
            }
            #expect(outcomes[1].contains("Q has shape"), "\(outcomes)")
            #expect(outcomes[0] != "ok", "rank 0 finished although rank 1 never took part: \(outcomes)")
            #expect(group.abortError != nil)
        }
    }
}
