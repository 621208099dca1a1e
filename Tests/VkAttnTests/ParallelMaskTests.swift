import Testing
import VkAttn
import VkAttnParallel
import VkAttnReference
import TestSupport

/// Sliding-window and block-sparse masks across ranks: every scheme against the one-device
/// op under the same mask (forward and backward, packed batches, NaN-poisoned outputs), the
/// bytes the masked schedules send against `expectedTraffic` and the unmasked schedule, and
/// the (rank, step) pairs they skip. The cross product (scheme x mask x sharding x ranks x
/// dtype) is sampled from the test's seed.
@Suite("Parallel: masks across ranks")
struct ParallelMaskTests {
    enum Kind: String, CaseIterable, Sendable {
        case windowLeft, windowBoth, causalWindow, blocks, causalBlocks
        var usesBlocks: Bool { self == .blocks || self == .causalBlocks }
    }

    /// A block pattern of `rows` x `rows` blocks: mostly the diagonal and its neighbours, a few
    /// random others, and block row 1 empty (its queries see no key: O = 0, LSE = -inf).
    static func blockPattern(_ rng: inout SeededRandom, size: Int, rows: Int) -> BlockMask {
        var keep: [[Bool]] = []
        for r in 0..<rows {
            keep.append((0..<rows).map { c in
                let u = Double(rng.next() % 1000) / 1000
                return r != 1 && (c == r || (abs(c - r) == 1 && u < 0.5) || u < 0.15)
            })
        }
        return BlockMask(blockSize: size, queryBlocks: rows, keyBlocks: rows) { keep[$0][$1] }
    }

    /// The mask of `kind` for sequences of at most `longest` tokens.
    static func mask(_ kind: Kind, _ rng: inout SeededRandom, longest: Int) -> AttentionMask {
        func window(_ range: ClosedRange<Int>) -> Int { Int(rng.next() % UInt64(range.count)) + range.lowerBound }
        switch kind {
        case .windowLeft: return AttentionMask(windowLeft: window(1...40))
        case .windowBoth: return AttentionMask(windowLeft: window(0...30), windowRight: window(1...30))
        case .causalWindow: return AttentionMask(causal: true, windowLeft: window(1...40))
        case .blocks: return AttentionMask(blocks: blockPattern(&rng, size: 16, rows: (longest + 15) / 16))
        case .causalBlocks: return AttentionMask(causal: true, blocks: blockPattern(&rng, size: 16, rows: (longest + 15) / 16))
        }
    }

