import Testing
import VkAttn
import TestSupport

/// A random mask with one pattern per query head over sq x sk positions (about half the blocks
/// kept), where head 1's query block 1 sees nothing (when it exists).
func randomHeadMask(sq: Int, sk: Int, heads: Int, block: Int, _ rng: inout SeededRandom) -> BlockMask {
    let rows = (sq + block - 1) / block, cols = (sk + block - 1) / block
    var pattern = (0..<heads).map { _ in (0..<rows).map { _ in (0..<cols).map { _ in rng.next() % 2 == 0 } } }
    if heads > 1 && rows > 1 { pattern[1][1] = [Bool](repeating: false, count: cols) }
    return BlockMask(blockSize: block, heads: heads, queryBlocks: rows, keyBlocks: cols) { pattern[$0][$1][$2] }
}

/// Expects `body` to throw a VkAttnError whose description names `op` and `what`.
func expectVkAttnError(_ op: String, _ what: String, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) {
    do {
        try body()
        Issue.record("no error for \(what)", sourceLocation: sourceLocation)
    } catch let error as VkAttnError {
        #expect(error.description.contains(op) && error.description.contains(what), "\(error)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("not a VkAttnError: \(error)", sourceLocation: sourceLocation)
    }
}

@Suite("Flash attention: block masks per head and S2-Attention's sharding")
struct AttentionHeadMaskTests {
    @Test func forwardMHAAndGQA() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        try withDevice { device in
            for (hq, hkv, dtype) in [(3, 3, DType.f32), (4, 2, .f32), (4, 1, .f16)] {
                let (sq, sk) = (53, 83)
                let blocks = randomHeadMask(sq: sq, sk: sk, heads: hq, block: 16, &rng)
                for causal in [false, true] {
                    let c = AttentionCase(seed: seed, batch: 2, sq: sq, sk: sk, headsQ: hq, headsKV: hkv, dtype: dtype,
                                          attention: FlashAttention(mask: AttentionMask(causal: causal, blocks: blocks)))
                    try checkForward(c, device)
                }
            }
            // The path says the pattern is per head and that GQA runs unpacked.
            let blocks = randomHeadMask(sq: 20, sk: 20, heads: 4, block: 16, &rng)
            let c = AttentionCase(seed: seed, sq: 20, sk: 20, headsQ: 4, headsKV: 2, attention: FlashAttention(mask: AttentionMask(blocks: blocks)))
            let (q, k, v) = try c.tensors(device)
            let stream = try device.makeStream()
            let out = try c.attention.forward(q: q, k: k, v: v, on: stream)
            try stream.synchronize()
            #expect(out.path.contains("blocks/head") && out.path.contains("unpacked-GQA") && !out.path.contains("packGQA"), "\(out.path)")
        }
    }

    @Test func packedVarlenForwardAndDecode() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        try withDevice { device in
            let lq = [37, 1, 0, 50], lk = [45, 17, 3, 0]
            let blocks = randomHeadMask(sq: 50, sk: 45, heads: 4, block: 16, &rng)
            for causal in [false, true] {
                try checkForward(AttentionCase(seed: seed, packedQ: lq, packedK: lk, headsQ: 4, headsKV: 2, dtype: .f16,
                                               attention: FlashAttention(mask: AttentionMask(causal: causal, blocks: blocks))), device)
            }
            // Decode (split key range) reads the same per-head rows.
            let cache = randomHeadMask(sq: 3, sk: 161, heads: 2, block: 32, &rng)
            let path = try checkDecode(AttentionCase(seed: seed, batch: 2, sq: 3, sk: 161, headsQ: 2, headsKV: 1,
                                                     attention: FlashAttention(mask: AttentionMask(blocks: cache))), device, splits: 3)
            #expect(path.contains("split-kv x3") && path.contains("blocks/head"), "\(path)")
        }
    }

    @Test func bf16Forward() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        try withDevice { device in
            let blocks = randomHeadMask(sq: 40, sk: 70, heads: 2, block: 16, &rng)
            try checkForward(AttentionCase(seed: seed, sq: 40, sk: 70, headsQ: 2, headsKV: 1, dtype: .bf16,
                                           attention: FlashAttention(mask: AttentionMask(causal: true, blocks: blocks))), device)
        }
    }

    @Test func backwardMHAGQAAndPacked() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        try withDevice { device in
            let mha = randomHeadMask(sq: 45, sk: 61, heads: 2, block: 16, &rng)
            try checkBackward(AttentionCase(seed: seed, sq: 45, sk: 61, headsQ: 2,
                                            attention: FlashAttention(mask: AttentionMask(blocks: mha))), device)
            // GQA: the dK/dV pass walks each query head's own transposed rows.
            let gqa = randomHeadMask(sq: 50, sk: 50, heads: 4, block: 16, &rng)
            try checkBackward(AttentionCase(seed: seed, batch: 2, sq: 50, sk: 50, headsQ: 4, headsKV: 2,
                                            attention: FlashAttention(mask: AttentionMask(causal: true, blocks: gqa))), device)
            let packed = randomHeadMask(sq: 40, sk: 33, heads: 2, block: 16, &rng)
            try checkBackward(AttentionCase(seed: seed, packedQ: [3, 0, 40, 9], packedK: [5, 2, 33, 0], headsQ: 2, headsKV: 1, dtype: .f16,
                                            attention: FlashAttention(mask: AttentionMask(blocks: packed))), device, gradientDType: .f32)
        }
    }

    /// S2-Attention's causal pattern through the forward and backward, GQA with 2 shards.
    @Test func s2AttentionForwardAndBackward() throws {
        let seed = testSeed()
        try withDevice { device in
            let s = 97, block = 16, blocks = (s + block - 1) / block
            let mask = try BlockMask.s2Attention(blockSize: block, queryBlocks: blocks, keyBlocks: blocks, heads: 4, localBlocks: 1, stride: 2, causal: true)
            let attention = FlashAttention(mask: AttentionMask(causal: true, blocks: mask))
            try checkForward(AttentionCase(seed: seed, sq: s, sk: s, headsQ: 4, headsKV: 2, attention: attention), device)
            try checkBackward(AttentionCase(seed: seed, sq: s, sk: s, headsQ: 4, headsKV: 2, attention: attention), device)
        }
    }

    /// A head whose pattern is empty writes O = 0 and LSE = -inf for every row, and gets no gradient.
    @Test func headsThatSeeNoKey() throws {
        let seed = testSeed()
        try withDevice { device in
            let (sq, sk, hq) = (30, 41, 3)
            let blocks = BlockMask(blockSize: 16, heads: hq, queryBlocks: 2, keyBlocks: 3) { h, r, c in h != 1 && (r + c + h) % 2 == 0 }
            let c = AttentionCase(seed: seed, sq: sq, sk: sk, headsQ: hq, attention: FlashAttention(mask: AttentionMask(blocks: blocks)))
            try checkForward(c, device)
            let grads = try checkBackward(c, device)
            let (q, k, v) = try c.tensors(device)
            let stream = try device.makeStream()
            let out = try c.attention.forward(q: q, k: k, v: v, on: stream)
            try stream.synchronize()
            let o = try out.o.readFloats(), lse = try out.lse.readFloats()
            let dv = 32
            for i in 0..<sq {
                #expect(o[(i * hq + 1) * dv..<(i * hq + 2) * dv].allSatisfy { $0 == 0 }, "O row \(i), seed \(seed)")
                #expect(lse[1 * sq + i] == -.infinity, "LSE row \(i), seed \(seed)")
                #expect(grads[0][(i * hq + 1) * dv..<(i * hq + 2) * dv].allSatisfy { $0 == 0 }, "dQ row \(i), seed \(seed)")
            }
            #expect(lse[0..<sq].contains { $0.isFinite }, "head 0 sees keys, seed \(seed)")
        }
    }

    @Test func s2PatternCoversTheContext() throws {
        for (q, k, heads, local, stride, causal) in [(7, 7, 4, 1, 4, true), (5, 9, 6, 2, 3, false), (1, 1, 1, 0, 1, true),
                                                     (11, 13, 8, 0, 3, true), (4, 4, 2, 3, 2, false)] {
            let m = try BlockMask.s2Attention(blockSize: 32, queryBlocks: q, keyBlocks: k, heads: heads, localBlocks: local,
                                              stride: stride, causal: causal)
            #expect(m.heads == heads && m.queryBlocks == q && m.rowOffsets.count == heads * q + 1)
            for r in 0..<q {
                let diagonal = r + k - q
                for c in 0..<k {
                    let visible = !causal || c <= diagonal
                    // The union over the heads is the whole (causal) context.
                    let union = (0..<heads).contains { m.allows(head: $0, queryBlock: r, keyBlock: c) }
                    #expect(union == visible, "union at (\(r), \(c)) of \(q)x\(k) h\(heads) s\(stride)")
                    for h in 0..<heads {
                        let local = (c > diagonal - local) && (causal ? c <= diagonal : c < diagonal + local)
                        let expected = visible && (c % stride == h % stride || local)
                        #expect(m.allows(head: h, queryBlock: r, keyBlock: c) == expected, "head \(h) at (\(r), \(c))")
                        // Heads h and h + stride share a shard.
                        if h + stride < heads {
                            #expect(m.allows(head: h, queryBlock: r, keyBlock: c) == m.allows(head: h + stride, queryBlock: r, keyBlock: c))
                        }
                    }
                }
            }
        }
        // Strided shards keep about 1/stride of a long context.
        let long = try BlockMask.s2Attention(blockSize: 64, queryBlocks: 64, keyBlocks: 64, heads: 8, localBlocks: 2, stride: 4)
        let fraction = AttentionMask(blocks: long).keptFraction(sq: 4096, sk: 4096)
        #expect(fraction > 0.25 && fraction < 0.3, "kept \(fraction)")
        func expectS2Error(_ what: String, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> BlockMask) {
            expectVkAttnError("attention.s2Mask", what, sourceLocation: sourceLocation) { _ = try body() }
        }
        expectS2Error("stride") { try BlockMask.s2Attention(blockSize: 16, queryBlocks: 4, keyBlocks: 4, heads: 2, localBlocks: 1, stride: 3) }
        expectS2Error("stride") { try BlockMask.s2Attention(blockSize: 16, queryBlocks: 4, keyBlocks: 4, heads: 2, localBlocks: 1, stride: 0) }
        expectS2Error("localBlocks") { try BlockMask.s2Attention(blockSize: 16, queryBlocks: 4, keyBlocks: 4, heads: 2, localBlocks: -1, stride: 1) }
        expectS2Error("blockSize") { try BlockMask.s2Attention(blockSize: 24, queryBlocks: 4, keyBlocks: 4, heads: 2, localBlocks: 1, stride: 1) }
        expectS2Error("heads") { try BlockMask.s2Attention(blockSize: 16, queryBlocks: 4, keyBlocks: 4, heads: 0, localBlocks: 1, stride: 1) }
        expectS2Error("32-bit") { try BlockMask.s2Attention(blockSize: 16, queryBlocks: 1 << 20, keyBlocks: 1 << 20, heads: 2, localBlocks: 1, stride: 1) }
    }

    /// Cropping keeps each head's pattern on the sub-range (a rank's share), renumbered from 0;
    /// the kept fraction averages the heads' patterns.
    @Test func croppedAndKeptFraction() throws {
        var rng = SeededRandom(seed: testSeed())
        let (heads, rows, cols) = (3, 9, 11)
        let m = randomHeadMask(sq: rows * 16, sk: cols * 16, heads: heads, block: 16, &rng)
        for (qr, kr) in [(2..<7, 3..<11), (0..<9, 0..<11), (8..<12, 0..<1), (4..<4, 2..<5)] {
            let crop = m.cropped(queryBlocks: qr, keyBlocks: kr)
            #expect(crop.heads == heads && crop.queryBlocks == qr.count && crop.blockSize == m.blockSize)
            for h in 0..<heads {
                for r in 0..<qr.count {
                    for c in -1...kr.count {
                        let inside = c >= 0 && c < kr.count
                        #expect(crop.allows(head: h, queryBlock: r, keyBlock: c)
                                == (inside && m.allows(head: h, queryBlock: qr.lowerBound + r, keyBlock: kr.lowerBound + c)))
                    }
                }
            }
        }
        // The shared initializer and the shared query are head 0's.
        let shared = BlockMask(blockSize: 16, rowOffsets: [0, 1, 1], columnIndices: [1])
        #expect(shared.heads == 1 && shared.allows(queryBlock: 0, keyBlock: 1) && shared.allows(head: 5, queryBlock: 0, keyBlock: 1))
        // keptFraction against a count of allows(head:...).
        for causal in [false, true] {
            let mask = AttentionMask(causal: causal, windowLeft: 40, blocks: m)
            let (sq, sk) = (rows * 16 - 5, cols * 16 - 9)
            var kept = 0
            for h in 0..<heads {
                for i in 0..<sq { for j in 0..<sk where mask.allows(head: h, query: i, key: j, sq: sq, sk: sk) { kept += 1 } }
            }
            let expected = Double(kept) / Double(sq * sk * heads)
            #expect(abs(mask.keptFraction(sq: sq, sk: sk) - expected) < 1e-12)
        }
    }

    @Test func malformedPerHeadMasksAreTypedErrors() throws {
        func expectError(_ what: String, _ blocks: BlockMask, headsQ: Int = 3, sourceLocation: SourceLocation = #_sourceLocation) throws {
            try withDevice { device in
                let q = try device.makeTensor(shape: [1, 40, headsQ, 32], dtype: .f32)  // 3 query blocks of 16, 3 key blocks
                let stream = try device.makeStream()
                expectVkAttnError("attention.forward", what, sourceLocation: sourceLocation) {
                    _ = try FlashAttention(mask: AttentionMask(blocks: blocks)).forward(q: q, k: q, v: q, on: stream)
                }
                #expect(stream.dispatchesRecorded == 0, sourceLocation: sourceLocation)
                let o = try device.makeTensor(shape: [1, 40, headsQ, 32], dtype: .f32)
                let lse = try device.makeTensor(shape: [1, headsQ, 40], dtype: .f32)
                expectVkAttnError("attention.backward", what, sourceLocation: sourceLocation) {
                    _ = try FlashAttention(mask: AttentionMask(blocks: blocks)).backward(q: q, k: q, v: q, o: o, lse: lse, dO: o, on: stream)
                }
                #expect(stream.dispatchesRecorded == 0, sourceLocation: sourceLocation)
                try stream.synchronize()
            }
        }
        let full = { (heads: Int) in BlockMask(blockSize: 16, heads: heads, queryBlocks: 3, keyBlocks: 3) { _, _, _ in true } }
        try expectError("blockMask.heads", full(2))
        try expectError("blockMask.heads", full(4))
        // Two heads' rows where three are needed.
        try expectError("blockMask.rowOffsets", BlockMask(blockSize: 16, heads: 3, rowOffsets: Array(full(2).rowOffsets), columnIndices: full(2).columnIndices))
        // Head 1, query block 2 lists key block 3 (of 3).
        var columns = full(3).columnIndices
        columns[5 * 3 + 2] = 3
        try expectError("head 1, query block 2", BlockMask(blockSize: 16, heads: 3, rowOffsets: full(3).rowOffsets, columnIndices: columns))
        // Head 2, query block 0 unsorted.
        columns = full(3).columnIndices
        columns.swapAt(6 * 3, 6 * 3 + 1)
        try expectError("head 2, query block 0", BlockMask(blockSize: 16, heads: 3, rowOffsets: full(3).rowOffsets, columnIndices: columns))
        // One query head: a per-head mask of 1 pattern is the shared one.
        try withDevice { device in
            let c = AttentionCase(seed: testSeed(), sq: 40, sk: 40, headsQ: 1, attention: FlashAttention(mask: AttentionMask(blocks: full(1))))
            try checkForward(c, device)
        }
    }
}

