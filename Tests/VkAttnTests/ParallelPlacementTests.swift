import Testing
import VkAttn
import VkAttnParallel
import TestSupport

/// The data-aware placement planner (`PlacementPlan`, `PlacementCostModel`) and
/// `PlacedAttention` forward and backward against the single-device kernel on long-tail
/// packed batches.
@Suite("Parallel: data-aware placement")
struct ParallelPlacementTests {
    static func model(causal: Bool = true, backward: Bool = false, ranksPerNode: Int = 8, intraNode: Double = 100e9,
                      interNode: Double = 25e9) throws -> PlacementCostModel {
        try PlacementCostModel(headsQ: 4, headsKV: 2, headDim: 32, causal: causal, backward: backward,
                               flopsPerSecond: 1e12, intraNodeBandwidth: intraNode, interNodeBandwidth: interNode, ranksPerNode: ranksPerNode)
    }

    /// Every sequence in exactly one group, every group's plan valid and inside the ranks, the
    /// local layouts a partition of the batch's tokens.
    static func expectConsistent(_ plan: PlacementPlan, _ what: String) throws {
        let placed = plan.groups.flatMap(\.sequences).sorted()
        #expect(placed == Array(plan.lengths.indices), "sequences placed \(placed): \(what)")
        for group in plan.groups {
            #expect(group.ranks.lowerBound >= 0 && group.ranks.upperBound <= plan.ranks && !group.ranks.isEmpty, "window \(group.ranks): \(what)")
            #expect(group.shardPlan.ranks == group.ranks.count && group.shardPlan.lengths == group.sequences.map { plan.lengths[$0] })
            // Re-making the plan throws where a rank of the group would hold no token.
            _ = try ShardPlan(lengths: group.shardPlan.lengths, ranks: group.shardPlan.ranks, sharding: group.shardPlan.sharding)
            for r in group.ranks where group.shardPlan.totalTokens > 0 {
                #expect(group.shardPlan.tokens(rank: r - group.ranks.lowerBound) > 0, "rank \(r) empty in \(group.ranks): \(what)")
            }
        }
        let tokens = (0..<plan.ranks).flatMap { plan.globalTokens(rank: $0) }.sorted()
        #expect(tokens == Array(0..<plan.totalTokens), "local layouts do not partition the tokens: \(what)")
        #expect((0..<plan.ranks).allSatisfy { plan.tokens(rank: $0) == plan.globalTokens(rank: $0).count })
    }

    @Test func groupsCoverEverySequenceOnceWithValidShardPlans() throws {
        var rng = SeededRandom(seed: testSeed())
        for ranks in 1...8 {
            for causal in [true, false] {
                let lengths = (0..<(1 + Int(rng.next() % 40))).map { _ in Int(rng.next() % 3 == 0 ? rng.next() % 4 : rng.next() % 3000) }
                let plan = try PlacementPlan(lengths: lengths, ranks: ranks, model: try Self.model(causal: causal, ranksPerNode: 4))
                try Self.expectConsistent(plan, "lengths \(lengths) ranks \(ranks) causal \(causal)")
                #expect(plan.predictedTimes.count == ranks && plan.predictedTimes.allSatisfy { $0 >= 0 })
            }
        }
    }