    /// Every scheme on a sampled sharding, rank count and dtype, forward and backward.
    @Test(arguments: Kind.allCases)
    func everySchemeMatchesOneDevice(kind: Kind) async throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        func pick<T>(_ xs: [T]) -> T { xs[Int(rng.next() % UInt64(xs.count))] }
        try await withGroup { group in
            let schemes: [(ContextParallelScheme, ranks: [Int], heads: (Int, Int))] = [
                (.ring, [1, 2, 3, 4], (2, 2)), (.allGather(headSlices: pick([1, 2])), [2, 3, 4], (2, 2)),
                (.allToAll, [2, 4], (4, 2)), (.hierarchical(ulysses: 2), [4], (4, 2))]
            for (scheme, rankChoices, heads) in schemes {
                let n = pick(rankChoices)
                let sharding = pick(kind.usesBlocks ? [SequenceSharding.contiguous, .zigzag] : [.contiguous, .zigzag, .striped])
                let dtype = pick([DType.f32, .f16])
                // Windows: awkward packed lengths (a 1-token sequence, primes). Blocks: chunks on
                // block boundaries, so each sequence a multiple of 16 x (N or 2N) tokens.
                let lengths: [Int]
                if kind.usesBlocks {
                    let unit = 16 * (sharding == .zigzag ? 2 * n : n)
                    lengths = unit >= 96 ? [unit] : [unit * pick([1, 2]), unit]
                } else {
                    lengths = [pick([1, 13, 61]), pick([97, 71, 128]), pick([0, 29])]
                }
                var c = ParallelCase(seed: rng.next(), lengths: lengths, headsQ: heads.0, headsKV: heads.1, causal: false, dtype: dtype)
                c.mask = Self.mask(kind, &rng, longest: lengths.max() ?? 0)
                let want = try c.single(group.devices[0], backward: true)
                let got = try await c.parallel(try group.communicators(first: n), sharding: sharding, scheme: scheme, backward: true)
                for (name, err) in ParallelCase.errors(got, want) {
                    #expect(err <= c.tolerance, "\(name) error \(err), \(scheme) x\(n) \(sharding) \(kind): \(c) (test seed \(seed))")
                }
            }
        }
    }

    /// Striped pieces under a window: the band in local indices (ceil / floor of the offsets
    /// over N) on 2...4 ranks, causal, two-sided and right-only, f32.
    @Test func stripedWindowsMatchOneDevice() async throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        try await withGroup { group in
            for (n, mask) in [(2, AttentionMask(causal: true, windowLeft: 5)), (3, AttentionMask(windowLeft: 7, windowRight: 2)),
                              (4, AttentionMask(windowLeft: 0, windowRight: 9)), (2, AttentionMask(windowRight: 3))] {
                var c = ParallelCase(seed: rng.next(), lengths: [37, 23], headsQ: 2, headsKV: 1, causal: false)
                c.mask = mask
                let want = try c.single(group.devices[0], backward: true)
                let got = try await c.parallel(try group.communicators(first: n), sharding: .striped, scheme: .ring, backward: true)
                for (name, err) in ParallelCase.errors(got, want) {
                    #expect(err <= c.tolerance, "\(name) error \(err), striped x\(n): \(c)")
                }
            }
        }
    }

    /// Causal window of 16 on 4 contiguous ranks of 32 tokens (Hkv 2, D 32, f32): each block
    /// is needed by its owner and the next rank only, so it travels one hop and its dK/dV
    /// accumulator comes straight back. By hand: forward, a rank sends its own block
    /// (2 x 32 x 2 x 32 x 4 = 16384 B; rank 3 none); backward, rank 1 sends its block, its own
    /// accumulator and rank 0's back home: 16384 + 2 x 16384 = 49152 B. Unmasked: 49152 and
    /// 114688 B. Ranks compute against 7 of 16 blocks: 9 skipped steps.
    @Test func ringWindowSendsTheHandCountedBytes() async throws {
        let seed = testSeed()
        try await withGroup { group in
            var c = ParallelCase(seed: seed, lengths: [128], headsQ: 2, headsKV: 2, causal: false)
            c.mask = AttentionMask(causal: true, windowLeft: 16)
            let (op, forward, backward) = try await ParallelTrafficTests().measure(group, c, ranks: 4, sharding: .contiguous, scheme: .ring)
            let shape = ContextParallelAttention.Shape(headsQ: 2, headsKV: 2, headDim: 32, dtype: .f32)
            #expect(forward == [16384, 16384, 16384, 0], "forward bytes per rank \(forward)")
            #expect(backward == [32768, 49152, 49152, 16384], "backward bytes per rank \(backward)")
            #expect(try op.expectedTraffic(shape, backward: false).bytes == 16384)
            #expect(try op.expectedTraffic(shape, backward: true).bytes == 49152)
            #expect(try op.unmaskedTraffic(shape, backward: false).bytes == 49152)
            #expect(try op.unmaskedTraffic(shape, backward: true).bytes == 114688)
            let skipped = try op.skippedSteps()
            #expect(skipped.skipped == 9 && skipped.steps == 16, "\(skipped)")
        }
    }

    /// Every scheme with a window or a block mask: the busiest rank's measured bytes equal
    /// `expectedTraffic`, and are fewer than the unmasked schedule's where the mask empties
    /// pairs (Ulysses: equal, the all-to-all does not depend on the mask).
    @Test func maskedBytesEqualTheirFormulaAndSave() async throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        try await withGroup { group in
            // A banded block pattern: each query block its own and the previous key block.
            let banded = AttentionMask(blocks: BlockMask(blockSize: 16, queryBlocks: 8, keyBlocks: 8) { r, c in c == r || c == r - 1 })
            // saves: nil where only some ranks send less (a two-sided window on the one-way
            // ring: the left neighbour's block still goes all the way round; the hybrid's ring
            // of two groups: the first group's block still goes to the second).
            let cases: [(ContextParallelScheme, SequenceSharding, AttentionMask, [Int], saves: Bool?)] = [
                (.ring, .contiguous, AttentionMask(causal: true, windowLeft: 9), [128, 61], true),
                (.ring, .zigzag, AttentionMask(windowLeft: 9, windowRight: 4), [128, 61], nil),
                (.ring, .contiguous, banded, [128], true),
                (.allGather(headSlices: 2), .contiguous, AttentionMask(causal: true, windowLeft: 20), [96, 50], true),
                (.hierarchical(ulysses: 2), .contiguous, AttentionMask(causal: true, windowLeft: 12), [128], nil),
                (.allToAll, .zigzag, AttentionMask(windowLeft: 12), [128], false)]
            for (scheme, sharding, mask, lengths, saves) in cases {
                var c = ParallelCase(seed: rng.next(), lengths: lengths, headsQ: 4, headsKV: 2, causal: false, dtype: .f16)
                c.mask = mask
                let (op, forward, backward) = try await ParallelTrafficTests().measure(group, c, ranks: 4, sharding: sharding, scheme: scheme)
                let shape = ContextParallelAttention.Shape(headsQ: 4, headsKV: 2, headDim: 32, dtype: .f16)
                for (pass, sent) in [("forward", forward), ("backward", backward)] {
                    let want = try op.expectedTraffic(shape, backward: pass == "backward")
                    let plain = try op.unmaskedTraffic(shape, backward: pass == "backward")
                    let busiest = Double(sent.max() ?? 0)
                    #expect(busiest == want.bytes, "\(scheme) \(pass) \(sharding): sent \(sent), expected \(want.bytes) (\(want.formula)); \(c)")
                    if let saves {
                        #expect(saves ? busiest < plain.bytes : busiest == plain.bytes, "\(scheme) \(pass): \(busiest) B against \(plain.bytes) unmasked; \(c)")
                    } else {
                        #expect(busiest <= plain.bytes, "\(scheme) \(pass): \(busiest) B against \(plain.bytes) unmasked; \(c)")
                    }
                }
                let skipped = try op.skippedSteps()
                #expect(saves == false ? skipped.skipped == 0 : skipped.skipped > 0, "\(scheme): \(skipped) skipped; \(c)")
            }
        }
    }

    /// A block mask with a pattern per query head (S2-Attention's heterogeneous shards: head h
    /// attends the key blocks c with c % 2 == h % 2 plus its own block) across ranks: the ring
    /// and the all-gather with one head slice match one device forward and backward, on 2...4
    /// ranks, contiguous and zigzag, causal and not; schemes that split the heads refuse it.
    @Test func perHeadBlockMasksMatchOneDevice() async throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        try await withGroup { group in
            for (n, sharding, scheme, causal) in [(2, SequenceSharding.zigzag, ContextParallelScheme.ring, true),
                                                 (3, .contiguous, .allGather(headSlices: 1), false),
                                                 (4, .contiguous, .ring, false), (4, .zigzag, .allGather(headSlices: 1), true)] {
                let length = 16 * (sharding == .zigzag ? 2 * n : n) * 2
                let blocks = length / 16
                var c = ParallelCase(seed: rng.next(), lengths: [length, length / 2], headsQ: 4, headsKV: 2, causal: false)
                c.mask = AttentionMask(causal: causal, blocks: try BlockMask.s2Attention(
                    blockSize: 16, queryBlocks: blocks, keyBlocks: blocks, heads: 4, localBlocks: 1, stride: 2, causal: causal))
                let want = try c.single(group.devices[0], backward: true)
                let got = try await c.parallel(try group.communicators(first: n), sharding: sharding, scheme: scheme, backward: true)
                for (name, err) in ParallelCase.errors(got, want) {
                    #expect(err <= c.tolerance, "\(name) error \(err), \(scheme) x\(n) \(sharding) per-head: \(c) (test seed \(seed))")
                }
            }
            let mask = AttentionMask(blocks: try BlockMask.s2Attention(blockSize: 16, queryBlocks: 4, keyBlocks: 4, heads: 4,
                                                                       localBlocks: 1, stride: 2))
            let shape = ContextParallelAttention.Shape(headsQ: 4, headsKV: 2, headDim: 32, dtype: .f32)
            for scheme in [ContextParallelScheme.allToAll, .hierarchical(ulysses: 2), .allGather(headSlices: 2)] {
                let op = ContextParallelAttention(plan: try ShardPlan(lengths: [64], ranks: 2, sharding: .contiguous), scheme: scheme,
                                                  attention: FlashAttention(mask: mask))
                #expect(throws: VkAttnError.self, "\(scheme) splits the heads") { try op.validate(shape, ranks: 2) }
            }
        }
    }
}
