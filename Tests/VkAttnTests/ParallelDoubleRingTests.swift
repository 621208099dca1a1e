import Testing
import VkAttn
import VkAttnParallel
import TestSupport

/// The double ring (inner ring per node, outer ring between nodes) against the single-device
/// kernel: 2 x 2, 4 x 1 and 1 x 4 nodes x ranks on 4 ranks, 3 ranks as 3 x 1 and 1 x 3, every
/// sharding, causal and not, ragged packed sequences, GQA, f16; bytes against the formula with
/// the intra/inter split.
@Suite("Parallel: double ring")
struct ParallelDoubleRingTests {
    @Test(arguments: SequenceSharding.allCases)
    func doubleRingMatchesOneDevice(sharding: SequenceSharding) async throws {
        let seed = testSeed()
        try await withGroup { group in
            for causal in [true, false] {
                let c = ParallelCase(seed: seed, lengths: [37, 0, 50, 9], causal: causal)
                let want = try c.single(group.devices[0], backward: true)
                for (n, m) in causal ? [(4, 2), (4, 1), (3, 3)] : [(4, 2), (3, 1), (4, 4)] {
                    try await expectMatchesOneDevice(group, c, want, ranks: n, sharding: sharding, scheme: .doubleRing(ranksPerNode: m))
                }
            }
        }
    }

    @Test func doubleRingHalfPrecisionWithOneKVHead() async throws {
        let seed = testSeed()
        try await withGroup { group in
            let c = ParallelCase(seed: seed, lengths: [61, 23], headsKV: 1, causal: true, dtype: .f16)
            let want = try c.single(group.devices[0], backward: true)
            try await expectMatchesOneDevice(group, c, want, ranks: 4, sharding: .zigzag, scheme: .doubleRing(ranksPerNode: 2))
        }
    }

    @Test func doubleRingSendsTheBytesOfItsFormula() async throws {
        let seed = testSeed()
        try await withGroup { group in
            let c = ParallelCase(seed: seed, lengths: [48, 24], causal: true)
            let shape = ContextParallelAttention.Shape(headsQ: c.headsQ, headsKV: c.headsKV, headDim: c.headDim, dtype: c.dtype)
            let t = Double(c.total) / 4, block = 2 * t * Double(c.headsKV * c.headDim * 4)
            for (m, sharding) in [(2, SequenceSharding.zigzag), (1, .striped), (4, .contiguous)] {
                let (op, forward, backward) = try await measuredTraffic(group, c, ranks: 4, sharding: sharding, scheme: .doubleRing(ranksPerNode: m))
                for (pass, sent) in [("forward", forward), ("backward", backward)] {
                    let want = try op.expectedTraffic(shape, backward: pass == "backward")
                    #expect(sent.allSatisfy { Double($0) == want.bytes }, "\(pass) 4 x \(m): sent \(sent), formula \(want.bytes) (\(want.formula)); \(c)")
                    let inter = try #require(want.interNodeBytes)
                    // One block per node step crosses nodes (plus the fp32 dK/dV sums going home in
                    // the backward: as many bytes as an f32 block).
                    let nodes = Double(4 / m)
                    #expect(inter == (nodes - 1) * block * (pass == "backward" ? 2 : 1), "\(pass) 4 x \(m): inter \(inter)")
                    #expect(want.intraNodeBytes == want.bytes - inter)
                    if m == 4 {
                        var ring = op
                        ring.scheme = .ring
                        // The plain ring stops a block at its last user (causal contiguous: early); the
                        // double ring's blocks visit every member, as the unmasked ring's do.
                        #expect(want.bytes == (try ring.unmaskedTraffic(shape, backward: pass == "backward")).bytes, "one node is the ring")
                    }
                    if m == 1 { #expect(want.intraNodeBytes == 0) }
                }
            }
        }
    }
}
