import ArgumentParser
import Foundation
import VkAttn
import VkAttnReference

/// The Mamba-2 SSD benchmark body (`MambaSSD`), from plain values, for `mamba --variant ssd`:
/// dt through softplus with a bias, D skip, A in
/// -8...-1 (the models' A_log range), random raw dt in -5...-2 (dt_eff about 0.007...0.13).
/// GB/s counts the minimum bytes: forward reads x, dt, B, C and writes y; backward also reads
/// dy and writes dx, ddt, dB, dC. TFLOP/s counts the chunked GLA multiply-adds (x2) with
/// Dk = N, Dv = P (backward about twice as many). --check compares with the fp64 step-by-step
/// reference (SSDReference), per sequence with --varlen (the B x L tokens packed as
/// `VarlenLengths` sequences).
struct MambaSSDBench {
    var batch: Int
    var seq: Int
    var heads: Int
    var headDim: Int
    var state: Int
    var groups: Int
    var dtype: DType
    var varlen: Bool
    var backward: Bool
    var check: Bool
    /// nil: a fresh seed.
    var seed: UInt64?
    var warmup: Int
    var iterations: Int
    /// Rows per chunk (nil: the device's choice) and the GLA kernels' preference.
    var chunkLength: Int? = nil
    var kernel: KernelPreference = .automatic

    /// Refuses sizes the op cannot take before anything runs.
    func validate() throws {
        guard batch >= 1, seq >= 1, heads >= 1, headDim >= 1, state >= 1, groups >= 1 else { throw OptionError("sizes must be >= 1") }
        guard heads % groups == 0 else { throw OptionError("--groups (\(groups)) must divide --heads (\(heads))") }
    }

