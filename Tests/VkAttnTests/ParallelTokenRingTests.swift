import Testing
import VkAttn
import VkAttnParallel
import TestSupport

/// TokenRing (queries travel, partials return) against the single-device kernel: 1 to 4
/// ranks, every sharding, causal and not, ragged packed sequences (one empty), GQA, f16;
/// bytes against the formula; the chooser; typed errors.
@Suite("Parallel: TokenRing")
struct ParallelTokenRingTests {
    @Test(arguments: SequenceSharding.allCases)
    func tokenRingMatchesOneDevice(sharding: SequenceSharding) async throws {
        let seed = testSeed()
        try await withGroup { group in
            for causal in [true, false] {
                let c = ParallelCase(seed: seed, lengths: [37, 0, 50, 9], causal: causal)
                let want = try c.single(group.devices[0], backward: true)
                for n in causal ? [1, 2, 3, 4] : [3, 4] {
                    try await expectMatchesOneDevice(group, c, want, ranks: n, sharding: sharding, scheme: .tokenRing)
                }
            }
        }
    }

    /// f16 storage with one KV head (MQA), and a single short sequence fewer tokens than pieces.
    @Test func tokenRingHalfPrecisionAndFewTokens() async throws {
        let seed = testSeed()
        try await withGroup { group in
            for (lengths, dtype, hkv) in [([61, 23], DType.f16, 1), ([5], .f32, 2)] {
                let c = ParallelCase(seed: seed, lengths: lengths, headsKV: hkv, causal: true, dtype: dtype)
                let want = try c.single(group.devices[0], backward: true)
                try await expectMatchesOneDevice(group, c, want, ranks: 3, sharding: .zigzag, scheme: .tokenRing)
            }
        }
    }

    /// The staged and imported-host paths copy arrivals out of staging on the stream that
    /// completes them first: TokenRing's and the double ring's orderings must hold there too.
    @Test(arguments: [TransferRoute.staged, .importedHost])
    func tokenRingAndDoubleRingOverCopyingPaths(path: TransferRoute) async throws {
        let seed = testSeed()
        try await withGroup(path: path) { group in
            #expect(group.route == path)
            let c = ParallelCase(seed: seed, lengths: [37, 50], causal: true)
            let want = try c.single(group.devices[0], backward: true)
            for scheme in [ContextParallelScheme.tokenRing, .doubleRing(ranksPerNode: 2)] {
                try await expectMatchesOneDevice(group, c, want, ranks: 4, sharding: .zigzag, scheme: scheme)
            }
        }
    }

    /// Six ranks: every slot of TokenRing and of the double ring is reused (travelling blocks
    /// from step 2, partials sent and returning from step 3; the double ring's inner buffer sets
    /// with 3 nodes, its outer slots and sums with 6), each reuse ordered after the reads of
    /// the slot's previous content (the validation layer watches the GPU side), on every path.
    @Test(arguments: [TransferRoute.hostMapped, .staged, .importedHost])
    func tokenRingAndDoubleRingReuseTheirSlots(path: TransferRoute) async throws {
        let seed = testSeed()
        try await withGroup(ranks: 6, path: path) { group in
            #expect(group.route == path)
            let c = ParallelCase(seed: seed, lengths: [37, 0, 50, 9], causal: true)
            let want = try c.single(group.devices[0], backward: true)
            for scheme in [ContextParallelScheme.tokenRing, .doubleRing(ranksPerNode: 2), .doubleRing(ranksPerNode: 1)] {
                try await expectMatchesOneDevice(group, c, want, ranks: 6, sharding: .zigzag, scheme: scheme)
            }
        }
    }

    @Test func tokenRingSendsTheBytesOfItsFormula() async throws {
        let seed = testSeed()
        try await withGroup { group in
            for (n, sharding, causal) in [(1, SequenceSharding.zigzag, true), (2, .striped, false), (3, .contiguous, true), (4, .zigzag, true)] {
                let c = ParallelCase(seed: seed, lengths: [48, 24], causal: causal)
                let (op, forward, backward) = try await measuredTraffic(group, c, ranks: n, sharding: sharding, scheme: .tokenRing)
                let shape = ContextParallelAttention.Shape(headsQ: c.headsQ, headsKV: c.headsKV, headDim: c.headDim, dtype: c.dtype)
                for (pass, sent) in [("forward", forward), ("backward", backward)] {
                    let want = try op.expectedTraffic(shape, backward: pass == "backward")
                    #expect(sent.allSatisfy { Double($0) == want.bytes }, "\(pass) x\(n): sent \(sent), formula \(want.bytes) (\(want.formula)); \(c)")
                    #expect(want.interNodeBytes == nil)
                }
            }
        }
    }

    /// GQA with one KV head favours the K/V ring; f32 MHA TokenRing (its busier direction
    /// carries Hq (D+1) 4 bytes per token against the ring's 2 Hkv D 4).
    @Test func chooserPicksTheSmallerLinkDirection() throws {
        let plan = try ShardPlan(lengths: [1024], ranks: 4, sharding: .zigzag)
        let op = ContextParallelAttention(plan: plan, scheme: .ring)
        let gqa = try op.ringChoice(.init(headsQ: 4, headsKV: 1, headDim: 64, dtype: .f32), backward: false)
        #expect(gqa.scheme == .ring && gqa.kvRingDirectionBytes < gqa.tokenRingDirectionBytes)
        let kvBytes: Double = 3 * 256 * 2 * 64 * 4, tokenBytes: Double = 3 * 256 * 4 * (64 * 4 + 65 * 4)
        #expect(gqa.kvRing.bytes == kvBytes)
        #expect(gqa.tokenRing.bytes == tokenBytes)
        let mha = try op.ringChoice(.init(headsQ: 4, headsKV: 4, headDim: 64, dtype: .f32), backward: false)
        let direction: Double = 3 * 256 * 4 * 65 * 4
        #expect(mha.scheme == .tokenRing)
        #expect(mha.tokenRingDirectionBytes == direction)
        let backward = try op.ringChoice(.init(headsQ: 4, headsKV: 1, headDim: 64, dtype: .f16), backward: true)
        #expect(backward.scheme == .ring)
    }

    @Test func tokenRingRefusesWindowsAndTheDoubleRingBadNodeSizes() async throws {
        let plan = try ShardPlan(lengths: [64], ranks: 4, sharding: .zigzag)
        let shape = ContextParallelAttention.Shape(headsQ: 4, headsKV: 2, headDim: 32, dtype: .f32)
        let window = ContextParallelAttention(plan: plan, scheme: .tokenRing, attention: FlashAttention(mask: AttentionMask(causal: true, windowLeft: 8)))
        #expect(throws: VkAttnError.self) { try window.validate(shape, ranks: 4) }
        for m in [0, 3, -1, 8] {
            let op = ContextParallelAttention(plan: plan, scheme: .doubleRing(ranksPerNode: m))
            #expect(throws: VkAttnError.self) { try op.validate(shape, ranks: 4) }
            #expect(throws: VkAttnError.self) { try op.expectedTraffic(shape, backward: false) }
        }
    }
}
