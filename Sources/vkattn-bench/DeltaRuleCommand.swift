import ArgumentParser
import Foundation
import VkAttn
import VkAttnReference

struct DeltaRuleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delta-rule",
        abstract: "The delta rule (DeltaNet) or Gated DeltaNet, chunked (WY/UT form), forward or backward, one device or --ranks.",
        discussion: """
            Inputs are the models' regime: q and k L2-normalised per head and row, beta in [0, 1], \
            log-decays in [-1, 0] (--gated). --varlen packs the --batch x --seq tokens as sequences of \
            random lengths (one of length 1 and one empty among them) with cu_seqlens. GB/s counts the minimum bytes \
            moved (q, k, v, beta, decays, o; the backward also dO and the gradients). TFLOP/s counts \
            the chunked algorithm's multiply-adds (x2): per chunk of C rows about C^2 (2 Dk + Dv) for \
            the WY form and 3 C Dk Dv + Dk^2 (Dk + Dv) for the outputs and the chunk's map; the \
            backward about three times as many. --check compares every output with the fp64 \
            step-by-step reference (relative L2 error: 2e-5 for f32 outputs, 2e-3 f16, 1.6e-2 bf16). \
            With --ranks N > 1 the sequence is split over N ranks (--scheme lasp, lasp2 or zeco) and \
            compared with one device; bytes per rank are printed beside the formula.
            """)

    @OptionGroup var device: DeviceOptions
    @OptionGroup var measure: MeasureOptions
    @Option(help: "B (sequences; with --varlen, B x --seq tokens packed).") var batch = 1
    @Option(help: "L (sequence length).") var seq = 2048
    @Option(help: "H (heads).") var heads = 4
    @Option(help: "Dk (key dimension).") var dk = 64
    @Option(help: "Dv (value dimension).") var dv = 64
    @Flag(help: "Gated DeltaNet: a log-decay per head and step.") var gated = false
    @Flag(help: "A packed batch of random lengths (cu_seqlens) instead of B sequences of L.") var varlen = false
    @Option(help: "Rows per chunk (default: from the device's shared memory).") var chunkLength: Int?
    @Flag(help: "Time the backward pass.") var backward = false
    @Option(help: "Type of q, k, v, dO and the outputs (beta, decays and states are fp32).") var dtype = StorageType.f32
    @Option(help: "Kernels: auto, scalar or coopmat (f16 inputs).") var kernel = KernelPreference.automatic
    @Option(help: "Ranks to split the sequence over (logical devices); 1: one device.") var ranks = 1
    @Option(help: "With --ranks: lasp (chain), lasp2 (all-gather) or zeco (segmented chain).") var scheme = DeltaScheme.lasp2

    func validate() throws {
        guard batch >= 1, seq >= 1, heads >= 1, dk >= 1, dv >= 1 else { throw OptionError("sizes must be >= 1") }
        guard dk <= 256, dv <= 256 else { throw OptionError("--dk and --dv must be at most 256") }
        if let chunkLength, !(1...64).contains(chunkLength) { throw OptionError("--chunk-length must be in 1...64, got \(chunkLength)") }
        guard (1...min(seq, Limits.maxRanks)).contains(ranks) else { throw OptionError("--ranks must be in 1...min(--seq, \(Limits.maxRanks))") }
        if ranks > 1 && varlen { throw OptionError("--varlen takes one device (--ranks 1)") }
        if ranks > 1 && dtype != .f32 { throw OptionError("--ranks > 1 runs f32 inputs (--dtype f32)") }
        try Limits.require(operands)
    }

    var operands: [(name: String, shape: [Int], element: Int)] {
        let e = dtype.dtype.byteSize
        return [("q", [batch, seq, heads, dk], e), ("v", [batch, seq, heads, dv], e), ("states", [batch, heads, dk, dv], 4)]
    }

    func run() throws {
        if ranks > 1 { return try DeltaRuleParallelBenchmark(command: self).run() }
        let context = try BenchContext(device)
        try Limits.require(operands, on: context)
        let device = context.device
        let op = DeltaRule(gated: gated, chunkLength: chunkLength, preference: kernel)
        let type = dtype.dtype
        var rng = SeededRandom.fresh()
        let lengths = varlen ? VarlenLengths.make(batch: batch, length: seq, rng: &rng) : [Int](repeating: seq, count: batch)
        let t = batch * seq, h = heads
        let (b, l) = varlen ? (1, t) : (batch, seq)
        let cu: [Int32]? = varlen ? try Limits.cumulative(lengths, "--varlen") : nil
        let n = lengths.count
        let qv = DeltaRuleReference.l2Normalised(rng.floats(t * h * dk), width: dk).map(type.rounded)
        let kv = DeltaRuleReference.l2Normalised(rng.floats(t * h * dk), width: dk).map(type.rounded)
        let vv = rng.floats(t * h * dv).map(type.rounded)
        let betav = rng.floats(t * h, in: 0...1)
        let gv: [Float]? = gated ? rng.floats(t * h, in: -1...0) : nil
        let q = try device.makeTensor(qv, shape: [b, l, h, dk], dtype: type), k = try device.makeTensor(kv, shape: [b, l, h, dk], dtype: type)
        let v = try device.makeTensor(vv, shape: [b, l, h, dv], dtype: type)
        let beta = try device.makeTensor(betav, shape: [b, l, h])
        let g = try gv.map { try device.makeTensor($0, shape: [b, l, h]) }
        let o = try device.makeTensor(shape: [b, l, h, dv], dtype: type)
        let final = try device.makeTensor(shape: [n, h, dk, dv], dtype: .f32)
        let reference = DeltaRuleReference(gated: gated, lengths: lengths, heads: h, dk: dk, dv: dv)

        let e = type.byteSize, scalars = t * h * 4 * (gated ? 2 : 1)
        let forwardBytes = (2 * t * h * dk + 2 * t * h * dv) * e + scalars
        let bytes = backward ? forwardBytes + (2 * t * h * dv + 2 * t * h * dk) * e + scalars : forwardBytes
        let c = Double(op.chunkLength(on: device))
        let chunks = Double(lengths.reduce(0) { $0 + ($1 + Int(c) - 1) / Int(c) })
        let perChunk = c * c * Double(2 * dk + dv) + 3 * c * Double(dk * dv) + Double(dk * dk * (dk + dv))
        let flops = 2 * Double(h) * chunks * perChunk * (backward ? 3 : 1)
        let copyGBps = try CopyReference.gbps(context, bytes: bytes / 2, warmup: measure.warmup, iterations: measure.iterations)
        let bound = type == .f32 ? 2e-5 : type == .f16 ? 2e-3 : 1.6e-2

        var label = ""
        var check: (CheckResult, Double?) = (.skipped, nil)
        let timing: Timing
        if !backward {
            timing = try Timing.measure(device, warmup: measure.warmup, iterations: measure.iterations) { s in
                label = try op.forward(q: q, k: k, v: v, beta: beta, logDecay: g, cuSeqlens: cu, output: o, finalState: final, on: s).path
            }
            if measure.check {
                let ref = reference.forward(q: qv, k: kv, v: vv, beta: betav, logDecay: gv, initialState: nil)
                check = Self.judge([(try o.readFloats(), ref.o), (try final.readFloats(), ref.final)], bound: bound)
            }
        } else {
            let dOv = rng.floats(t * h * dv).map(type.rounded)
            let dO = try device.makeTensor(dOv, shape: [b, l, h, dv], dtype: type)
            let dq = try device.makeTensor(shape: [b, l, h, dk], dtype: type), dkT = try device.makeTensor(shape: [b, l, h, dk], dtype: type)
            let dvT = try device.makeTensor(shape: [b, l, h, dv], dtype: type)
            let dbeta = try device.makeTensor(shape: [b, l, h], dtype: .f32)
            let dg = try g.map { _ in try device.makeTensor(shape: [b, l, h], dtype: .f32) }
            timing = try Timing.measure(device, warmup: measure.warmup, iterations: measure.iterations) { s in
                label = try op.backward(q: q, k: k, v: v, beta: beta, logDecay: g, cuSeqlens: cu, dOutput: dO, dq: dq, dk: dkT, dv: dvT,
                                        dBeta: dbeta, dLogDecay: dg, on: s).path
            }
            if measure.check {
                let ref = reference.backward(q: qv, k: kv, v: vv, beta: betav, logDecay: gv, initialState: nil, dO: dOv, dFinal: nil)
                var pairs = [(try dq.readFloats(), ref.dq), (try dkT.readFloats(), ref.dk), (try dvT.readFloats(), ref.dv),
                             (try dbeta.readFloats(), ref.dbeta)]
                if let dg { pairs.append((try dg.readFloats(), ref.dlogDecay)) }
                check = Self.judge(pairs, bound: bound)
            }
        }
        let gbps = Double(bytes) / (timing.medianMs * 1e6)
        var config: [String: ConfigValue] = [
            "batch": .int(batch), "seq": .int(seq), "heads": .int(h), "dk": .int(dk), "dv": .int(dv), "gated": .bool(gated),
            "pass": .string(backward ? "backward" : "forward"), "dtype": .string(type.rawValue),
        ]
        if varlen { config["sequences"] = .int(n) }
        let row = ResultRow(op: "delta-rule", device: context.deviceName, config: config, path: label, timing: timing,
                            gbps: gbps, tflops: flops / (timing.medianMs * 1e9), ratioToCopy: gbps / copyGBps,
                            check: check.0, maxRelError: check.1)
        try context.report([row], json: measure.json)
    }

    /// Pass when every output's relative L2 error is within `bound`; reports the largest.
    static func judge(_ pairs: [([Float], [Double])], bound: Double) -> (CheckResult, Double?) {
        let worst = pairs.map { relativeError($0.0, $0.1) }.max() ?? 0
        return (worst <= bound ? .pass : .fail, worst)
    }
}

/// `--scheme` of `delta-rule --ranks`.
enum DeltaScheme: String, CaseIterable, ExpressibleByArgument {
    case lasp, lasp2, zeco
}
