import Testing
import VkAttn
import TestSupport

@Suite("Flash attention backward")
struct AttentionBackwardTests {
    @Test(arguments: [1, 17, 127, 64])
    func lengthsCausalAndNot(length: Int) throws {
        let seed = testSeed()
        try withDevice { device in
            for causal in [false, true] {
                try checkBackward(AttentionCase(seed: seed, batch: 2, sq: length, sk: length,
                                                attention: FlashAttention(mask: AttentionMask(causal: causal))), device)
            }
        }
    }

    @Test func longerSequence() throws {
        let seed = testSeed()
        try withDevice { device in
            try checkBackward(AttentionCase(seed: seed, sq: 333, sk: 333, headsQ: 1, attention: FlashAttention(mask: .causal)), device)
        }
    }

    @Test(arguments: [(17, 90), (90, 17)])
    func queriesAndKeysOfDifferentLengths(sq: Int, sk: Int) throws {
        let seed = testSeed()
        try withDevice { device in
            for causal in [false, true] {
                try checkBackward(AttentionCase(seed: seed, sq: sq, sk: sk,
                                                attention: FlashAttention(mask: AttentionMask(causal: causal))), device)
            }
        }
    }

    /// FlashAttention-2's head-size grid.
    @Test(arguments: [32, 40, 59, 64, 80, 96, 111, 112, 128, 160, 192, 224, 256])
    func headDims(headDim: Int) throws {
        let seed = testSeed()
        try withDevice { device in
            try checkBackward(AttentionCase(seed: seed, sq: 21, sk: 40, headsQ: 1, headDim: headDim,
                                            attention: FlashAttention(mask: .causal)), device)
        }
    }

    @Test func groupedQueryAttentionSumsTheGroup() throws {
        let seed = testSeed()
        try withDevice { device in
            try checkBackward(AttentionCase(seed: seed, batch: 2, sq: 30, sk: 45, headsQ: 4, headsKV: 2,
                                            attention: FlashAttention(mask: .causal)), device)
            try checkBackward(AttentionCase(seed: seed, sq: 19, sk: 19, headsQ: 3, headsKV: 1), device)
        }
    }

    @Test func windowsBlockMaskAndSoftcap() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        try withDevice { device in
            try checkBackward(AttentionCase(seed: seed, sq: 80, sk: 96,
                                            attention: FlashAttention(mask: AttentionMask(causal: true, windowLeft: 20))), device)
            try checkBackward(AttentionCase(seed: seed, sq: 64, sk: 64,
                                            attention: FlashAttention(mask: AttentionMask(windowLeft: 3, windowRight: 9))), device)
            let blocks = BlockMask(blockSize: 16, queryBlocks: 4, keyBlocks: 5) { _, _ in rng.next() % 2 == 0 }
            try checkBackward(AttentionCase(seed: seed, sq: 60, sk: 80,
                                            attention: FlashAttention(mask: AttentionMask(causal: true, blocks: blocks))), device)
            try checkBackward(AttentionCase(seed: seed, sq: 48, sk: 40,
                                            attention: FlashAttention(mask: .causal, scale: 2, softcap: 2)), device)
        }
    }

    @Test func halfPrecision() throws {
        let seed = testSeed()
        try withDevice { device in
            try checkBackward(AttentionCase(seed: seed, sq: 50, sk: 50, headsQ: 2, headsKV: 1, headDim: 64, dtype: .f16,
                                            attention: FlashAttention(mask: .causal)), device)
            try checkBackward(AttentionCase(seed: seed, sq: 33, sk: 47, headDim: 64, dtype: .f16), device, gradientDType: .f32)
        }
    }

    @Test func packedVariableLength() throws {
        let seed = testSeed()
        try withDevice { device in
            for causal in [false, true] {
                try checkBackward(AttentionCase(seed: seed, packedQ: [3, 0, 40, 9], packedK: [5, 2, 33, 0], headsQ: 2, headsKV: 1,
                                                attention: FlashAttention(mask: AttentionMask(causal: causal))), device)
            }
        }
    }

    @Test func deterministicRunToRun() throws {
        let seed = testSeed()
        try withDevice { device in
            let c = AttentionCase(seed: seed, batch: 2, sq: 70, sk: 70, headsQ: 4, headsKV: 2, attention: FlashAttention(mask: .causal))
            let first = try checkBackward(c, device)
            let second = try checkBackward(c, device)
            #expect(first.map { $0.map(\.bitPattern) } == second.map { $0.map(\.bitPattern) }, "seed \(seed)")
        }
    }

    /// The analytic gradient against central differences of the fp64 forward on a tiny case.
    @Test func finiteDifferenceSpotCheck() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        try withDevice { device in
            let c = AttentionCase(seed: seed, sq: 5, sk: 7, headsQ: 1, attention: FlashAttention(mask: .causal, softcap: 3))
            let grads = try checkBackward(c, device)
            let problem = try c.problem
            func loss(_ q: [Float], _ k: [Float], _ v: [Float]) -> Double {
                let o = AttentionReference.forward(problem, q: q, k: k, v: v).o
                return zip(o, c.dO).reduce(0.0) { $0 + $1.0 * Double($1.1) }
            }
            let h: Float = 1e-2
            for (which, gradient) in grads.enumerated() {
                for _ in 0..<4 {
                    var inputs = [c.q, c.k, c.v]
                    let index = Int(rng.next() % UInt64(inputs[which].count))
                    inputs[which][index] += h
                    let up = loss(inputs[0], inputs[1], inputs[2])
                    inputs[which][index] -= 2 * h
                    let down = loss(inputs[0], inputs[1], inputs[2])
                    let numeric = (up - down) / Double(2 * h)
                    let analytic = Double(gradient[index])
                    #expect(abs(numeric - analytic) <= 1e-3 * max(1, abs(numeric)),
                            "input \(which) index \(index): numeric \(numeric) analytic \(analytic) seed \(seed)")
                }
            }
        }
    }
}
