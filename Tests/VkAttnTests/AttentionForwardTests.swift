import Testing
import VkAttn
import TestSupport

@Suite("Flash attention forward")
struct AttentionForwardTests {
    @Test(arguments: [1, 17, 127, 333, 64])
    func lengthsCausalAndNot(length: Int) throws {
        let seed = testSeed()
        try withDevice { device in
            for causal in [false, true] {
                try checkForward(AttentionCase(seed: seed, batch: 2, sq: length, sk: length,
                                               attention: FlashAttention(mask: AttentionMask(causal: causal))), device)
            }
        }
    }

    @Test(arguments: [(17, 333), (333, 17), (1, 127), (64, 1)])
    func queriesAndKeysOfDifferentLengths(sq: Int, sk: Int) throws {
        let seed = testSeed()
        try withDevice { device in
            for causal in [false, true] {
                // Causal with Sq > Sk aligns bottom-right: the first Sq - Sk rows see no key.
                try checkForward(AttentionCase(seed: seed, sq: sq, sk: sk,
                                               attention: FlashAttention(mask: AttentionMask(causal: causal))), device)
            }
        }
    }

    /// FlashAttention-2's head-size grid (59 and 111 are padded inside the kernels).
    @Test(arguments: [32, 40, 59, 64, 80, 96, 111, 112, 128, 160, 192, 224, 256])
    func everyHeadDim(headDim: Int) throws {
        let seed = testSeed()
        try withDevice { device in
            try checkForward(AttentionCase(seed: seed, sq: 37, sk: 70, headsQ: 1, headDim: headDim,
                                           attention: FlashAttention(mask: .causal)), device)
        }
    }

    @Test func groupedAndMultiQueryHeads() throws {
        let seed = testSeed()
        try withDevice { device in
            try checkForward(AttentionCase(seed: seed, batch: 2, sq: 45, sk: 45, headsQ: 4, headsKV: 2,
                                           attention: FlashAttention(mask: .causal)), device)
            try checkForward(AttentionCase(seed: seed, sq: 33, sk: 90, headsQ: 3, headsKV: 1), device)
        }
    }

    @Test func slidingWindows() throws {
        let seed = testSeed()
        try withDevice { device in
            for (left, right) in [(16, 8), (0, 0), (5, nil), (nil, 3)] as [(Int?, Int?)] {
                for causal in [false, true] {
                    let mask = AttentionMask(causal: causal, windowLeft: left, windowRight: right)
                    try checkForward(AttentionCase(seed: seed, sq: 100, sk: 120, attention: FlashAttention(mask: mask)), device)
                }
            }
        }
    }

    @Test func blockSparseMask() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        try withDevice { device in
            let sq = 70, sk = 90, block = 16
            let rows = (sq + block - 1) / block, cols = (sk + block - 1) / block
            var pattern = (0..<rows).map { _ in (0..<cols).map { _ in rng.next() % 3 != 0 } }
            pattern[1] = [Bool](repeating: false, count: cols)  // a query block that sees nothing
            let blocks = BlockMask(blockSize: block, queryBlocks: rows, keyBlocks: cols) { pattern[$0][$1] }
            for causal in [false, true] {
                let attention = FlashAttention(mask: AttentionMask(causal: causal, blocks: blocks))
                try checkForward(AttentionCase(seed: seed, batch: 2, sq: sq, sk: sk, attention: attention), device)
            }
        }
    }

    @Test func scaleAndSoftcap() throws {
        let seed = testSeed()
        try withDevice { device in
            try checkForward(AttentionCase(seed: seed, sq: 50, sk: 61, attention: FlashAttention(scale: 2.5)), device)
            try checkForward(AttentionCase(seed: seed, sq: 50, sk: 61, attention: FlashAttention(mask: .causal, scale: 3, softcap: 1.5)), device)
        }
    }

    @Test func halfPrecisionStorage() throws {
        let seed = testSeed()
        try withDevice { device in
            try checkForward(AttentionCase(seed: seed, batch: 2, sq: 77, sk: 77, headsQ: 4, headsKV: 2, headDim: 64, dtype: .f16,
                                           attention: FlashAttention(mask: .causal)), device)
            try checkForward(AttentionCase(seed: seed, sq: 40, sk: 131, headDim: 128, dtype: .f16,
                                           attention: FlashAttention(outputDType: .f32)), device)
        }
    }

    @Test func packedVariableLengthWithEmptySequences() throws {
        let seed = testSeed()
        try withDevice { device in
            for causal in [false, true] {
                let attention = FlashAttention(mask: AttentionMask(causal: causal))
                try checkForward(AttentionCase(seed: seed, packedQ: [5, 0, 35, 1, 70], packedK: [5, 3, 40, 0, 90],
                                               headsQ: 4, headsKV: 2, attention: attention), device)
            }
        }
    }
}
