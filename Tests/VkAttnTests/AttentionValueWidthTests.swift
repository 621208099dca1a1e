import Testing
import VkAttn
import TestSupport

/// Attention whose V (and O) rows differ in width from Q and K: DeepSeek's MLA (Dk = 576,
/// Dv = 512) and smaller mixes, forward, decode and backward, against the fp64 reference.
@Suite("Flash attention with Dk != Dv")
struct AttentionValueWidthTests {
    @Test func multiHeadLatentAttentionForwardAndDecode() throws {
        let seed = testSeed()
        try withDevice { device in
            try checkForward(AttentionCase(seed: seed, sq: 19, sk: 45, headsQ: 2, headsKV: 1, headDim: 576, headDimV: 512,
                                           attention: FlashAttention(mask: .causal)), device)
            let path = try checkDecode(AttentionCase(seed: seed, batch: 2, sq: 1, sk: 300, headsQ: 4, headsKV: 1,
                                                     headDim: 576, headDimV: 512, dtype: .f16), device)
            #expect(path.contains("decode"), "\(path)")
        }
    }

    @Test(arguments: [(96, 40), (40, 96), (64, 128), (59, 17), (1, 3)])
    func forwardAndBackward(dk: Int, dv: Int) throws {
        let seed = testSeed()
        try withDevice { device in
            let mask = AttentionMask(causal: true)
            try checkForward(AttentionCase(seed: seed, batch: 2, sq: 29, sk: 41, headsQ: 4, headsKV: 2, headDim: dk, headDimV: dv,
                                           attention: FlashAttention(mask: mask)), device)
            try checkBackward(AttentionCase(seed: seed, sq: 23, sk: 31, headsQ: 2, headsKV: 1, headDim: dk, headDimV: dv,
                                            attention: FlashAttention(mask: mask)), device)
        }
    }

    /// Beyond 256: the backward runs wherever a tile fits the device's shared memory
    /// (lavapipe's 32 KiB holds Q and K rows of 320 with V rows of 64).
    @Test func wideBackward() throws {
        let seed = testSeed()
        try withDevice { device in
            try checkBackward(AttentionCase(seed: seed, sq: 13, sk: 21, headsQ: 2, headsKV: 1, headDim: 320, headDimV: 64,
                                            attention: FlashAttention(mask: .causal)), device)
        }
    }

    @Test func packedSequencesAndHalfPrecision() throws {
        let seed = testSeed()
        try withDevice { device in
            let c = AttentionCase(seed: seed, packedQ: [5, 1, 0, 33], packedK: [9, 1, 4, 33], headsQ: 2, headsKV: 1,
                                  headDim: 80, headDimV: 112, dtype: .f16, attention: FlashAttention(mask: .causal))
            try checkForward(c, device)
            try checkBackward(c, device)
            try checkForward(AttentionCase(seed: seed, sq: 17, sk: 70, headsQ: 2, headDim: 192, headDimV: 128, dtype: .bf16,
                                           attention: FlashAttention(mask: .causal)), device)
        }
    }
}