    /// The long tail: one long sequence, a few medium, many short. The placement keeps the
    /// short ones off the ring: its predicted span beats the naive plan's, its bytes are fewer,
    /// and its balance is close to the naive's (zigzag balances FLOPs exactly, so the naive
    /// plan's imbalance is 1 where lengths divide; it loses on traffic, not on balance). With
    /// links fast enough to hide every copy the two spans are equal.
    @Test func longTailBeatsTheNaivePlan() throws {
        let lengths = [8192] + [Int](repeating: 2048, count: 4) + [Int](repeating: 128, count: 32)
        for backward in [false, true] {
            let hidden = try Self.model(backward: backward)
            let fast = (try PlacementPlan(lengths: lengths, ranks: 4, model: hidden), try PlacementPlan.naive(lengths: lengths, ranks: 4, model: hidden))
            #expect(fast.0.predictedMakespan <= fast.1.predictedMakespan * (1 + 1e-9))
            let model = try Self.model(backward: backward, intraNode: 0.5e9)
            let placed = try PlacementPlan(lengths: lengths, ranks: 4, model: model)
            let naive = try PlacementPlan.naive(lengths: lengths, ranks: 4, model: model)
            try Self.expectConsistent(placed, "long tail")
            #expect(placed.predictedMakespan < naive.predictedMakespan, "placed \(placed.predictedMakespan) naive \(naive.predictedMakespan)")
            #expect((0..<4).map { placed.predictedBytes(rank: $0) }.max() ?? 0 < (0..<4).map { naive.predictedBytes(rank: $0) }.max() ?? 0)
            #expect(placed.predictedImbalance < 1.1, "imbalance \(placed.predictedImbalance)")
            #expect(naive.groups.count == 1 && naive.groups[0].shardPlan.sharding == .zigzag)
            // Another model's prediction keeps the groups and changes only the times.
            let again = placed.predicted(with: hidden)
            #expect(again.groups == placed.groups && again.model == hidden && again.predictedMakespan <= placed.predictedMakespan)
        }
        // A ragged long tail the naive zigzag cannot split evenly: the placement balances better.
        let ragged = [67, 13, 1, 29, 5, 0, 41]
        let model = try Self.model(intraNode: 0.5e9)
        let placed = try PlacementPlan(lengths: ragged, ranks: 4, model: model)
        let naive = try PlacementPlan.naive(lengths: ragged, ranks: 4, model: model)
        #expect(placed.predictedMakespan < naive.predictedMakespan)
        #expect(placed.predictedImbalance <= naive.predictedImbalance + 1e-9 || placed.predictedMakespan < naive.predictedMakespan)
    }

    @Test func equalShortSequencesStayWholeOnOneRank() throws {
        let plan = try PlacementPlan(lengths: [Int](repeating: 16, count: 12), ranks: 4, model: try Self.model())
        try Self.expectConsistent(plan, "12 x 16")
        #expect(plan.groups.allSatisfy { $0.isLocal })
        #expect(plan.groups.map(\.sequences.count) == [3, 3, 3, 3])
        #expect(abs(plan.predictedImbalance - 1) < 1e-9)
        #expect((0..<4).allSatisfy { plan.predictedBytes(rank: $0) == 0 })
    }

    @Test func oneLongSequenceSpansEveryRank() throws {
        for ranks in [2, 3, 4, 8] {
            let plan = try PlacementPlan(lengths: [1000], ranks: ranks, model: try Self.model())
            #expect(plan.groups.count == 1 && plan.groups[0].ranks == 0..<ranks && plan.groups[0].shardPlan.sharding == .zigzag)
            try Self.expectConsistent(plan, "1000 on \(ranks)")
        }
        // Fewer tokens than ranks: one token per rank of a smaller group, the rest idle.
        let short = try PlacementPlan(lengths: [3], ranks: 4, model: try Self.model())
        #expect(short.groups.count == 1 && short.groups[0].ranks == 0..<3 && short.groups[0].shardPlan.sharding == .contiguous)
        #expect(short.tokens(rank: 3) == 0 && short.predictedTime(rank: 3) == 0)
        try Self.expectConsistent(short, "3 on 4")
    }

    @Test func oneRankAndEmptySequences() throws {
        let one = try PlacementPlan(lengths: [5, 0, 9, 1], ranks: 1, model: try Self.model())
        #expect(one.groups.count == 1 && one.groups[0].isLocal && one.groups[0].sequences == [0, 1, 2, 3])
        try Self.expectConsistent(one, "one rank")
        for lengths in [[], [0], [0, 0, 0]] {
            let empty = try PlacementPlan(lengths: lengths, ranks: 3, model: try Self.model())
            try Self.expectConsistent(empty, "empty \(lengths)")
            #expect(empty.totalTokens == 0 && empty.predictedImbalance == 1 && empty.predictedMakespan == 0)
        }
        let mixed = try PlacementPlan(lengths: [0, 40, 0, 3], ranks: 2, model: try Self.model())
        try Self.expectConsistent(mixed, "with empty sequences")
    }

    /// Groups of a node's size land inside nodes; a group that must span nodes pays the slower link.
    @Test func ranksPerNodeKeepsGroupsInsideANode() throws {
        let model = try Self.model(ranksPerNode: 4, interNode: 1e9)
        let plan = try PlacementPlan(lengths: [1000, 1000], ranks: 8, model: model)
        try Self.expectConsistent(plan, "2 x 1000 on 2 nodes")
        #expect(plan.groups.count == 2 && plan.groups.allSatisfy { $0.ranks.count == 4 && model.isInsideNode($0.ranks) }, "\(plan.groups.map(\.ranks))")
        // Three ranks for one sequence: a window inside a node, not 2-4.
        let three = try PlacementPlan(lengths: [999, 999, 1], ranks: 6, model: try Self.model(ranksPerNode: 3, interNode: 1e9))
        #expect(three.groups.filter { !$0.isLocal }.allSatisfy { $0.ranks.count == 3 && ($0.ranks.lowerBound % 3 == 0) }, "\(three.groups.map(\.ranks))")
        #expect(model.bandwidth(2..<6) == 1e9 && model.bandwidth(4..<8) == 100e9)
    }

