import Testing
import VkAttn
import TestSupport

/// K/V caches as serving engines keep them: mixed precision (Q of one type over K/V of
/// another), an int8 cache with per-block scales, and a paged cache (KVPages), in the forward
/// (chunked prefill over a cached prefix) and decode, against the fp64 reference; paged results
/// must equal contiguous ones bit for bit.
@Suite("Attention K/V caches: mixed precision, int8, pages")
struct AttentionKVCacheTests {
    /// A packed problem: per-sequence query and cache lengths, heads, dims; host data.
    struct Cache {
        var queries: [Int], keys: [Int]
        var hq: Int, hkv: Int, dk: Int, dv: Int
        var q: [Float], k: [Float], v: [Float]
        var layout: AttentionLayout {
            func cumulative(_ n: [Int]) -> [Int32] { n.reduce(into: [Int32(0)]) { $0.append($0.last! + Int32($1)) } }
            return .packed(cuSeqlensQ: cumulative(queries), cuSeqlensK: cumulative(keys))
        }
        var totalQ: Int { queries.reduce(0, +) }
        var totalK: Int { keys.reduce(0, +) }
        var qShape: [Int] { [totalQ, hq, dk] }
        var kShape: [Int] { [totalK, hkv, dk] }
        var vShape: [Int] { [totalK, hkv, dv] }

        init(seed: UInt64, queries: [Int], keys: [Int], hq: Int, hkv: Int, dk: Int, dv: Int, qType: DType, kvType: DType) {
            (self.queries, self.keys, self.hq, self.hkv, self.dk, self.dv) = (queries, keys, hq, hkv, dk, dv)
            var rng = SeededRandom(seed: seed)
            let total = (queries.reduce(0, +), keys.reduce(0, +))
            q = rng.floats(total.0 * hq * dk, in: -1...1).map(qType.rounded)
            k = rng.floats(total.1 * hkv * dk, in: -1...1).map(kvType.rounded)
            v = rng.floats(total.1 * hkv * dv, in: -1...1).map(kvType.rounded)
        }

        func reference(_ attention: FlashAttention, k: [Float]? = nil, v: [Float]? = nil) throws -> (o: [Double], lse: [Double]) {
            let problem = try AttentionReference.Problem(qShape: qShape, kShape: kShape, vShape: vShape, layout: layout, attention: attention)
            return AttentionReference.forward(problem, q: q, k: k ?? self.k, v: v ?? self.v)
        }

        /// K or V rows moved into `pageCount` pages of `pageSize` tokens, sequences' pages in a
        /// shuffled order; returns the paged host data and the block table.
        func paged(_ rows: [Float], width: Int, pageSize: Int, table: [Int32], perSequence: Int, pageCount: Int) -> [Float] {
            var out = [Float](repeating: .nan, count: pageCount * pageSize * hkv * width)
            var start = 0
            for (b, n) in keys.enumerated() {
                for j in 0..<n {
                    let page = Int(table[b * perSequence + j / pageSize])
                    let dst = ((page * pageSize + j % pageSize) * hkv) * width, src = ((start + j) * hkv) * width
                    for x in 0..<(hkv * width) { out[dst + x] = rows[src + x] }
                }
                start += n
            }
            return out.map { $0.isNaN ? 7 : $0 }  // unused slots hold junk that must never be read
        }
    }

    static func bound(_ types: DType...) -> Double {
        types.contains(.bf16) ? 8e-3 : types.contains(.f16) ? 2e-3 : 1e-5
    }

    @Test(arguments: [(DType.f32, DType.f16), (.f32, .bf16), (.f16, .bf16), (.bf16, .f16)])
    func mixedPrecisionForwardAndDecode(qType: DType, kvType: DType) throws {
        let seed = testSeed()
        try withDevice { device in
            let c = Cache(seed: seed, queries: [5, 1, 0, 17], keys: [40, 1, 9, 130], hq: 4, hkv: 2, dk: 59, dv: 64, qType: qType, kvType: kvType)
            let q = try device.makeTensor(c.q, shape: c.qShape, dtype: qType)
            let k = try device.makeTensor(c.k, shape: c.kShape, dtype: kvType)
            let v = try device.makeTensor(c.v, shape: c.vShape, dtype: kvType)
            let attention = FlashAttention(mask: .causal)
            let ref = try c.reference(attention)
            let stream = try device.makeStream()
            let fwd = try attention.forward(q: q, k: k, v: v, layout: c.layout, on: stream)
            let dec = try attention.decode(q: q, kCache: k, vCache: v, layout: c.layout, splits: 3, on: stream)
            try stream.synchronize()
            for (name, out) in [("forward", fwd), ("decode", dec)] {
                let e = relativeError(try out.o.readFloats(), ref.o), l = relativeError(try out.lse.readFloats(), ref.lse)
                #expect(e <= Self.bound(qType, kvType) && l <= 1e-5, "\(name) \(qType)/\(kvType) O \(e) LSE \(l) \(out.path) seed \(seed)")
                #expect(out.path.contains("q\(qType)-kv\(kvType)"), "\(out.path)")
                #expect(out.o.dtype == qType)
            }
        }
    }