    /// Runs, checks (when asked) and returns one result row.
    func run(_ context: BenchContext) throws -> [ResultRow] {
        try validate()
        let device = context.device
        let op = MambaSSD(chunkLength: chunkLength, preference: kernel, dtSoftplus: true)
        var rng = seed.map { SeededRandom(seed: $0) } ?? SeededRandom.fresh()
        let lengths = varlen ? VarlenLengths.make(batch: batch, length: seq, rng: &rng) : []
        let cu: [Int32]? = varlen ? VarlenLengths.cumulative(lengths) : nil
        let (b, l) = varlen ? (1, lengths.reduce(0, +)) : (batch, seq)
        let (h, p, g, n) = (heads, headDim, groups, state)
        let tokens = b * l
        let round = dtype.rounded
        let inputs = SSDReference.Inputs(x: rng.floats(tokens * h * p).map(round), dt: rng.floats(tokens * h, in: -5 ... -2),
                                         a: rng.floats(h, in: -8 ... -1), b: rng.floats(tokens * g * n).map(round),
                                         c: rng.floats(tokens * g * n).map(round), d: rng.floats(h), dtBias: rng.floats(h, in: -0.5...0.5))
        let xShape = [b, l, h, p], bShape = [b, l, g, n]
        let x = try device.makeTensor(inputs.x, shape: xShape, dtype: dtype), dt = try device.makeTensor(inputs.dt, shape: [b, l, h])
        let a = try device.makeTensor(inputs.a, shape: [h])
        let bT = try device.makeTensor(inputs.b, shape: bShape, dtype: dtype), cT = try device.makeTensor(inputs.c, shape: bShape, dtype: dtype)
        let d = try device.makeTensor(inputs.d ?? [], shape: [h]), bias = try device.makeTensor(inputs.dtBias ?? [], shape: [h])
        let y = try device.makeTensor(shape: xShape, dtype: dtype)
        let ref = SSDReference(batch: b, length: l, heads: h, headDim: p, groups: g, stateDim: n, dtSoftplus: true)

        let e = dtype.byteSize
        let forwardBytes = 2 * tokens * h * p * e + 2 * tokens * g * n * e + tokens * h * 4
        let bytes = backward ? 2 * forwardBytes + tokens * h * p * e : forwardBytes
        let c = Double(op.attention.chunkLength(on: device))
        let chunks = Double(varlen ? lengths.reduce(0) { $0 + op.attention.chunkCount(length: $1, on: device) } : b * op.attention.chunkCount(length: l, on: device))
        let perChunk = c * c / 2 * Double(n + p) + 2 * c * Double(n * p)
        let flops = 2 * Double(h) * chunks * perChunk * (backward ? 2 : 1)
        let copyGBps = try CopyReference.gbps(context, bytes: bytes / 2, warmup: warmup, iterations: iterations)
        let depth = 4 * ((varlen ? (lengths.max() ?? 0) : l) + n + p + Int(c))
        let unit = dtype == .f16 ? 0x1p-11 : dtype == .bf16 ? 0x1p-8 : 0

        /// Error relative to the magnitudes (elementwise, or the largest with `global`).
        func compare(_ got: [Float], _ want: [Double], _ scale: [Double], global: Bool = false, extraDepth: Int = 0) -> (CheckResult, Double) {
            let tol = 8 * 0x1p-24 * Double(depth + extraDepth) + 8 * unit
            let top = scale.max() ?? 0
            var worst = 0.0, ok = true
            for i in got.indices {
                let s = global ? top : scale[i]
                let err = abs(Double(got[i]) - want[i])
                worst = max(worst, err / max(s, 1e-30))
                if !(err <= tol * s + 1e-30) { ok = false }
            }
            return (ok ? .pass : .fail, worst)
        }

        var label = ""
        var result: (CheckResult, Double?) = (.skipped, nil)
        let timing: Timing
        if !backward {
            timing = try Timing.measure(device, warmup: warmup, iterations: iterations) { s in
                label = try op.forward(x: x, dt: dt, a: a, b: bT, c: cT, d: d, dtBias: bias, y: y, cuSeqlens: cu, on: s).path
            }
            if check {
                let want = cu.map { ref.packedForward(inputs, cuSeqlens: $0) } ?? ref.forward(inputs)
                let scale = cu.map { ref.packedForward(inputs, cuSeqlens: $0, absolute: true) } ?? ref.forward(inputs, absolute: true)
                let r = compare(try y.readFloats(), want.y, scale.y)
                result = (r.0, r.1)
            }
        } else {
            let dyValues = rng.floats(tokens * h * p).map(round)
            let dy = try device.makeTensor(dyValues, shape: xShape, dtype: dtype)
            let dx = try device.makeTensor(shape: xShape, dtype: dtype), ddt = try device.makeTensor(shape: [b, l, h], dtype: .f32)
            let da = try device.makeTensor(shape: [h], dtype: .f32), dd = try device.makeTensor(shape: [h], dtype: .f32)
            let dBias = try device.makeTensor(shape: [h], dtype: .f32)
            let db = try device.makeTensor(shape: bShape, dtype: dtype), dc = try device.makeTensor(shape: bShape, dtype: dtype)
            timing = try Timing.measure(device, warmup: warmup, iterations: iterations) { s in
                label = try op.backward(x: x, dt: dt, a: a, b: bT, c: cT, d: d, dtBias: bias, dy: dy, dx: dx, ddt: ddt, da: da, db: db, dc: dc,
                                        dd: dd, dDtBias: dBias, cuSeqlens: cu, on: s).path
            }
            if check {
                let want = cu.map { ref.packedBackward(inputs, cuSeqlens: $0, dy: dyValues, dFinal: nil) } ?? ref.backward(inputs, dy: dyValues, dFinal: nil)
                let scale = cu.map { ref.packedBackward(inputs, cuSeqlens: $0, dy: dyValues, dFinal: nil, absolute: true) }
                    ?? ref.backward(inputs, dy: dyValues, dFinal: nil, absolute: true)
                let results = [compare(try dx.readFloats(), want.dx, scale.dx), compare(try db.readFloats(), want.db, scale.db),
                               compare(try dc.readFloats(), want.dc, scale.dc), compare(try ddt.readFloats(), want.ddt, scale.ddt, global: true),
                               compare(try da.readFloats(), want.da, scale.da, global: true, extraDepth: 4 * tokens),
                               compare(try dd.readFloats(), want.dd, scale.dd, extraDepth: 4 * tokens),
                               compare(try dBias.readFloats(), want.dDtBias, scale.dDtBias, global: true, extraDepth: 4 * tokens)]
                result = (results.allSatisfy { $0.0 == .pass } ? .pass : .fail, results.map(\.1).max())
            }
        }
        let gbps = Double(bytes) / (timing.medianMs * 1e6)
        let config: [String: ConfigValue] = [
            "batch": .int(batch), "seq": .int(seq), "heads": .int(h), "head_dim": .int(p), "state": .int(n), "groups": .int(g),
            "pass": .string(backward ? "backward" : "forward"), "dtype": .string(dtype.rawValue),
            "varlen": .string(varlen ? "\(lengths.count) sequences, \(l) tokens" : "no"),
        ]
        return [ResultRow(op: "mamba-ssd", device: context.deviceName, config: config, path: label, timing: timing,
                          gbps: gbps, tflops: flops / (timing.medianMs * 1e9), ratioToCopy: gbps / copyGBps,
                          check: result.0, maxRelError: result.1)]
    }
}