/// The cooperative-matrix kernels read the same per-head rows (Mesa 26's lavapipe on a CPU).
@Suite("Per-head block masks on cooperative matrices", .enabled(if: CooperativeMatrixProbe.shouldRun, CooperativeMatrixProbe.skipComment))
struct AttentionHeadMaskCoopmatTests {
    @Test func forwardAndBackward() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        try withDevice { device in
            try requireCooperativeMatrix(device)
            let (sq, sk) = (70, 90)
            let blocks = randomHeadMask(sq: sq, sk: sk, heads: 4, block: 16, &rng)
            for causal in [false, true] {
                let attention = FlashAttention(mask: AttentionMask(causal: causal, blocks: blocks), preference: .cooperativeMatrix)
                try checkForward(AttentionCase(seed: seed, sq: sq, sk: sk, headsQ: 4, headsKV: 2, headDim: 64, dtype: .f16,
                                               attention: attention), device)
            }
            let packed = randomHeadMask(sq: 70, sk: 90, heads: 4, block: 16, &rng)
            try checkForward(AttentionCase(seed: seed, packedQ: [5, 0, 35, 1, 70], packedK: [5, 3, 40, 0, 90], headsQ: 4, headsKV: 2,
                                           headDim: 64, dtype: .f16,
                                           attention: FlashAttention(mask: AttentionMask(causal: true, blocks: packed), preference: .cooperativeMatrix)),
                             device)
            try checkBackward(AttentionCase(seed: seed, sq: sq, sk: sk, headsQ: 4, headsKV: 2, headDim: 64, dtype: .f16,
                                            attention: FlashAttention(mask: AttentionMask(causal: true, blocks: blocks),
                                                                      preference: .cooperativeMatrix)), device)
        }
    }
}