    /// Quantizes rows of `width` per KVQuantization's layout (blocks of 32, scale = max|x| / 127).
    static func quantize(_ x: [Float], width: Int) -> (q: [Float], scales: [Float]) {
        let rows = x.count / width, blocks = (width + 31) / 32
        var q = [Float](repeating: 0, count: x.count), scales = [Float](repeating: 0, count: rows * blocks)
        for r in 0..<rows {
            for c in 0..<blocks {
                let range = (r * width + 32 * c)..<(r * width + min(width, 32 * c + 32))
                let scale = (range.map { abs(x[$0]) }.max() ?? 0) / 127
                scales[r * blocks + c] = scale
                for i in range { q[i] = scale == 0 ? 0 : max(-127, min(127, (x[i] / scale).rounded(.toNearestOrAwayFromZero))) }
            }
        }
        return (q, scales)
    }

    @Test(arguments: [DType.f32, .f16, .bf16])
    func int8CacheWithBlockScales(qType: DType) throws {
        let seed = testSeed()
        try withDevice { device in
            let c = Cache(seed: seed, queries: [1, 3, 1], keys: [200, 77, 1], hq: 8, hkv: 2, dk: 45, dv: 64, qType: qType, kvType: .f32)
            let (kq, ks) = Self.quantize(c.k, width: c.dk), (vq, vs) = Self.quantize(c.v, width: c.dv)
            let scaleShape = { (shape: [Int]) in Array(shape.dropLast()) + [(shape[shape.count - 1] + 31) / 32] }
            let q = try device.makeTensor(c.q, shape: c.qShape, dtype: qType)
            let k = try device.makeTensor(kq, shape: c.kShape, dtype: .i8)
            let v = try device.makeTensor(vq, shape: c.vShape, dtype: .i8)
            let scales = (k: try device.makeTensor(ks, shape: scaleShape(c.kShape)), v: try device.makeTensor(vs, shape: scaleShape(c.vShape)))
            // The reference sees the dequantized cache: the kernel must add no error of its own.
            let dequant = { (values: [Float], s: [Float], width: Int) in values.enumerated().map { i, x in x * s[(i / width) * ((width + 31) / 32) + (i % width) / 32] } }
            let attention = FlashAttention(mask: .causal, sinks: [Float](repeating: 0.5, count: 8))
            let ref = try c.reference(attention, k: dequant(kq, ks, c.dk), v: dequant(vq, vs, c.dv))
            let stream = try device.makeStream()
            for splits in [1, 4] {
                let plan = try attention.decodePlan(q: q, kCache: k, vCache: v, layout: c.layout, splits: splits, scales: scales)
                let out = try plan.encode(q: q, k: k, v: v, scales: scales, into: nil, on: stream)
                try stream.synchronize()
                let e = relativeError(try out.o.readFloats(), ref.o), l = relativeError(try out.lse.readFloats(), ref.lse)
                #expect(e <= Self.bound(qType) && l <= 1e-5, "int8 under \(qType), splits \(splits): O \(e) LSE \(l) \(out.path) seed \(seed)")
                #expect(out.path.contains("kvi8"), "\(out.path)")
            }
        }
    }