    @Test func badInputIsATypedError() throws {
        let model = try Self.model()
        #expect(throws: VkAttnError.self) { try PlacementPlan(lengths: [4, -1], ranks: 2, model: model) }
        #expect(throws: VkAttnError.self) { try PlacementPlan(lengths: [4], ranks: 0, model: model) }
        #expect(throws: VkAttnError.self) { try PlacementPlan(lengths: [Int(Int32.max), 1], ranks: 2, model: model) }
        #expect(throws: VkAttnError.self) { try PlacementPlan.naive(lengths: [1], ranks: 2, model: model) }
        #expect(throws: VkAttnError.self) { try PlacementCostModel(headsQ: 0, headsKV: 1, headDim: 8, causal: true) }
        #expect(throws: VkAttnError.self) { try PlacementCostModel(headsQ: 1, headsKV: 1, headDim: 8, elementBytes: 3, causal: true) }
        #expect(throws: VkAttnError.self) { try PlacementCostModel(headsQ: 1, headsKV: 1, headDim: 8, causal: true, flopsPerSecond: 0) }
        #expect(throws: VkAttnError.self) { try PlacementCostModel(headsQ: 1, headsKV: 1, headDim: 8, causal: true, interNodeBandwidth: .nan) }
        #expect(throws: VkAttnError.self) { try PlacementCostModel(headsQ: 1, headsKV: 1, headDim: 8, causal: true, ranksPerNode: 0) }
    }

    // MARK: PlacedAttention

    /// Shards a case by `plan`, runs PlacedAttention on every rank (outputs NaN-poisoned and
    /// fenced by guard words), unshards.
    static func placed(_ c: ParallelCase, plan: PlacementPlan, comms: [LocalCommunicator], scheme: ContextParallelScheme = .ring,
                       backward: Bool) async throws -> ParallelCase.Results {
        let op = PlacedAttention(plan: plan, scheme: scheme, attention: c.attention)
        let perRank = try await onEveryRank(comms) { comm -> [[Float]] in
            let r = comm.rank, device = comm.device, t = plan.tokens(rank: r)
            let hq = c.headsQ * c.headDim, hkv = c.headsKV * c.headDim
            func make(_ x: [Float], _ heads: Int) throws -> Tensor {
                try device.makeTensor(plan.shard(x, width: heads * c.headDim, rank: r), shape: [t, heads, c.headDim], dtype: c.dtype)
            }
            let q = try make(c.q, c.headsQ), k = try make(c.k, c.headsKV), v = try make(c.v, c.headsKV)
            let o = try Guarded(device, shape: [t, c.headsQ, c.headDim], dtype: c.dtype)
            let lse = try Guarded(device, shape: [c.headsQ, t], dtype: .f32)
            let out = try await op.forward(q: q, k: k, v: v, into: AttentionOutput(o: o.tensor, lse: lse.tensor), communicator: comm)
            #expect(out.path.hasPrefix("placed: ") || out.path == emptyInputPath, "path \(out.path)")
            try o.checkGuards("O rank \(r) \(c)")
            try lse.checkGuards("LSE rank \(r) \(c)")
            guard backward else { return [try o.tensor.readFloats(), try lse.tensor.readFloats()] }
            _ = hq + hkv
            let dO = try make(c.dO, c.headsQ)
            let dq = try Guarded(device, shape: [t, c.headsQ, c.headDim], dtype: c.dtype)
            let dk = try Guarded(device, shape: [t, c.headsKV, c.headDim], dtype: c.dtype)
            let dv = try Guarded(device, shape: [t, c.headsKV, c.headDim], dtype: c.dtype)
            _ = try await op.backward(q: q, k: k, v: v, o: o.tensor, lse: lse.tensor, dO: dO,
                                      into: AttentionGradients(dq: dq.tensor, dk: dk.tensor, dv: dv.tensor), communicator: comm)
            for (name, g) in [("dQ", dq), ("dK", dk), ("dV", dv)] { try g.checkGuards("\(name) rank \(r) \(c)") }
            return try [o, lse, dq, dk, dv].map { try $0.tensor.readFloats() }
        }
        let hq = c.headsQ * c.headDim, hkv = c.headsKV * c.headDim
        return ParallelCase.Results(o: plan.unshard(perRank.map { $0[0] }, width: hq, fill: .nan),
                                    lse: plan.unshardColumns(perRank.map { $0[1] }, heads: c.headsQ, fill: .nan),
                                    dq: backward ? plan.unshard(perRank.map { $0[2] }, width: hq, fill: .nan) : [],
                                    dk: backward ? plan.unshard(perRank.map { $0[3] }, width: hkv, fill: .nan) : [],
                                    dv: backward ? plan.unshard(perRank.map { $0[4] }, width: hkv, fill: .nan) : [])
    }

