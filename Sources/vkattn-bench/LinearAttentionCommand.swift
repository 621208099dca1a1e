import ArgumentParser
import Foundation
import VkAttn
import VkAttnReference

struct LinearAttention: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "linear-attention",
        abstract: "Chunked gated linear attention (f32, f16 or bf16 inputs, fp32 accumulation), forward or backward.",
        discussion: """
            GB/s counts the minimum bytes moved: forward reads q, k, v (and the log-gates) and \
            writes o; backward also reads dO and writes dq, dk, dv (and the log-gate gradient). \
            TFLOP/s counts the chunked algorithm's multiply-adds (x2): per chunk of C rows the \
            intra-chunk products C^2/2 (Dk + Dv) and the inter-chunk terms C Dk Dv (x2 with the \
            state update); backward about twice as many. ratio_to_copy divides GB/s by \
            vkCmdCopyBuffer's over as many bytes, measured in the same run. With --varlen the B x L \
            tokens are packed sequences (cu_seqlens) of seeded random lengths up to 2L (a length-1 \
            and an empty one among them), checked against each sequence run on its own.
            """)

    @OptionGroup var device: DeviceOptions
    @OptionGroup var measure: MeasureOptions
    @Option(help: "B.") var batch = 2
    @Option(help: "L (sequence length).") var length = 2048
    @Option(help: "H (heads).") var heads = 4
    @Option(help: "Dk (key dimension).") var dk = 64
    @Option(help: "Dv (value dimension).") var dv = 64
    @Option(help: "Gates: per-key (GLA), per-head (scalar decay) or none.") var gating = GatedLinearAttention.Gating.perKey
    @Option(help: "Rows per chunk (default: from the device's shared memory).") var chunkLength: Int?
    @Flag(help: "Time the backward pass.") var backward = false
    @Option(help: "Type of q, k, v, dO and the outputs (gates and states are fp32).") var dtype = StorageType.f32
    @Option(help: "Kernels: auto, scalar or coopmat.") var kernel = KernelPreference.automatic
    @Flag(help: "Packed variable-length batch: the B x L tokens as sequences of random lengths (cu_seqlens).") var varlen = false

    func validate() throws {
        guard batch >= 1, length >= 1, heads >= 1, dk >= 1, dv >= 1 else { throw OptionError("sizes must be >= 1") }
        if let chunkLength, !(1...64).contains(chunkLength) { throw OptionError("--chunk-length must be in 1...64, got \(chunkLength)") }
        try Limits.require(operands)
    }

    /// q, k, v and the gates.
    var operands: [(name: String, shape: [Int], element: Int)] {
        let e = dtype.dtype.byteSize
        return [("q", [batch, length, heads, dk], e), ("v", [batch, length, heads, dv], e), ("gates", [batch, length, heads, dk], 4)]
    }

    func run() throws {
        let context = try BenchContext(device)
        try Limits.require(operands, on: context)
        let device = context.device
        let op = GatedLinearAttention(gating: gating, chunkLength: chunkLength, preference: kernel)
        let type = dtype.dtype
        var rng = SeededRandom.fresh()
        let lengths = varlen ? VarlenLengths.make(batch: batch, length: length, rng: &rng) : []
        let cu: [Int32]? = varlen ? VarlenLengths.cumulative(lengths) : nil
        let (b, l, h) = varlen ? (1, lengths.reduce(0, +), heads) : (batch, length, heads)
        let qv = rng.floats(b * l * h * dk).map(type.rounded), kv = rng.floats(b * l * h * dk).map(type.rounded)
        let vv = rng.floats(b * l * h * dv).map(type.rounded)
        let gateShape = op.gating == .perHead ? [b, l, h] : [b, l, h, dk]
        let gv: [Float]? = op.gating == .none ? nil : rng.floats(gateShape.reduce(1, *), in: -0.5...0)
        let q = try device.makeTensor(qv, shape: [b, l, h, dk], dtype: type), k = try device.makeTensor(kv, shape: [b, l, h, dk], dtype: type)
        let v = try device.makeTensor(vv, shape: [b, l, h, dv], dtype: type)
        let g = try gv.map { try device.makeTensor($0, shape: gateShape) }
        let o = try device.makeTensor(shape: [b, l, h, dv], dtype: type)
        let reference = GLAReference(gating: op.gating, batch: b, length: l, heads: h, dk: dk, dv: dv)

        let gateBytes = (gv?.count ?? 0) * 4, e = type.byteSize
        let forwardBytes = (2 * b * l * h * dk + 2 * b * l * h * dv) * e + gateBytes
        let bytes = backward ? forwardBytes + (b * l * h * dv + 2 * b * l * h * dk + b * l * h * dv) * e + gateBytes : forwardBytes
        let c = Double(op.chunkLength(on: device))
        let chunks = Double(varlen ? lengths.reduce(0) { $0 + op.chunkCount(length: $1, on: device) } : op.chunkCount(length: l, on: device))
        let depthLength = varlen ? (lengths.max() ?? 0) : l
        let perChunk = c * c / 2 * Double(dk + dv) + 2 * c * Double(dk * dv)
        let flops = 2 * Double(b * h) * chunks * perChunk * (backward ? 2 : 1)
        let copyGBps = try CopyReference.gbps(context, bytes: bytes / 2, warmup: measure.warmup, iterations: measure.iterations)

        var label = ""
        var check: (CheckResult, Double?) = (.skipped, nil)
        let timing: Timing
        if !backward {
            timing = try Timing.measure(device, warmup: measure.warmup, iterations: measure.iterations) { s in
                label = try op.forward(q: q, k: k, v: v, logGates: g, output: o, cuSeqlens: cu, on: s).path
            }
            if measure.check {
                let absolute: ([Float]) -> [Float] = { $0.map { abs($0) } }
                let (ref, scale): ([Double], [Double])
                if let cu {
                    ref = GLAReference.packedForward(gating: op.gating, heads: h, dk: dk, dv: dv, cuSeqlens: cu, q: qv, k: kv, v: vv,
                                                     logGates: gv, initialState: nil).o
                    scale = GLAReference.packedForward(gating: op.gating, heads: h, dk: dk, dv: dv, cuSeqlens: cu, q: absolute(qv), k: absolute(kv),
                                                       v: absolute(vv), logGates: gv, initialState: nil).o
                } else {
                    ref = reference.forward(q: qv, k: kv, v: vv, logGates: gv, initialState: nil).o
                    scale = reference.forward(q: absolute(qv), k: absolute(kv), v: absolute(vv), logGates: gv, initialState: nil).o
                }
                check = compare(try o.readFloats(), ref, scale: scale, depth: 4 * (depthLength + dk + dv + Int(c)), type: type)
            }
        } else {
            let dO = try device.makeTensor(rng.floats(b * l * h * dv).map(type.rounded), shape: [b, l, h, dv], dtype: type)
            let dq = try device.makeTensor(shape: [b, l, h, dk], dtype: type), dkT = try device.makeTensor(shape: [b, l, h, dk], dtype: type)
            let dvT = try device.makeTensor(shape: [b, l, h, dv], dtype: type)
            let dg = try g.map { _ in try device.makeTensor(shape: gateShape, dtype: .f32) }
            timing = try Timing.measure(device, warmup: measure.warmup, iterations: measure.iterations) { s in
                label = try op.backward(q: q, k: k, v: v, logGates: g, dOutput: dO, dq: dq, dk: dkT, dv: dvT, dLogGates: dg, cuSeqlens: cu, on: s).path
            }
            if measure.check {
                let absolute: ([Float]) -> [Float] = { $0.map { abs($0) } }
                let dOValues = try dO.readFloats()
                let ref, scale: (dq: [Double], dk: [Double], dv: [Double], dLogGates: [Double], dInitial: [Double])
                if let cu {
                    ref = GLAReference.packedBackward(gating: op.gating, heads: h, dk: dk, dv: dv, cuSeqlens: cu, q: qv, k: kv, v: vv,
                                                      logGates: gv, initialState: nil, dO: dOValues, dFinal: nil)
                    scale = GLAReference.packedBackward(gating: op.gating, heads: h, dk: dk, dv: dv, cuSeqlens: cu, q: absolute(qv), k: absolute(kv),
                                                        v: absolute(vv), logGates: gv, initialState: nil, dO: absolute(dOValues), dFinal: nil)
                } else {
                    ref = reference.backward(q: qv, k: kv, v: vv, logGates: gv, initialState: nil, dO: dOValues, dFinal: nil)
                    scale = reference.backward(q: absolute(qv), k: absolute(kv), v: absolute(vv), logGates: gv, initialState: nil,
                                               dO: absolute(dOValues), dFinal: nil)
                }
                let depth = 4 * (depthLength + dk + dv + Int(c))
                let results = [compare(try dq.readFloats(), ref.dq, scale: scale.dq, depth: depth, type: type),
                               compare(try dkT.readFloats(), ref.dk, scale: scale.dk, depth: depth, type: type),
                               compare(try dvT.readFloats(), ref.dv, scale: scale.dv, depth: depth, type: type)]
                check = (results.allSatisfy { $0.0 == .pass } ? .pass : .fail, results.map { $0.1 ?? 0 }.max())
            }
        }
        let gbps = Double(bytes) / (timing.medianMs * 1e6)
        let config: [String: ConfigValue] = [
            "batch": .int(batch), "length": .int(length), "heads": .int(h), "dk": .int(dk), "dv": .int(dv),
            "gating": .string(op.gating.rawValue), "pass": .string(backward ? "backward" : "forward"), "dtype": .string(type.rawValue),
            "varlen": .string(varlen ? "\(lengths.count) sequences, \(l) tokens" : "no"),
        ]
        let row = ResultRow(op: "linear-attention", device: context.deviceName, config: config, path: label, timing: timing,
                            gbps: gbps, tflops: flops / (timing.medianMs * 1e9), ratioToCopy: gbps / copyGBps,
                            check: check.0, maxRelError: check.1)
        try context.report([row], json: measure.json)
    }

    /// Error relative to the same sum of absolute values, failing above 8u per unit of depth
    /// (see LinearAttentionTests), plus 8 units of a 16-bit type's roundoff (its inputs are
    /// exact, its outputs and the cooperative-matrix operands are rounded). The gate gradient is
    /// not checked here (the tests do).
    func compare(_ got: [Float], _ ref: [Double], scale: [Double], depth: Int, type: DType) -> (CheckResult, Double?) {
        let unit = type == .f16 ? 0x1p-11 : type == .bf16 ? 0x1p-8 : 0
        let tol = 8 * 0x1p-24 * Double(depth) + 8 * unit
        var worst = 0.0
        var ok = true
        for i in got.indices {
            let err = abs(Double(got[i]) - ref[i])
            worst = max(worst, err / max(scale[i], 1e-30))
            if !(err <= tol * scale[i] + 1e-30) { ok = false }
        }
        return (ok ? .pass : .fail, worst)
    }
}
