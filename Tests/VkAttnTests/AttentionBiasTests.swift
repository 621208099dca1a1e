import Testing
import VkAttn
import TestSupport

/// ALiBi slopes and attention sinks against the fp64 reference: forward, backward (with
/// dL/dsink), decode's split partials (the sink joins once, in the merge), masks whose tile
/// skipping must stay exact, and both storage widths.
@Suite("Flash attention with ALiBi and sinks")
struct AttentionBiasTests {
    static func sinks(_ heads: Int, _ seed: UInt64) -> [Float] {
        var rng = SeededRandom(seed: seed ^ 0x5151)
        return rng.floats(heads, in: -2...3)
    }

    @Test func slopesFollowTheALiBiPaper() {
        #expect(FlashAttention.alibiSlopes(heads: 8) == (1...8).map { Float(1.0 / Double(1 << $0)) })
        let twelve = FlashAttention.alibiSlopes(heads: 12)
        #expect(twelve.count == 12 && Array(twelve.prefix(8)) == FlashAttention.alibiSlopes(heads: 8))
        #expect(twelve[8] == Float(1.0 / 2.0.squareRoot()))  // 2^(-0.5): the first odd slope of 16 heads
    }

    @Test(arguments: [(false, false), (true, false), (false, true), (true, true)])
    func forwardAndBackward(alibi: Bool, sinks: Bool) throws {
        let seed = testSeed()
        try withDevice { device in
            for mask in [AttentionMask(causal: true), AttentionMask(causal: true, windowLeft: 9), AttentionMask.none] {
                let attention = FlashAttention(mask: mask, alibiSlopes: alibi ? FlashAttention.alibiSlopes(heads: 4) : nil,
                                               sinks: sinks ? Self.sinks(4, seed) : nil)
                try checkForward(AttentionCase(seed: seed, batch: 2, sq: 37, sk: 53, headsQ: 4, headsKV: 2, headDim: 40,
                                               attention: attention), device)
                try checkBackward(AttentionCase(seed: seed, sq: 29, sk: 29, headsQ: 4, headsKV: 1, headDim: 32,
                                                attention: attention), device)
            }
        }
    }

    @Test func rowsThatSeeNoKeyTakeTheSink() throws {
        let seed = testSeed()
        try withDevice { device in
            // Causal with Sq > Sk: the first Sq - Sk rows see no key; with a sink their LSE is the sink.
            let attention = FlashAttention(mask: .causal, sinks: Self.sinks(2, seed))
            try checkForward(AttentionCase(seed: seed, sq: 40, sk: 7, headsQ: 2, attention: attention), device)
            try checkBackward(AttentionCase(seed: seed, sq: 40, sk: 7, headsQ: 2, attention: attention), device)
        }
    }

    @Test func packedHalfPrecisionAndDecode() throws {
        let seed = testSeed()
        try withDevice { device in
            let attention = FlashAttention(mask: .causal, softcap: 20, alibiSlopes: FlashAttention.alibiSlopes(heads: 6),
                                           sinks: Self.sinks(6, seed))
            let c = AttentionCase(seed: seed, packedQ: [1, 17, 0, 40], packedK: [1, 30, 3, 40], headsQ: 6, headsKV: 3,
                                  headDim: 64, dtype: .f16, attention: attention)
            try checkForward(c, device)
            try checkBackward(c, device)
            // Decode splits the cache into partials; the sink must be counted once, in the merge.
            for splits in [1, 4] {
                let path = try checkDecode(AttentionCase(seed: seed, batch: 2, sq: 1, sk: 700, headsQ: 6, headsKV: 2, headDim: 64,
                                                         dtype: .bf16, attention: attention), device, splits: splits)
                #expect(splits == 1 || path.contains("split"), "\(path)")
            }
        }
    }

    @Test func badSlopesAndSinksAreTypedErrors() throws {
        try withDevice { device in
            let stream = try device.makeStream()
            let x = try device.makeTensor(shape: [1, 8, 2, 32], dtype: .f32)
            for (attention, operand) in [(FlashAttention(alibiSlopes: [1]), "alibiSlopes"), (FlashAttention(sinks: [0, .nan]), "sinks"),
                                         (FlashAttention(sinks: [0, 1, 2]), "sinks")] {
                #expect(throws: VkAttnError.self) { _ = try attention.forward(q: x, k: x, v: x, on: stream) }
                do { _ = try attention.forward(q: x, k: x, v: x, on: stream) } catch let error as VkAttnError {
                    #expect(error.description.contains(operand), "\(error)")
                }
            }
            try stream.synchronize()
        }
    }
}
