import ArgumentParser
import VkAttn
import VkAttnReference

struct Decode: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Attention decode: a few queries per sequence against a long K/V cache (split-KV + merge).",
        discussion: """
            GB/s counts the bytes that must move: the K and V cache read once, Q read, O and LSE written. \
            ratio_to_copy is against vkCmdCopyBuffer of the same byte count in the same run. TFLOP/s counts \
            4*queries*cache*Hq*D, scaled by the mask's kept fraction. --check compares every row with the \
            fp64 reference. --kv-dtype stores the cache in another type than Q (f16/bf16 under any Q, or int8 \
            with a scale per 32 elements, quantized on the device; the reference then sees the dequantized \
            cache). --page-size keeps it in shuffled pages of that many tokens with a block table, and \
            --check also runs the contiguous cache and requires the same bits.
            """)

    @OptionGroup var device: DeviceOptions
    @OptionGroup var measure: MeasureOptions
    @OptionGroup var shape: AttentionShapeOptions
    @Option(help: "Query rows per sequence (1 to 16 is the decode regime).") var queries = 1
    @Option(help: "Cache length (keys) per sequence.") var cache = 16384
    @Option(name: .customLong("cache-lengths"), help: "Packed caches: comma-separated cache lengths, one per sequence (overrides --batch and --cache).")
    var cacheLengths: String?
    @Option(help: "Key-range splits (default: from the device's compute units).") var splits: Int?
    @Option(name: .customLong("kv-dtype"), help: "Cache storage (default: --dtype): f32, f16, bf16, or int8 with per-block scales.")
    var kvDType: CacheStorageType?
    @Option(name: .customLong("page-size"), help: "Keep the cache in pages of this many tokens (a block table per sequence).")
    var pageSize: Int?

    func validate() throws {
        try Limits.positive(["--queries": queries, "--cache": cache])
        try Limits.positive("--splits", splits)
        try Limits.positive("--page-size", pageSize)
        try Limits.require(try operands().list)
    }

    /// Q, K, V and the layout the options describe, checked for overflow.
    func operands() throws -> (list: [(name: String, shape: [Int], element: Int)], layout: AttentionLayout,
                               qShape: [Int], kShape: [Int], vShape: [Int], lengths: [Int]?) {
        let hkv = shape.kvHeads ?? shape.heads
        var layout = AttentionLayout.dense
        var qShape = [shape.batch, queries, shape.heads, shape.dim]
        var kShape = [shape.batch, cache, hkv, shape.dim]
        var lengths: [Int]?
        // A paged cache takes the packed layout: equal lengths when --cache-lengths is not given.
        let lengthList = try cacheLengths.map { try parseList($0, "--cache-lengths") }
            ?? (pageSize != nil ? [Int](repeating: cache, count: shape.batch) : nil)
        if let parsed = lengthList {
            let cuK = try Limits.cumulative(parsed, "--cache-lengths")
            let cuQ = try Limits.cumulative([Int](repeating: queries, count: parsed.count), "--queries")
            layout = .packed(cuSeqlensQ: cuQ, cuSeqlensK: cuK)
            qShape = [Int(cuQ.last ?? 0), shape.heads, shape.dim]
            kShape = [Int(cuK.last ?? 0), hkv, shape.dim]
            lengths = parsed
        }
        let vShape = Array(kShape.dropLast()) + [shape.valueDim]
        let e = shape.storage.byteSize, kvBytes = cacheType.dtype.byteSize
        var list = [("Q", qShape, e), ("K cache", kShape, kvBytes), ("V cache", vShape, kvBytes)]
        if let pageSize, let lengths {
            // The paged copies: every sequence's pages plus two spare ones (see `run`).
            let longest = lengths.max() ?? 0
            let pageCount = lengths.count * (longest / pageSize + (longest % pageSize == 0 ? 0 : 1)) + 2
            list += [("K pages", [pageCount, pageSize, hkv, shape.dim], 4), ("V pages", [pageCount, pageSize, hkv, shape.valueDim], 4)]
        }
        return (list, layout, qShape, kShape, vShape, lengths)
    }

    /// The cache's storage: `--kv-dtype`, else Q's.
    var cacheType: (dtype: DType, name: String) {
        switch kvDType {
        case .int8: return (.i8, "int8")
        case .f16: return (.f16, "f16")
        case .bf16: return (.bf16, "bf16")
        case .f32: return (.f32, "f32")
        case nil: return (shape.storage, shape.storage.rawValue)
        }
    }

    /// The cache's K or V rows ([tokens, Hkv, width] host data) moved into shuffled pages; unused
    /// page slots hold junk that must never be read.
    static func paged(_ rows: [Float], lengths: [Int], width: Int, heads: Int, pages: KVPages, pageCount: Int) -> [Float] {
        var out = [Float](repeating: 7, count: pageCount * pages.pageSize * heads * width)
        var start = 0
        for (b, n) in lengths.enumerated() {
            for j in 0..<n {
                let page = Int(pages.blockTable[b * pages.pagesPerSequence + j / pages.pageSize])
                let dst = (page * pages.pageSize + j % pages.pageSize) * heads * width, src = (start + j) * heads * width
                for x in 0..<(heads * width) { out[dst + x] = rows[src + x] }
            }
            start += n
        }
        return out
    }

    func run() throws {
        let context = try BenchContext(device)
        let dev = context.device
        let dtype = shape.storage
        let hkv = shape.kvHeads ?? shape.heads
        var rng = SeededRandom.fresh()
        let described = try operands()
        try Limits.require(described.list, on: context)
        let layout = described.layout, qShape = described.qShape, kShape = described.kShape, vShape = described.vShape
        let lengths = described.lengths ?? [Int](repeating: cache, count: shape.batch)
        let attention = shape.attention(mask: try shape.mask(), &rng)
        let kvType = cacheType.dtype
        let hq = rng.floats(qShape.reduce(1, *)).map(dtype.rounded)
        // int8 caches start as f32 and are quantized on the device; the reference sees their
        // dequantized values (QuantizationReference, which the quantize kernel matches bit for bit).
        let cacheRound = kvType == .i8 ? DType.f32.rounded : kvType.rounded
        var hk = rng.floats(kShape.reduce(1, *)).map(cacheRound)
        var hv = rng.floats(vShape.reduce(1, *)).map(cacheRound)
        let q = try dev.makeTensor(hq, shape: qShape, dtype: dtype)

        // The cache: contiguous, and with --page-size also in shuffled pages.
        var pages: KVPages?
        var pageCount = 0
        if let pageSize {
            let longest = lengths.max() ?? 0
            let perSequence = longest / pageSize + (longest % pageSize == 0 ? 0 : 1)
            pageCount = lengths.count * perSequence + 2  // two spare pages nobody's table lists
            var ids = (0..<pageCount).map(Int32.init)
            for i in stride(from: ids.count - 1, to: 0, by: -1) { ids.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
            pages = KVPages(pageSize: pageSize, pagesPerSequence: perSequence, blockTable: Array(ids.prefix(lengths.count * perSequence)))
        }
        let setup = try dev.makeStream()
        func makeCache(_ rows: [Float], _ rowShape: [Int], width: Int) throws -> (plain: Tensor, quantized: QuantizedTensor?, pagedPlain: Tensor?, pagedQuantized: QuantizedTensor?) {
            let storage = kvType == .i8 ? DType.f32 : kvType
            let plain = try dev.makeTensor(rows, shape: rowShape, dtype: storage)
            var pagedPlain: Tensor?
            if let pages {
                pagedPlain = try dev.makeTensor(Self.paged(rows, lengths: lengths, width: width, heads: hkv, pages: pages, pageCount: pageCount),
                                                shape: [pageCount, pages.pageSize, hkv, width], dtype: storage)
            }
            guard kvType == .i8 else { return (plain, nil, pagedPlain, nil) }
            return (plain, try KVQuantization.quantize(plain, on: setup), pagedPlain, try pagedPlain.map { try KVQuantization.quantize($0, on: setup) })
        }
        let kc = try makeCache(hk, kShape, width: shape.dim), vc = try makeCache(hv, vShape, width: shape.valueDim)
        try setup.synchronize()
        if kvType == .i8 {
            let (kq, ks) = QuantizationReference.quantize(hk, rowWidth: shape.dim)
            hk = QuantizationReference.dequantize(values: kq, scales: ks, rowWidth: shape.dim)
            let (vq, vs) = QuantizationReference.quantize(hv, rowWidth: shape.valueDim)
            hv = QuantizationReference.dequantize(values: vq, scales: vs, rowWidth: shape.valueDim)
        }
        func run(paged: Bool, into output: AttentionOutput?, on stream: Stream) throws -> AttentionOutput {
            let usePages = paged ? pages : nil
            if let kq = paged ? kc.pagedQuantized : kc.quantized, let vq = paged ? vc.pagedQuantized : vc.quantized {
                return try attention.decode(q: q, kCache: kq, vCache: vq, layout: layout, pages: usePages, splits: splits, into: output, on: stream)
            }
            let (k, v) = paged ? (kc.pagedPlain ?? kc.plain, vc.pagedPlain ?? vc.plain) : (kc.plain, vc.plain)
            return try attention.decode(q: q, kCache: k, vCache: v, layout: layout, pages: usePages, splits: splits, into: output, on: stream)
        }

        var output: AttentionOutput?
        let timing = try Timing.measure(dev, warmup: measure.warmup, iterations: measure.iterations) { stream in
            output = try run(paged: pages != nil, into: output, on: stream)
        }
        guard let out = output else { throw OptionError("decode produced nothing") }

        let rowsQ = qShape.reduce(1, *) / shape.dim
        // int8: one byte per value plus a 4-byte scale per 32.
        let cacheBytes = { (n: Int, width: Int) in kvType == .i8 ? n + n / width * ((width + 31) / 32) * 4 : n * kvType.byteSize }
        let bytes = cacheBytes(kShape.reduce(1, *), shape.dim) + cacheBytes(vShape.reduce(1, *), shape.valueDim)
            + (qShape.reduce(1, *) + rowsQ * shape.valueDim) * dtype.byteSize + rowsQ * 4
        let kept = lengths.reduce(0.0) { $0 + Double(queries * $1) * attention.mask.keptFraction(sq: queries, sk: $1) }
        let flops = 2 * kept * Double(shape.heads) * Double(shape.dim + shape.valueDim)
        let copyGBps = try CopyReference.gbps(context, bytes: bytes, warmup: measure.warmup, iterations: measure.iterations)
        let gbps = Double(bytes) / (timing.medianMs * 1e6)

        var check: (CheckResult, Double?) = (.skipped, nil)
        if measure.check {
            let problem = try AttentionReference.Problem(qShape: qShape, kShape: kShape, vShape: vShape, layout: layout, attention: attention)
            let ref = AttentionReference.forward(problem, q: hq, k: hk, v: hv)
            let gpuO = try out.o.readFloats(), gpuL = try out.lse.readFloats()
            var num = 0.0, den = 0.0, lseError = 0.0
            for (x, y) in zip(gpuO, ref.o) {
                let diff = Double(x) - y
                num += diff.isNaN ? .infinity : diff * diff
                den += y * y
            }
            for (x, y) in zip(gpuL, ref.lse) {
                if y.isInfinite || x.isInfinite {
                    if Double(x) != y { lseError = .infinity }
                } else {
                    lseError = max(lseError, abs(Double(x) - y) / max(abs(y), 1))
                }
            }
            var error = max((num / max(den, 1e-12)).squareRoot(), lseError)
            if pages != nil {
                // The paged cache must give the contiguous cache's result bit for bit.
                let stream = try dev.makeStream()
                let contiguous = try run(paged: false, into: nil, on: stream)
                try stream.synchronize()
                let same = try contiguous.o.readFloats().elementsEqual(gpuO, by: { $0.bitPattern == $1.bitPattern })
                    && contiguous.lse.readFloats().elementsEqual(gpuL, by: { $0.bitPattern == $1.bitPattern })
                note("check: paged cache \(same ? "equals" : "DIFFERS FROM") the contiguous cache bit for bit")
                if !same { error = .infinity }
            }
            let bound = [dtype, kvType].contains(.bf16) ? checkBound(.bf16) : [dtype, kvType].contains(.f16) ? checkBound(.f16) : checkBound(dtype)
            check = (error <= bound ? .pass : .fail, error)
        }
        var config: [String: ConfigValue] = [
            "batch": .int(lengths.count), "queries": .int(queries), "cache": .int(lengths.max() ?? 0),
            "heads": .int(shape.heads), "kv_heads": .int(hkv), "dim": .int(shape.dim), "dtype": .string(dtype.rawValue),
            "mask": .string(shape.maskName(attention.mask)), "packed": .bool(cacheLengths != nil),
        ]
        if shape.valueDim != shape.dim { config["dim_v"] = .int(shape.valueDim) }
        if kvType != dtype { config["kv_dtype"] = .string(cacheType.name) }
        if let pageSize { config["page_size"] = .int(pageSize) }
        shape.biasConfig(&config)
        try context.report([ResultRow(op: "attention.decode", device: context.deviceName, config: config, path: out.path,
                                      timing: timing, gbps: gbps, tflops: flops / (timing.medianMs * 1e9),
                                      ratioToCopy: gbps / copyGBps, check: check.0, maxRelError: check.1)],
                           json: measure.json)
    }
}