    static func expectMatches(_ c: ParallelCase, _ plan: PlacementPlan, group: DeviceGroup, scheme: ContextParallelScheme = .ring) async throws {
        let want = try c.single(group.devices[0], backward: true)
        let got = try await placed(c, plan: plan, comms: try group.communicators(first: plan.ranks), scheme: scheme, backward: true)
        for (name, err) in ParallelCase.errors(got, want) {
            #expect(err <= c.tolerance, "\(name) error \(err), ranks \(plan.ranks), groups \(plan.groups.map { $0.label(scheme: scheme) }): \(c)")
        }
    }

    @Test(arguments: [DType.f32, .f16])
    func placedMatchesOneDeviceOnALongTail(dtype: DType) async throws {
        let seed = testSeed()
        try await withGroup { group in
            for causal in [true, false] {
                let c = ParallelCase(seed: seed, lengths: [67, 13, 1, 29, 5, 0, 41], headsQ: 4, headsKV: 2, headDim: 32, causal: causal, dtype: dtype)
                for ranks in 1...4 {
                    let model = try PlacementCostModel(headsQ: 4, headsKV: 2, headDim: 32, elementBytes: dtype.byteSize, causal: causal)
                    let plan = try PlacementPlan(lengths: c.lengths, ranks: ranks, model: model)
                    try await Self.expectMatches(c, plan, group: group)
                }
            }
        }
    }

    /// The naive plan (one group of every rank), the all-gather scheme, an idle rank, MQA.
    @Test func naiveAllGatherIdleRankAndMQA() async throws {
        let seed = testSeed()
        try await withGroup { group in
            let c = ParallelCase(seed: seed, lengths: [23, 0, 7, 2], headsQ: 2, headsKV: 1, headDim: 32, causal: true)
            let model = try PlacementCostModel(headsQ: 2, headsKV: 1, headDim: 32, causal: true)
            try await Self.expectMatches(c, try PlacementPlan.naive(lengths: c.lengths, ranks: 3, model: model), group: group)
            try await Self.expectMatches(c, try PlacementPlan(lengths: c.lengths, ranks: 4, model: model), group: group,
                                         scheme: .allGather(headSlices: 1))
            let idle = ParallelCase(seed: seed &+ 1, lengths: [3], headsQ: 2, headsKV: 1, headDim: 32, causal: false)
            let plan = try PlacementPlan(lengths: idle.lengths, ranks: 4, model: model)
            #expect(plan.tokens(rank: 3) == 0)
            try await Self.expectMatches(idle, plan, group: group)
        }
    }

    @Test func placedRefusesBadConfigurationBeforePosting() async throws {
        try await withGroup(ranks: 2) { group in
            let comms = try group.communicators()
            let model = try PlacementCostModel(headsQ: 1, headsKV: 1, headDim: 32, causal: true)
            let plan = try PlacementPlan(lengths: [9, 4], ranks: 2, model: model)
            let shape = ContextParallelShape(headsQ: 1, headsKV: 1, headDim: 32, dtype: .f32)
            #expect(throws: VkAttnError.self) { try PlacedAttention(plan: plan, scheme: .allToAll).validate(shape, ranks: 2) }
            #expect(throws: VkAttnError.self) { try PlacedAttention(plan: plan).validate(shape, ranks: 3) }
            let op = PlacedAttention(plan: plan, attention: FlashAttention(mask: .causal))
            let wrong = try comms.map { try $0.device.makeTensor(shape: [5, 1, 32], dtype: .f32) }
            await #expect(throws: VkAttnError.self) { _ = try await op.forward(q: wrong, k: wrong, v: wrong, communicators: comms) }
        }
    }
}
