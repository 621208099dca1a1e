import ArgumentParser
import VkAttn
import VkAttnReference

/// Options shared by `attention` and `decode`: heads, head dim, dtype, mask.
struct AttentionShapeOptions: ParsableArguments {
    @Option(help: "Sequences in the batch.") var batch = 1
    @Option(help: "Query heads.") var heads = 8
    @Option(name: .customLong("kv-heads"), help: "Key/value heads (default: --heads; fewer is GQA/MQA).") var kvHeads: Int?
    @Option(help: "Head dimension of Q and K (Dk): 1...576 forward and decode; the backward where shared memory holds a tile.") var dim = 64
    @Option(name: .customLong("dim-v"), help: "Head dimension of V and O (Dv, default: --dim): 1...512; MLA is --dim 576 --dim-v 512.")
    var dimV: Int?
    @Option(help: "Storage type.") var dtype = StorageType.f32
    @Flag(help: "Causal mask (bottom-right aligned when query and key lengths differ).") var causal = false
    @Option(help: "Sliding window: N keys before the diagonal, or L,R (keys before / after it; -1 or empty: unbounded).") var window: String?
    @Option(help: "Logit soft cap.") var softcap: Float?
    @Flag(help: "ALiBi: the paper's slope per query head (FlashAttention.alibiSlopes(heads:)).") var alibi = false
    @Flag(help: "Attention sinks: a random sink logit per query head, in [-2, 3].") var sinks = false

    func validate() throws {
        try Limits.positive(["--batch": batch, "--heads": heads, "--dim": dim])
        try Limits.positive("--kv-heads", kvHeads)
        try Limits.positive("--dim-v", dimV)
        if let softcap, !(softcap.isFinite && softcap > 0) { throw OptionError("--softcap must be finite and positive, got \(softcap)") }
        _ = try mask()
    }

    var storage: DType { dtype.dtype }
    /// Dv: `--dim-v`, else `--dim`.
    var valueDim: Int { dimV ?? dim }

    func mask(blocks: BlockMask? = nil) throws -> AttentionMask {
        var left: Int?, right: Int?
        if let window {
            var parts = window.split(separator: ",", omittingEmptySubsequences: false).map { String($0) }
            if parts.count == 1 { parts.append("-1") }  // N: N keys before the diagonal (a sliding window)
            guard parts.count == 2 else { throw OptionError("--window takes N or L,R, got '\(window)'") }
            func side(_ s: String) throws -> Int? {
                if s.isEmpty || s == "-1" { return nil }
                guard let v = Int(s), v >= 0 else { throw OptionError("--window: '\(s)' is not a size") }
                return v
            }
            left = try side(parts[0])
            right = try side(parts[1])
        }
        return AttentionMask(causal: causal, windowLeft: left, windowRight: right, blocks: blocks)
    }

    /// The attention the options describe (mask, soft cap, ALiBi, sinks drawn from `rng`).
    func attention(mask: AttentionMask, _ rng: inout SeededRandom) -> FlashAttention {
        FlashAttention(mask: mask, softcap: softcap, alibiSlopes: alibi ? FlashAttention.alibiSlopes(heads: heads) : nil,
                       sinks: sinks ? rng.floats(heads, in: -2...3) : nil)
    }

    /// Config entries for ALiBi and sinks.
    func biasConfig(_ config: inout [String: ConfigValue]) {
        if alibi { config["alibi"] = .bool(true) }
        if sinks { config["sinks"] = .bool(true) }
    }

    func maskName(_ mask: AttentionMask) -> String {
        var parts: [String] = []
        if mask.causal { parts.append("causal") }
        if mask.windowLeft != nil || mask.windowRight != nil {
            parts.append("window(\(mask.windowLeft.map(String.init) ?? "inf"),\(mask.windowRight.map(String.init) ?? "inf"))")
        }
        if let b = mask.blocks {
            parts.append("blocks\(b.blockSize):\(b.columnIndices.count)/\(b.queryBlocks)rows" + (b.heads > 1 ? "x\(b.heads)heads" : ""))
        }
        return parts.isEmpty ? "none" : parts.joined(separator: "+")
    }
}

