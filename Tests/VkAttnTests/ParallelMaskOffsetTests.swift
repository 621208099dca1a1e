import Testing
import VkAttn
import TestSupport

/// The attention-API extension the schedulers need: a per-call diagonal offset and a
/// top-left anchor (blocks of a sharded sequence whose keys sit before or after the queries).
@Suite("Parallel: attention diagonal offset and anchor")
struct ParallelMaskOffsetTests {
    static let masks: [AttentionMask] = [
        AttentionMask(causal: true, anchor: .topLeft, diagonalOffset: -1),
        AttentionMask(causal: true, anchor: .topLeft, diagonalOffset: 0),
        AttentionMask(causal: true, diagonalOffset: -7),
        AttentionMask(causal: true, diagonalOffset: 20),
        AttentionMask(causal: true, windowLeft: 5, anchor: .topLeft, diagonalOffset: 3),
        AttentionMask(windowLeft: 2, windowRight: 4, diagonalOffset: -40),
    ]

    @Test(arguments: masks)
    func forwardAndBackwardMatchTheReference(mask: AttentionMask) throws {
        let seed = testSeed()
        try withDevice { device in
            let attention = FlashAttention(mask: mask)
            try checkForward(AttentionCase(seed: seed, batch: 2, sq: 37, sk: 29, headsQ: 2, attention: attention), device)
            try checkBackward(AttentionCase(seed: seed, sq: 29, sk: 41, headsQ: 2, headsKV: 1, attention: attention), device)
            try checkForward(AttentionCase(seed: seed, packedQ: [5, 0, 19], packedK: [7, 3, 11], attention: attention), device)
        }
    }

    @Test func referenceMaskFollowsTheShiftedDiagonal() {
        let topLeft = AttentionMask(causal: true, anchor: .topLeft, diagonalOffset: -1)
        #expect(!topLeft.allows(query: 0, key: 0, sq: 4, sk: 9))
        #expect(topLeft.allows(query: 3, key: 2, sq: 4, sk: 9) && !topLeft.allows(query: 3, key: 3, sq: 4, sk: 9))
        let shifted = AttentionMask(causal: true, diagonalOffset: 2)
        #expect(shifted.allows(query: 0, key: 2 + 5, sq: 4, sk: 9) && !shifted.allows(query: 0, key: 8, sq: 4, sk: 9))
    }

    @Test func hugeOffsetIsATypedError() throws {
        try withDevice { device in
            let q = try device.makeTensor(shape: [1, 4, 1, 32], dtype: .f32)
            let stream = try device.makeStream()
            let mask = AttentionMask(causal: true, diagonalOffset: 1 << 31)
            #expect(throws: VkAttnError.self) { try FlashAttention(mask: mask).forward(q: q, k: q, v: q, on: stream) }
        }
    }
}
