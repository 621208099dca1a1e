import Testing
import VkAttn
import TestSupport

/// bf16 storage (the training format) in attention: the scalar kernels widen the 16-bit words
/// exactly, accumulate in fp32 and round outputs to nearest even; no path narrows bf16 to f16.
@Suite("Flash attention in bf16")
struct AttentionBF16Tests {
    @Test(arguments: [1, 17, 333])
    func forwardCausalWindowAndGroupedHeads(length: Int) throws {
        let seed = testSeed()
        try withDevice { device in
            for mask in [AttentionMask.none, .causal, AttentionMask(causal: true, windowLeft: 64)] {
                try checkForward(AttentionCase(seed: seed, batch: 2, sq: length, sk: length, headsQ: 4, headsKV: 2, headDim: 64,
                                               dtype: .bf16, attention: FlashAttention(mask: mask)), device)
            }
            try checkForward(AttentionCase(seed: seed, sq: length, sk: length + 7, headDim: 128, dtype: .bf16,
                                           attention: FlashAttention(mask: .causal, softcap: 3, outputDType: .f32)), device)
        }
    }

    @Test func forwardPackedAndBlockSparse() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        try withDevice { device in
            try checkForward(AttentionCase(seed: seed, packedQ: [5, 0, 35, 1, 70], packedK: [5, 3, 40, 0, 90], headsQ: 4, headsKV: 2,
                                           dtype: .bf16, attention: FlashAttention(mask: .causal)), device)
            let blocks = BlockMask(blockSize: 16, queryBlocks: 5, keyBlocks: 6) { _, _ in rng.next() % 3 != 0 }
            try checkForward(AttentionCase(seed: seed, sq: 70, sk: 90, dtype: .bf16,
                                           attention: FlashAttention(mask: AttentionMask(causal: false, blocks: blocks))), device)
        }
    }

    @Test func backwardIntoBF16AndF32Gradients() throws {
        let seed = testSeed()
        try withDevice { device in
            try checkBackward(AttentionCase(seed: seed, sq: 77, sk: 77, headsQ: 4, headsKV: 2, headDim: 64, dtype: .bf16,
                                            attention: FlashAttention(mask: AttentionMask(causal: true, windowLeft: 20))), device)
            try checkBackward(AttentionCase(seed: seed, sq: 33, sk: 90, headDim: 32, dtype: .bf16,
                                            attention: FlashAttention(mask: .causal, softcap: 2)), device, gradientDType: .f32)
        }
    }

    @Test func decodeSplitsAndMerges() throws {
        let seed = testSeed()
        try withDevice { device in
            let c = AttentionCase(seed: seed, batch: 2, sq: 3, sk: 700, headsQ: 8, headsKV: 2, headDim: 128, dtype: .bf16,
                                  attention: FlashAttention(mask: .causal))
            for splits in [nil, 1, 5] as [Int?] {
                let path = try checkDecode(c, device, splits: splits)
                #expect(path.contains("scalar-bf16") || path.contains("coopmat-bf16"), "\(path)")
            }
        }
    }

    /// bf16 words convert as the hardware does: exact widening, round-to-nearest-even narrowing,
    /// infinities and NaN kept.
    @Test func conversionsRoundToNearestEven() {
        #expect(BFloat16.bits(1) == 0x3F80 && BFloat16.float(0x3F80) == 1)
        #expect(BFloat16.bits(Float(bitPattern: 0x3F80_8000)) == 0x3F80)  // tie: to even
        #expect(BFloat16.bits(Float(bitPattern: 0x3F81_8000)) == 0x3F82)  // tie: to even (up)
        #expect(BFloat16.bits(Float(bitPattern: 0x3F80_8001)) == 0x3F81)
        #expect(BFloat16.float(BFloat16.bits(.infinity)) == .infinity)
        #expect(BFloat16.float(BFloat16.bits(.nan)).isNaN)
        #expect(BFloat16.rounded(.greatestFiniteMagnitude) == .infinity)  // past bf16's largest finite value
    }
}
