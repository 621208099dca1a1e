import Testing
import VkAttn
import TestSupport

@Suite("Flash attention decode and merge")
struct AttentionDecodeTests {
    @Test(arguments: [1, 4, 16])
    func fewQueriesAgainstALongCache(queries: Int) throws {
        let seed = testSeed()
        try withDevice { device in
            let c = AttentionCase(seed: seed, batch: 2, sq: queries, sk: 1000, headsQ: 8, headsKV: 2, headDim: 64,
                                  attention: FlashAttention(mask: .causal))
            let path = try checkDecode(c, device)
            #expect(path.contains("split-kv"), "decode did not split: \(path)")
            for splits in [1, 3, 7] { _ = try checkDecode(c, device, splits: splits) }
        }
    }

    @Test func packedCachesOfDifferentLengthsIncludingEmpty() throws {
        let seed = testSeed()
        try withDevice { device in
            let c = AttentionCase(seed: seed, packedQ: [1, 2, 1, 1], packedK: [700, 0, 333, 64], headsQ: 4, headsKV: 1,
                                  attention: FlashAttention(mask: .causal))
            _ = try checkDecode(c, device)
            _ = try checkDecode(c, device, splits: 5)
        }
    }

    @Test func halfPrecisionCacheAndSlidingWindow() throws {
        let seed = testSeed()
        try withDevice { device in
            _ = try checkDecode(AttentionCase(seed: seed, sq: 2, sk: 900, headsQ: 4, headsKV: 4, headDim: 128, dtype: .f16), device)
            _ = try checkDecode(AttentionCase(seed: seed, sq: 3, sk: 500, headsQ: 2,
                                              attention: FlashAttention(mask: AttentionMask(causal: true, windowLeft: 100))), device, splits: 4)
        }
    }

    /// Partials over two key halves, computed by the forward into views of stacked tensors,
    /// merge into the full result.
    @Test func mergeCombinesPartialsExactly() throws {
        let seed = testSeed()
        try withDevice { device in
            let b = 2, sq = 6, h = 2, d = 32, sk = 90, half = 40
            let full = AttentionCase(seed: seed, batch: b, sq: sq, sk: sk, headsQ: h, headDim: d)
            var first = full, second = full
            first.kShape = [b, half, h, d]
            second.kShape = [b, sk - half, h, d]
            (first.vShape, second.vShape) = (first.kShape, second.kShape)
            // Split K and V along the sequence.
            func part(_ x: [Float], _ range: Range<Int>) -> [Float] {
                (0..<b).flatMap { bb in range.flatMap { j in (0..<h * d).map { x[((bb * sk + j) * h) * d + $0] } } }
            }
            first.k = part(full.k, 0..<half); first.v = part(full.v, 0..<half)
            second.k = part(full.k, half..<sk); second.v = part(full.v, half..<sk)
            // Causal on a part aligns with that part's end; use no mask so parts are plain subsets.
            let qShape = [b, sq, h, d], lseShape = [b, h, sq]
            let oBytes = qShape.reduce(1, *) * 4, lseBytes = lseShape.reduce(1, *) * 4
            let partialO = try device.makeTensor(shape: [2] + qShape, dtype: .f32)
            let partialLSE = try device.makeTensor(shape: [2] + lseShape, dtype: .f32)
            let stream = try device.makeStream()
            for (p, c) in [first, second].enumerated() {
                let (q, k, v) = try c.tensors(device)
                let views = AttentionOutput(o: try Tensor(partialO.buffer, shape: qShape, dtype: .f32, byteOffset: p * oBytes),
                                            lse: try Tensor(partialLSE.buffer, shape: lseShape, dtype: .f32, byteOffset: p * lseBytes))
                _ = try c.attention.forward(q: q, k: k, v: v, into: views, on: stream)
            }
            try stream.barrier()
            let o = try device.makeTensor(shape: qShape, dtype: .f32)
            let lse = try device.makeTensor(shape: lseShape, dtype: .f32)
            try poison(o, device)
            try AttentionMerge.merge(partialO: partialO, partialLSE: partialLSE, into: o, lse: lse, on: stream)
            try stream.synchronize()
            let ref = AttentionReference.forward(try full.problem, q: full.q, k: full.k, v: full.v)
            #expect(relativeError(try o.readFloats(), ref.o) <= 1e-5, "seed \(seed)")
            #expect(relativeError(try lse.readFloats(), ref.lse) <= 1e-5, "seed \(seed)")
        }
    }

    @Test func mergeOfRowsNoPartialSawIsZeroAndMinusInfinity() throws {
        try withDevice { device in
            let partialO = try device.makeTensor([Float](repeating: 5, count: 3 * 4 * 32), shape: [3, 4, 1, 32])
            let lseValues: [Float] = [-.infinity, 0.5, -.infinity, -.infinity,
                                      -.infinity, -.infinity, -.infinity, 2,
                                      -.infinity, 1.5, -.infinity, -.infinity]
            let partialLSE = try device.makeTensor(lseValues, shape: [3, 1, 4])
            let o = try device.makeTensor(shape: [4, 1, 32], dtype: .f16)
            let lse = try device.makeTensor(shape: [1, 4], dtype: .f32)
            let stream = try device.makeStream()
            try AttentionMerge.merge(partialO: partialO, partialLSE: partialLSE, into: o, lse: lse, on: stream)
            try stream.synchronize()
            let out = try o.readFloats(), l = try lse.readFloats()
            #expect(l[0] == -.infinity && l[2] == -.infinity)
            #expect(abs(Double(l[1]) - (1.5 + log1p(exp(-1.0)))) < 1e-5 && abs(l[3] - 2) < 1e-6)
            #expect(out[0..<32].allSatisfy { $0 == 0 } && out[64..<96].allSatisfy { $0 == 0 })
            #expect(out[32..<64].allSatisfy { abs($0 - 5) < 1e-2 })
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