    @Test(arguments: [DType.f16, .bf16, .f32])
    func pagedEqualsContiguousExactly(dtype: DType) throws {
        let seed = testSeed()
        try withDevice { device in
            var rng = SeededRandom(seed: seed ^ 0xACE)
            let pageSize = 16
            // Decode (one query per sequence) and chunked prefill (the last queries of each sequence).
            for queries in [[1, 1, 1, 1], [7, 1, 0, 16]] {
                let keys = [100, 1, 33, 64]
                let c = Cache(seed: seed, queries: queries, keys: keys, hq: 4, hkv: 2, dk: 64, dv: 40, qType: dtype, kvType: dtype)
                let perSequence = (keys.max()! + pageSize - 1) / pageSize, pageCount = keys.count * perSequence + 3
                var ids = Array(0..<pageCount).map(Int32.init)
                for i in stride(from: ids.count - 1, to: 0, by: -1) { ids.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
                let pages = KVPages(pageSize: pageSize, pagesPerSequence: perSequence, blockTable: Array(ids.prefix(keys.count * perSequence)))
                let q = try device.makeTensor(c.q, shape: c.qShape, dtype: dtype)
                let k = try device.makeTensor(c.k, shape: c.kShape, dtype: dtype)
                let v = try device.makeTensor(c.v, shape: c.vShape, dtype: dtype)
                let kPaged = try device.makeTensor(c.paged(c.k, width: c.dk, pageSize: pageSize, table: pages.blockTable, perSequence: perSequence, pageCount: pageCount),
                                                   shape: [pageCount, pageSize, c.hkv, c.dk], dtype: dtype)
                let vPaged = try device.makeTensor(c.paged(c.v, width: c.dv, pageSize: pageSize, table: pages.blockTable, perSequence: perSequence, pageCount: pageCount),
                                                   shape: [pageCount, pageSize, c.hkv, c.dv], dtype: dtype)
                let attention = FlashAttention(mask: .causal)
                let stream = try device.makeStream()
                let runs = [
                    try attention.decode(q: q, kCache: k, vCache: v, layout: c.layout, splits: 2, on: stream),
                    try attention.decode(q: q, kCache: kPaged, vCache: vPaged, layout: c.layout, pages: pages, splits: 2, on: stream),
                    try attention.forward(q: q, k: k, v: v, layout: c.layout, on: stream),
                    try attention.forward(q: q, k: kPaged, v: vPaged, layout: c.layout, pages: pages, on: stream),
                ]
                try stream.synchronize()
                let ref = try c.reference(attention)
                for pair in [(0, 1), (2, 3)] {
                    let (a, b) = (runs[pair.0], runs[pair.1])
                    #expect(try a.o.readFloats() == b.o.readFloats() && a.lse.readFloats() == b.lse.readFloats(),
                            "paged != contiguous (\(dtype), queries \(queries)): \(b.path) seed \(seed)")
                    #expect(b.path.contains("paged(16)"), "\(b.path)")
                    #expect(relativeError(try b.o.readFloats(), ref.o) <= Self.bound(dtype), "\(b.path) seed \(seed)")
                }
            }
        }
    }