/// Parses "a,b,c" into positive integers.
func parseList(_ text: String, _ option: String) throws -> [Int] {
    let values = text.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
    guard !values.isEmpty, values.allSatisfy({ ($0 ?? -1) >= 0 }) else {
        throw OptionError("\(option) takes comma-separated lengths, got '\(text)'")
    }
    return values.compactMap { $0 }
}

struct Attention: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Flash attention forward (and --backward): TFLOP/s, --check against the fp64 reference.",
        discussion: """
            TFLOP/s counts 2*B*H*Sq*Sk*(Dk+Dv) for the forward (4*B*H*Sq*Sk*D when Dk = Dv = D), scaled by the fraction of (query, key) pairs the \
            mask keeps (about half for causal), and 2.5x that for the backward. --check compares a random \
            sample of query rows (O, LSE, dQ) and of keys (dK, dV, computed from the device's LSE) with the \
            fp64 reference and says how many.
            """)

    @OptionGroup var device: DeviceOptions
    @OptionGroup var measure: MeasureOptions
    @OptionGroup var shape: AttentionShapeOptions
    @Option(help: "Query sequence length.") var seq = 1024
    @Option(name: .customLong("seq-k"), help: "Key sequence length (default: --seq).") var seqK: Int?
    @Option(help: "Packed variable-length batch: comma-separated sequence lengths (queries = keys); overrides --batch/--seq.")
    var varlen: String?
    @Option(name: .customLong("block-mask"), help: """
        Block-sparse mask: SIZE:DENSITY, random blocks shared by every head (e.g. 64:0.25; diagonal blocks always kept), or \
        s2:LOCAL:STRIDE[:SIZE], S2-Attention's per-head sharding (head h attends key blocks c with c % STRIDE == h % STRIDE \
        plus the LOCAL most recent blocks; SIZE 64 unless given; causal with --causal).
        """)
    var blockMask: String?
    @Flag(help: "Also time the backward pass.") var backward = false
    @Option(name: .customLong("check-rows"), help: "Query rows (and keys) sampled by --check.") var checkRows = 64

    func validate() throws {
        try Limits.positive(["--seq": seq, "--check-rows": checkRows])
        try Limits.positive("--seq-k", seqK)
        try Limits.require(try operands().list)
        _ = try blockMask.map { try BlockMaskOption($0, heads: shape.heads) }
    }

    /// Q, K, V (and the layout and lengths) the options describe, checked for overflow.
    func operands() throws -> (list: [(name: String, shape: [Int], element: Int)], layout: AttentionLayout,
                               qShape: [Int], kShape: [Int], vShape: [Int], oShape: [Int], varlen: [Int]?) {
        let hkv = shape.kvHeads ?? shape.heads
        var layout = AttentionLayout.dense
        var qShape = [shape.batch, seq, shape.heads, shape.dim]
        var kShape = [shape.batch, seqK ?? seq, hkv, shape.dim]
        var lens: [Int]?
        if let varlen {
            let parsed = try parseList(varlen, "--varlen")
            let cu = try Limits.cumulative(parsed, "--varlen")
            layout = .packed(cuSeqlensQ: cu, cuSeqlensK: cu)
            qShape = [Int(cu.last ?? 0), shape.heads, shape.dim]
            kShape = [Int(cu.last ?? 0), hkv, shape.dim]
            lens = parsed
        }
        let vShape = Array(kShape.dropLast()) + [shape.valueDim], oShape = Array(qShape.dropLast()) + [shape.valueDim]
        let e = shape.storage.byteSize
        return ([("Q", qShape, e), ("K", kShape, e), ("V", vShape, e), ("O", oShape, 4)], layout, qShape, kShape, vShape, oShape, lens)
    }

    func run() throws {
        let context = try BenchContext(device)
        let dev = context.device
        let dtype = shape.storage
        let hkv = shape.kvHeads ?? shape.heads
        var rng = SeededRandom.fresh()

        let described = try operands()
        try Limits.require(described.list, on: context)
        let layout = described.layout, qShape = described.qShape, kShape = described.kShape
        let vShape = described.vShape, oShape = described.oShape
        let lengths = described.varlen?.map { ($0, $0) } ?? [(Int, Int)](repeating: (seq, seqK ?? seq), count: shape.batch)
        let maxQ = lengths.map(\.0).max() ?? 0, maxK = lengths.map(\.1).max() ?? 0
        let blocks = try blockMask.map {
            try BlockMaskOption($0, heads: shape.heads).mask(maxQ: maxQ, maxK: maxK, heads: shape.heads, causal: shape.causal, &rng)
        }
        let attention = shape.attention(mask: try shape.mask(blocks: blocks), &rng)
        let round = dtype.rounded
        let hq = rng.floats(qShape.reduce(1, *)).map(round)
        let hk = rng.floats(kShape.reduce(1, *)).map(round)
        let hv = rng.floats(vShape.reduce(1, *)).map(round)
        let q = try dev.makeTensor(hq, shape: qShape, dtype: dtype)
        let k = try dev.makeTensor(hk, shape: kShape, dtype: dtype)
        let v = try dev.makeTensor(hv, shape: vShape, dtype: dtype)

        // Work: the pairs the mask keeps, per sequence; 2 (Dk + Dv) flops per pair and head.
        let kept = lengths.reduce(0.0) { $0 + Double($1.0) * Double($1.1) * attention.mask.keptFraction(sq: $1.0, sk: $1.1) }
        let forwardFlops = 2 * kept * Double(shape.heads) * Double(shape.dim + shape.valueDim)
        var config: [String: ConfigValue] = [
            "batch": .int(lengths.count), "seq_q": .int(lengths.map(\.0).max() ?? 0), "seq_k": .int(lengths.map(\.1).max() ?? 0),
            "heads": .int(shape.heads), "kv_heads": .int(hkv), "dim": .int(shape.dim), "dtype": .string(dtype.rawValue),
            "mask": .string(shape.maskName(attention.mask)), "kept_fraction": .double(kept / lengths.reduce(0.0) { $0 + Double($1.0 * $1.1) }),
        ]
        if varlen != nil { config["varlen"] = .bool(true) }
        if let blocks {
            let fraction = kept / lengths.reduce(0.0) { $0 + Double($1.0 * $1.1) }
            note("block mask \(blockMask ?? ""): \(blocks.heads) pattern\(blocks.heads == 1 ? "" : "s"), \(blocks.columnIndices.count) blocks listed, "
                 + "kept fraction \((fraction * 10_000).rounded() / 10_000) of the (query, key) pairs per head")
        }
        if shape.valueDim != shape.dim { config["dim_v"] = .int(shape.valueDim) }
        shape.biasConfig(&config)
        if let softcap = shape.softcap { config["softcap"] = .double(Double(softcap)) }

        var output: AttentionOutput?
        let forwardTiming = try Timing.measure(dev, warmup: measure.warmup, iterations: measure.iterations) { stream in
            output = try attention.forward(q: q, k: k, v: v, layout: layout, into: output, on: stream)
        }
        guard let out = output else { throw OptionError("forward produced nothing") }
        let problem = try AttentionReference.Problem(qShape: qShape, kShape: kShape, vShape: vShape, layout: layout, attention: attention)
        let bound = checkBound(dtype)
        var forwardCheck: (CheckResult, Double?) = (.skipped, nil)
        let rows = measure.check ? sampleRows(problem, count: checkRows, &rng) : []
        if measure.check {
            let gpuO = try out.o.readFloats(), gpuL = try out.lse.readFloats()
            var num = 0.0, den = 0.0, lseError = 0.0
            for row in rows {
                let ref = AttentionReference.forward(problem, row: row, q: hq, k: hk, v: hv)
                let base = problem.oOffset(row)
                for d in 0..<shape.valueDim {
                    let diff = Double(gpuO[base + d]) - ref.o[d]
                    num += diff.isNaN ? .infinity : diff * diff
                    den += ref.o[d] * ref.o[d]
                }
                let l = Double(gpuL[problem.lseOffset(row)])
                if ref.lse.isInfinite || l.isInfinite {
                    if l != ref.lse { lseError = .infinity }
                } else {
                    lseError = max(lseError, abs(l - ref.lse) / max(abs(ref.lse), 1))
                }
            }
            let error = max((num / max(den, 1e-12)).squareRoot(), lseError)
            forwardCheck = (error <= bound ? .pass : .fail, error)
            note("check: forward O and LSE on \(rows.count) sampled rows")
        }
        var results = [ResultRow(op: "attention.forward", device: context.deviceName, config: config, path: out.path,
                                 timing: forwardTiming, tflops: forwardFlops / (forwardTiming.medianMs * 1e9),
                                 check: forwardCheck.0, maxRelError: forwardCheck.1)]

        if backward {
            let hdO = rng.floats(oShape.reduce(1, *)).map(round)
            let dO = try dev.makeTensor(hdO, shape: oShape, dtype: dtype)
            var grads: AttentionGradients?
            let timing = try Timing.measure(dev, warmup: measure.warmup, iterations: measure.iterations) { stream in
                grads = try attention.backward(q: q, k: k, v: v, o: out.o, lse: out.lse, dO: dO, layout: layout, into: grads, on: stream)
            }
            guard let grads else { throw OptionError("backward produced nothing") }
            var check: (CheckResult, Double?) = (.skipped, nil)
            if measure.check {
                let gdq = try grads.dq.readFloats(), gdk = try grads.dk.readFloats(), gdv = try grads.dv.readFloats()
                let gpuO = try out.o.readFloats(), gpuL = try out.lse.readFloats()
                var num = 0.0, den = 0.0
                func add(_ gpu: ArraySlice<Float>, _ ref: [Double]) {
                    for (x, y) in zip(gpu, ref) {
                        let diff = Double(x) - y
                        num += diff.isNaN ? .infinity : diff * diff
                        den += y * y
                    }
                }
                for row in rows {
                    let ref = AttentionReference.queryGradient(problem, row: row, q: hq, k: hk, v: hv, dO: hdO)
                    let base = problem.qOffset(row)
                    add(gdq[base..<base + shape.dim], ref)
                }
                let keys = sampleKeys(problem, count: checkRows, &rng)
                for (b, j, h) in keys {
                    let ref = AttentionReference.keyGradient(problem, b: b, j: j, h: h, q: hq, k: hk, v: hv, dO: hdO, o: gpuO, lse: gpuL)
                    let base = AttentionReference.keyOffset(problem, b: b, j: j, h: h)
                    add(gdk[base..<base + shape.dim], ref.dk)
                    let vBase = AttentionReference.valueOffset(problem, b: b, j: j, h: h)
                    add(gdv[vBase..<vBase + shape.valueDim], ref.dv)
                }
                var error = (num / max(den, 1e-12)).squareRoot()
                if let dsinks = grads.dsinks {
                    // dL/dsink needs every row: the whole fp64 backward (small problems only).
                    let ref = AttentionReference.backward(problem, q: hq, k: hk, v: hv, dO: hdO).dsinks
                    error = max(error, relativeError(try dsinks.readFloats(), ref, floor: 1e-2))
                    note("check: dsinks on every row")
                }
                check = (error <= bound ? .pass : .fail, error)
                note("check: backward dQ on \(rows.count) sampled rows, dK and dV on \(keys.count) sampled keys")
            }
            results.append(ResultRow(op: "attention.backward", device: context.deviceName, config: config, path: grads.path,
                                     timing: timing, tflops: 2.5 * forwardFlops / (timing.medianMs * 1e9),
                                     check: check.0, maxRelError: check.1))
        }
        try context.report(results, json: measure.json)
    }
}

func sampleRows(_ problem: AttentionReference.Problem, count: Int, _ rng: inout SeededRandom) -> [AttentionReference.Row] {
    let all = problem.rows
    guard all.count > count else { return all }
    var chosen = Set<Int>()
    while chosen.count < count { chosen.insert(Int(rng.next() % UInt64(all.count))) }
    return chosen.sorted().map { all[$0] }
}

func sampleKeys(_ problem: AttentionReference.Problem, count: Int, _ rng: inout SeededRandom) -> [(Int, Int, Int)] {
    var keys: [(Int, Int, Int)] = []
    for b in 0..<problem.batch {
        let sk = AttentionReference.lengths(problem, b: b).sk
        for j in 0..<sk { for h in 0..<problem.headsKV { keys.append((b, j, h)) } }
    }
    guard keys.count > count else { return keys }
    var chosen = Set<Int>()
    while chosen.count < count { chosen.insert(Int(rng.next() % UInt64(keys.count))) }
    return chosen.sorted().map { keys[$0] }
}
