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
            fp64 reference.
            """)

    @OptionGroup var device: DeviceOptions
    @OptionGroup var measure: MeasureOptions
    @OptionGroup var shape: AttentionShapeOptions
    @Option(help: "Query rows per sequence (1 to 16 is the decode regime).") var queries = 1
    @Option(help: "Cache length (keys) per sequence.") var cache = 16384
    @Option(name: .customLong("cache-lengths"), help: "Packed caches: comma-separated cache lengths, one per sequence (overrides --batch and --cache).")
    var cacheLengths: String?
    @Option(help: "Key-range splits (default: from the device's compute units).") var splits: Int?

    func validate() throws {
        try Limits.positive(["--queries": queries, "--cache": cache])
        try Limits.positive("--splits", splits)
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
        if let cacheLengths {
            let parsed = try parseList(cacheLengths, "--cache-lengths")
            let cuK = try Limits.cumulative(parsed, "--cache-lengths")
            let cuQ = try Limits.cumulative([Int](repeating: queries, count: parsed.count), "--queries")
            layout = .packed(cuSeqlensQ: cuQ, cuSeqlensK: cuK)
            qShape = [Int(cuQ.last ?? 0), shape.heads, shape.dim]
            kShape = [Int(cuK.last ?? 0), hkv, shape.dim]
            lengths = parsed
        }
        let vShape = Array(kShape.dropLast()) + [shape.valueDim]
        let e = shape.storage.byteSize
        return ([("Q", qShape, e), ("K cache", kShape, e), ("V cache", vShape, e)], layout, qShape, kShape, vShape, lengths)
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
        let round = dtype.rounded
        let hq = rng.floats(qShape.reduce(1, *)).map(round)
        let hk = rng.floats(kShape.reduce(1, *)).map(round)
        let hv = rng.floats(vShape.reduce(1, *)).map(round)
        let q = try dev.makeTensor(hq, shape: qShape, dtype: dtype)
        let k = try dev.makeTensor(hk, shape: kShape, dtype: dtype)
        let v = try dev.makeTensor(hv, shape: vShape, dtype: dtype)

        var output: AttentionOutput?
        let timing = try Timing.measure(dev, warmup: measure.warmup, iterations: measure.iterations) { stream in
            output = try attention.decode(q: q, kCache: k, vCache: v, layout: layout, splits: splits, into: output, on: stream)
        }
        guard let out = output else { throw OptionError("decode produced nothing") }

        let element = dtype.byteSize
        let rowsQ = qShape.reduce(1, *) / shape.dim
        let bytes = (kShape.reduce(1, *) + vShape.reduce(1, *) + qShape.reduce(1, *) + rowsQ * shape.valueDim) * element + rowsQ * 4
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
            let error = max((num / max(den, 1e-12)).squareRoot(), lseError)
            check = (error <= checkBound(dtype) ? .pass : .fail, error)
        }
        var config: [String: ConfigValue] = [
            "batch": .int(lengths.count), "queries": .int(queries), "cache": .int(lengths.max() ?? 0),
            "heads": .int(shape.heads), "kv_heads": .int(hkv), "dim": .int(shape.dim), "dtype": .string(dtype.rawValue),
            "mask": .string(shape.maskName(attention.mask)), "packed": .bool(cacheLengths != nil),
        ]
        if shape.valueDim != shape.dim { config["dim_v"] = .int(shape.valueDim) }
        shape.biasConfig(&config)
        try context.report([ResultRow(op: "attention.decode", device: context.deviceName, config: config, path: out.path,
                                      timing: timing, gbps: gbps, tflops: flops / (timing.medianMs * 1e9),
                                      ratioToCopy: gbps / copyGBps, check: check.0, maxRelError: check.1)],
                           json: measure.json)
    }
}