    /// An int8 cache filled page by page with `append` (values and scales) decodes exactly as
    /// the contiguous int8 cache quantized in one go.
    @Test func appendedInt8PagesEqualContiguous() throws {
        let seed = testSeed()
        try withDevice { device in
            let c = Cache(seed: seed, queries: [1, 1], keys: [137, 12], hq: 4, hkv: 1, dk: 33, dv: 64, qType: .f16, kvType: .f32)
            let stream = try device.makeStream()
            let q = try device.makeTensor(c.q, shape: c.qShape, dtype: .f16)
            let kq = try KVQuantization.quantize(try device.makeTensor(c.k, shape: c.kShape), on: stream)
            let vq = try KVQuantization.quantize(try device.makeTensor(c.v, shape: c.vShape), on: stream)
            let pages = KVPages(pageSize: 16, pagesPerSequence: 9, blockTable: (0..<18).map { Int32((($0 * 5) + 3) % 18) })
            let kPaged = try device.makeQuantizedTensor(shape: [18, 16, 1, c.dk])
            let vPaged = try device.makeQuantizedTensor(shape: [18, 16, 1, c.dv])
            try stream.barrier()
            // All tokens at once into empty pages (row t of the packed cache is sequence b's token t - start).
            try pages.append(kq, cuSeqlens: [0, 137, 149], into: kPaged, cachedLengths: [0, 0], on: stream)
            try pages.append(vq, cuSeqlens: [0, 137, 149], into: vPaged, cachedLengths: [0, 0], on: stream)
            try stream.barrier()
            let attention = FlashAttention(mask: .causal)
            let contiguous = try attention.decode(q: q, kCache: kq, vCache: vq, layout: c.layout, splits: 2, on: stream)
            let paged = try attention.decode(q: q, kCache: kPaged, vCache: vPaged, layout: c.layout, pages: pages, splits: 2, on: stream)
            try stream.synchronize()
            #expect(try contiguous.o.readFloats() == paged.o.readFloats() && contiguous.lse.readFloats() == paged.lse.readFloats(),
                    "\(paged.path) seed \(seed)")
            #expect(paged.path.contains("kvi8") && paged.path.contains("paged(16)"), "\(paged.path)")
            #expect(throws: VkAttnError.self) {  // the table covers 144 tokens per sequence
                try pages.append(kq, cuSeqlens: [0, 137, 149], into: kPaged, cachedLengths: [20, 0], on: stream)  // 157 > 144
            }
        }
    }

    /// Nothing to append, or an empty cache and query: no command at all.
    @Test func emptyAppendsAndCachesRecordNothing() throws {
        try withDevice { device in
            let stream = try device.makeStream()
            let pages = KVPages(pageSize: 4, pagesPerSequence: 2, blockTable: [0, 1, 2, 3])
            let cache = try device.makeTensor(shape: [4, 4, 1, 8], dtype: .f16)
            try pages.append(try device.makeTensor(shape: [0, 1, 8], dtype: .f16), cuSeqlens: [0, 0, 0], into: cache,
                             cachedLengths: [3, 8], on: stream)
            let quantized = try device.makeQuantizedTensor(shape: [4, 4, 1, 8])
            try pages.append(try device.makeQuantizedTensor(shape: [0, 1, 8]), cuSeqlens: [0, 0, 0], into: quantized,
                             cachedLengths: [0, 0], on: stream)
            // A paged decode of no query rows.
            let out = try FlashAttention().decode(q: try device.makeTensor(shape: [0, 2, 8], dtype: .f16), kCache: cache, vCache: cache,
                                                  layout: .packed(cuSeqlensQ: [0, 0, 0], cuSeqlensK: [0, 3, 8]), pages: pages, on: stream)
            #expect(out.o.isEmpty && out.lse.isEmpty)
            #expect(stream.dispatchesRecorded == 0 && stream.copiesRecorded == 0 && stream.fillsRecorded == 0)
            try stream.synchronize()
        }
    }

    @Test func badCachesAreTypedErrors() throws {
        try withDevice { device in
            let stream = try device.makeStream()
            let q = try device.makeTensor(shape: [2, 2, 32], dtype: .f16)
            let kPages = try device.makeTensor(shape: [4, 8, 1, 32], dtype: .f16)
            let layout = AttentionLayout.packed(cuSeqlensQ: [0, 1, 2], cuSeqlensK: [0, 10, 19])
            let cases: [(KVPages, AttentionLayout, String)] = [
                (KVPages(pageSize: 8, pagesPerSequence: 2, blockTable: [0, 1, 2, 9]), layout, "outside the cache's 4 pages"),
                (KVPages(pageSize: 8, pagesPerSequence: 1, blockTable: [0, 1]), layout, "more than 1 pages"),
                (KVPages(pageSize: 8, pagesPerSequence: 2, blockTable: [0, 1, 2]), layout, "blockTable"),
                (KVPages(pageSize: 8, pagesPerSequence: 2, blockTable: [0, 1, 2, 3]), .dense, "packed layout"),
            ]
            for (pages, layout, words) in cases {
                do {
                    _ = try FlashAttention().decode(q: layout == .dense ? try device.makeTensor(shape: [2, 1, 2, 32], dtype: .f16) : q,
                                                    kCache: kPages, vCache: kPages, layout: layout, pages: pages, on: stream)
                    Issue.record("no error for \(words)")
                } catch let error as VkAttnError {
                    #expect(error.description.contains(words), "\(error)")
                }
            }
            // int8 without scales, f32 K under f16 Q.
            let k8 = try device.makeTensor(shape: [2, 1, 32], dtype: .i8)
            #expect(throws: VkAttnError.self) { _ = try FlashAttention().forward(q: q, k: k8, v: k8, layout: .packed(cuSeqlensQ: [0, 2], cuSeqlensK: [0, 2]), on: stream) }
            let k32 = try device.makeTensor(shape: [2, 1, 32], dtype: .f32)
            #expect(throws: VkAttnError.self) { _ = try FlashAttention().forward(q: q, k: k32, v: k32, layout: .packed(cuSeqlensQ: [0, 2], cuSeqlensK: [0, 2]), on: stream) }
            try stream.synchronize()
        }
    }
}
