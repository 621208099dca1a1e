import Testing
import VkAttn
import VkAttnParallel
import TestSupport

/// Zero-sized problems across ranks (issue #17, item 5; docs/PARALLEL.md, "Empty inputs"):
/// every context-parallel op family on 1...4 ranks returns at once on every rank with its
/// empty (or zero) outputs, the path `empty (no kernel)`, and sends nothing.
@Suite("Zero-sized inputs across ranks")
struct ParallelEmptyInputTests {
    static let empty = "empty (no kernel)"

    static func expectNothingSent(_ group: DeviceGroup, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        for comm in try group.communicators() {
            #expect(comm.traffic.bytesSent == 0 && comm.traffic.messagesSent == 0,
                    "\(what): rank \(comm.rank) sent \(comm.traffic.bytesSent) bytes", sourceLocation: sourceLocation)
        }
    }

    @Test func softmaxSchemesOfNothing() async throws {
        for ranks in 1...4 {
            try await withGroup(ranks: ranks) { group in
                let comms = try group.communicators()
                let schemes: [ContextParallelScheme] = [.ring, .allGather(headSlices: 1), .allToAll, .hierarchical(ulysses: 1), .tokenRing,
                                                        .doubleRing(ranksPerNode: 1)]
                // (lengths, Hq, Hkv): no token in the plan (batch 0, or empty sequences), or no query heads.
                for (lengths, hq, hkv) in [([Int](), 12, 12), ([0, 0], 24, 12), ([8 * ranks], 0, 12), ([3 * ranks, 5], 0, 0)] {
                    for scheme in schemes {
                        for sharding in SequenceSharding.allCases {
                            let plan = try ShardPlan(lengths: lengths, ranks: ranks, sharding: sharding)
                            let op = ContextParallelAttention(plan: plan, scheme: scheme, attention: FlashAttention(mask: .causal))
                            #expect(op.isEmpty(ContextParallelShape(headsQ: hq, headsKV: hkv, headDim: 32, dtype: .f32)))
                            let what = "\(ranks) ranks \(lengths) Hq \(hq) Hkv \(hkv) \(scheme) \(sharding)"
                            func t(_ r: Int, _ h: Int) throws -> Tensor { try comms[r].device.makeTensor(shape: [plan.tokens(rank: r), h, 32], dtype: .f32) }
                            let q = try comms.indices.map { try t($0, hq) }, k = try comms.indices.map { try t($0, hkv) }
                            let v = try comms.indices.map { try t($0, hkv) }
                            let out = try await op.forward(q: q, k: k, v: v, communicators: comms)
                            for (r, o) in out.enumerated() {
                                #expect(o.path == Self.empty && o.output.isEmpty && (o.lse?.isEmpty ?? false), "\(what) rank \(r)")
                            }
                            let dO = try comms.indices.map { try t($0, hq) }
                            let grads = try await op.backward(q: q, k: k, v: v, o: out.map(\.output), lse: out.compactMap(\.lse), dO: dO,
                                                              communicators: comms)
                            for (r, g) in grads.enumerated() {
                                #expect(g.path == Self.empty && g.dq.isEmpty, "\(what) rank \(r)")
                                // dK, dV of keys that no query head saw: zero (fills), not garbage.
                                #expect(try (g.dk.readFloats() + g.dv.readFloats()).allSatisfy { $0 == 0 }, "\(what) rank \(r) dK/dV")
                                #expect(g.dk.shape == [plan.tokens(rank: r), hkv, 32])
                            }
                        }
                    }
                }
                try Self.expectNothingSent(group, "softmax \(ranks) ranks")
                #expect(group.abortError == nil)
            }
        }
    }

    @Test func shardPlansOfNothing() throws {
        for sharding in SequenceSharding.allCases {
            for (lengths, ranks) in [([Int](), 3), ([0, 0, 0], 4), ([0], 1)] {
                let plan = try ShardPlan(lengths: lengths, ranks: ranks, sharding: sharding)
                #expect(plan.totalTokens == 0 && (0..<ranks).allSatisfy { plan.tokens(rank: $0) == 0 } && plan.cuSeqlens.last == 0)
                #expect(plan.unshard([[Float]](repeating: [], count: ranks), width: 4, fill: 0) == [])
            }
            // A rank without a token while others have some stays a typed error.
            #expect(throws: VkAttnError.self) { try ShardPlan(lengths: [3], ranks: 4, sharding: sharding) }
            #expect(throws: VkAttnError.self) { try ShardPlan(lengths: [-1, 1], ranks: 1, sharding: sharding) }
        }
    }

    @Test func treeDecodeOfNothingAndShardsWithoutKeys() async throws {
        for ranks in 1...4 {
            try await withGroup(ranks: ranks) { group in
                let comms = try group.communicators()
                // No query rows (batch 0, no query heads, no queries): every rank returns at once.
                for (qShape, kShape) in [([0, 1, 2, 32], [0, 4, 2, 32]), ([2, 1, 0, 32], [2, 4, 2, 32]), ([2, 0, 2, 32], [2, 4, 2, 32])] {
                    let outs = try await onEveryRank(comms) { comm in
                        let dev = comm.device
                        return try await TreeDecode().decode(q: dev.makeTensor(shape: qShape, dtype: .f32), kCache: dev.makeTensor(shape: kShape, dtype: .f32),
                                                             vCache: dev.makeTensor(shape: kShape, dtype: .f32), communicator: comm)
                    }
                    for o in outs { #expect(o.path == Self.empty && o.output.isEmpty && (o.lse?.isEmpty ?? false), "\(ranks) ranks \(qShape)") }
                }
                try Self.expectNothingSent(group, "tree decode \(ranks) ranks")
                // No rank holds a cached key: every rank joins the all-reduces; O = 0, LSE = -inf.
                let outs = try await onEveryRank(comms) { comm in
                    let dev = comm.device
                    let out = try await TreeDecode().decode(q: dev.makeTensor([Float](repeating: 0.5, count: 2 * 2 * 32), shape: [2, 1, 2, 32]),
                                                            kCache: dev.makeTensor(shape: [2, 0, 2, 32], dtype: .f32),
                                                            vCache: dev.makeTensor(shape: [2, 0, 2, 32], dtype: .f32), communicator: comm)
                    return (try out.output.readFloats(), try out.lse?.readFloats() ?? [])
                }
                for (o, lse) in outs {
                    #expect(o.allSatisfy { $0 == 0 } && o.count == 128, "\(ranks) ranks: O of no keys")
                    #expect(lse.allSatisfy { $0 == -.infinity } && lse.count == 4, "\(ranks) ranks: LSE of no keys")
                }
            }
        }
    }

    @Test func starAttentionOfNothing() async throws {
        for ranks in 1...4 {
            try await withGroup(ranks: ranks) { group in
                let comms = try group.communicators()
                for (star, hq) in [(try StarAttention(context: ContiguousSplit(total: 0, ranks: ranks), queryLength: 0), 2),
                                   (try StarAttention(context: ContiguousSplit(total: 4 * ranks, ranks: ranks), queryLength: 3), 0)] {
                    let shape = ContextParallelShape(headsQ: hq, headsKV: 2, headDim: 32, dtype: .f32)
                    #expect(star.isEmpty(shape))
                    let out = try await onEveryRank(comms) { comm in
                        let dev = comm.device, t = star.tokens(rank: comm.rank)
                        return try await star.forward(q: dev.makeTensor(shape: [t, hq, 32], dtype: .f32), k: dev.makeTensor(shape: [t, 2, 32], dtype: .f32),
                                                      v: dev.makeTensor(shape: [t, 2, 32], dtype: .f32), communicator: comm)
                    }
                    for o in out { #expect(o.path == Self.empty && o.output.isEmpty && (o.lse?.isEmpty ?? false), "star \(ranks) ranks Hq \(hq)") }
                }
                try Self.expectNothingSent(group, "star \(ranks) ranks")
            }
        }
    }

    @Test func linearAttentionOfNothing() async throws {
        for ranks in 1...4 {
            try await withGroup(ranks: ranks) { group in
                let comms = try group.communicators()
                // (B, H, Dk, Dv, tokens per rank): an empty state [B, H, Dk, Dv]; ranks may hold no tokens.
                for (b, h, dk, dv, l) in [(0, 2, 16, 16, 4), (2, 0, 16, 16, 3), (1, 2, 0, 16, 5), (1, 2, 16, 0, 0)] {
                    for scheme in [ContextParallelScheme.lasp, .lasp2, .zeco(segments: 2)] {
                        for gating in [GatedLinearAttention.Gating.none, .perHead, .perKey] {
                            let op = ContextParallelLinearAttention(lengths: [Int](repeating: l, count: ranks), scheme: scheme,
                                                                    attention: GatedLinearAttention(gating: gating))
                            let what = "\(ranks) ranks B \(b) H \(h) Dk \(dk) Dv \(dv) L \(l) \(scheme) \(gating)"
                            let results = try await onEveryRank(comms) { comm in
                                let dev = comm.device, nan = Float.nan
                                func t(_ shape: [Int]) throws -> Tensor {
                                    try dev.makeTensor([Float](repeating: nan, count: shape.reduce(1, *)), shape: shape)
                                }
                                let q = try t([b, l, h, dk]), k = try t([b, l, h, dk]), v = try t([b, l, h, dv])
                                let g = gating == .none ? nil : try t(gating == .perKey ? [b, l, h, dk] : [b, l, h])
                                let fwd = try await op.forward(q: q, k: k, v: v, logGates: g, returnFinalState: true,
                                                               into: LinearParallelOutputStorage(output: t([b, l, h, dv])), communicator: comm)
                                let bwd = try await op.backward(q: q, k: k, v: v, logGates: g, incomingState: fwd.incomingState, dOutput: t([b, l, h, dv]),
                                                                into: LinearParallelGradientStorage(dq: t([b, l, h, dk]), dk: t([b, l, h, dk]), dv: t([b, l, h, dv]),
                                                                                                    dLogGates: g.map { _ in try t(gating == .perKey ? [b, l, h, dk] : [b, l, h]) }),
                                                                communicator: comm)
                                let zeros = try ([fwd.output, bwd.dq, bwd.dk, bwd.dv] + (bwd.dLogGates.map { [$0] } ?? [])).allSatisfy {
                                    try $0.readFloats().allSatisfy { $0 == 0 }
                                }
                                let states = [fwd.incomingState, fwd.finalState, bwd.dInitialState].compactMap { $0 }.allSatisfy(\.isEmpty)
                                return (fwd.path, bwd.path, zeros, states, fwd.finalState != nil, bwd.dInitialState != nil)
                            }
                            for (r, (fp, bp, zeros, states, final, dInitial)) in results.enumerated() {
                                #expect(fp == Self.empty && bp == Self.empty && zeros && states, "\(what) rank \(r)")
                                #expect(final == (r == ranks - 1) && dInitial == (r == 0), "\(what) rank \(r)")
                            }
                        }
                    }
                }
                try Self.expectNothingSent(group, "linear attention \(ranks) ranks")
            }
        }
    }

    @Test func recurrenceOfNothing() async throws {
        for ranks in 1...4 {
            try await withGroup(ranks: ranks) { group in
                let comms = try group.communicators()
                for complex in [false, true] {
                    for (shape, layout) in [([0, 3, 4], LinearRecurrence.Layout.bld), ([2, 5, 0], .bld), ([2, 0, 0], .bld), ([0, 4, 3], .bdl)] {
                        for algorithm in [AllScanAlgorithm.chain(segments: 1), .allGather, .chain(segments: 2)] {
                            let op = ContextParallelRecurrence(recurrence: LinearRecurrence(layout: layout, complex: complex), scheme: .linear(algorithm))
                            let full = shape + (complex ? [2] : [])
                            let results = try await onEveryRank(comms) { comm in
                                let dev = comm.device
                                func t(_ s: [Int]) throws -> Tensor { try dev.makeTensor(shape: s, dtype: .f32) }
                                let state = [shape[0], layout == .bld ? shape[2] : shape[1]] + (complex ? [2] : [])
                                let a = try t(full), h = try t(full)
                                let f = try await op.forward(a: a, b: t(full), h: h, finalState: t(state), incoming: t(state), communicator: comm)
                                let g = try await op.backward(a: a, h: h, incoming: comm.rank == 0 ? nil : t(state), dh: t(full),
                                                              da: t(full), db: t(full), dIncoming: t(state), communicator: comm)
                                return (f, g)
                            }
                            for (r, (f, g)) in results.enumerated() {
                                let what = "\(ranks) ranks \(full) \(layout) \(algorithm) rank \(r)"
                                #expect(f.local.path == Self.empty && g.local.path == Self.empty, "\(what): \(f.path)")
                                #expect(f.bytesSent == 0 && g.bytesSent == 0 && f.messagesSent == 0 && !f.decayPass, "\(what)")
                                let channels = shape[0] * (layout == .bld ? shape[2] : shape[1])
                                #expect(op.expectedBytesSent(rank: r, ranks: ranks, channels: channels, backward: false) == f.bytesSent, "\(what)")
                            }
                        }
                    }
                }
                try Self.expectNothingSent(group, "recurrence \(ranks) ranks")
            }
        }
    }
}
