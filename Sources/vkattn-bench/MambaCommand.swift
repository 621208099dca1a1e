import ArgumentParser
import Foundation
import VkAttn
import VkAttnReference

struct Mamba: ParsableCommand {
    /// Which Mamba scan runs.
    enum Variant: String, CaseIterable, ExpressibleByArgument {
        /// Mamba-1's selective scan (`SelectiveScan`).
        case selective
        /// Mamba-2's SSD (`MambaSSD`, run by `MambaSSDBench`).
        case ssd
    }

    static let configuration = CommandConfiguration(
        commandName: "mamba",
        abstract: "Mamba scans: Mamba-1's selective scan or Mamba-2's SSD (chunked, fp32 accumulation), forward or backward, dense or packed variable-length batches.",
        discussion: """
            The selective scan runs with every optional input of a Mamba-1 block: D, the z gate, \
            a delta bias and softplus on delta, initial states (and dFinal backward). GB/s counts \
            the minimum bytes moved: forward reads x, delta, z, B, C and writes out; backward also \
            reads dOut and writes dx, ddelta, dz, dB, dC. TFLOP/s counts 5 multiply-adds (x2) per \
            (row, channel, state) forward (the chunk maps, the replay and the C product) and 15 \
            backward. --varlen packs the --batch x --seq rows as sequences of random lengths up to \
            2 --seq (one of length 1, one empty; both variants) with cu_seqlens. ratio_to_copy divides \
            GB/s by vkCmdCopyBuffer's over as many bytes, measured in the same run. \
            --variant ssd runs Mamba-2's SSD instead (MambaSSD: --heads, --head-dim, --state, \
            --groups; --channels is the selective scan's only), with MambaSSDBench's counts.
            """)

    @OptionGroup var device: DeviceOptions
    @OptionGroup var measure: MeasureOptions
    @Option(help: "Which scan: selective (Mamba-1) or ssd (Mamba-2).") var variant = Variant.selective
    @Option(help: "B.") var batch = 1
    @Option(help: "L (rows per batch row).") var seq = 4096
    @Option(help: "Dch (channels; selective, default 64).") var channels: Int?
    @Option(help: "N (state size, at most 256).") var state = 16
    @Option(help: "H (heads; ssd, default 4).") var heads: Int?
    @Option(help: "P (head dimension; ssd, default 64).") var headDim: Int?
    @Option(help: "G (groups of B and C, dividing H; ssd, default 1).") var groups: Int?
    @Option(help: "Rows per chunk at most (default: the most the kernels take).") var chunkLength: Int?
    @Option(help: "Storage type of x, delta, z, B, C, dOut and out (A, D, the bias, the states and the gradients are f32).") var dtype = StorageType.f32
    @Flag(help: "Pack the B x L rows as sequences of random lengths (cu_seqlens).") var varlen = false
    @Flag(help: "Time the backward pass.") var backward = false

    func validate() throws {
        guard batch >= 1, seq >= 1, (channels ?? 1) >= 1, state >= 1, (heads ?? 1) >= 1, (headDim ?? 1) >= 1, (groups ?? 1) >= 1 else {
            throw OptionError("sizes must be >= 1")
        }
        guard state <= 256 else { throw OptionError("--state must be at most 256, got \(state)") }
        if let chunkLength, !(1...64).contains(chunkLength) { throw OptionError("--chunk-length must be in 1...64, got \(chunkLength)") }
        switch variant {
        case .selective:
            if let extra = [("--heads", heads), ("--head-dim", headDim), ("--groups", groups)].first(where: { $0.1 != nil }) {
                throw OptionError("\(extra.0) is an option of --variant ssd")
            }
        case .ssd:
            if channels != nil { throw OptionError("--channels is an option of --variant selective (ssd takes --heads and --head-dim)") }
            try ssd.validate()
        }
        try Limits.require(operands)
    }

    /// Dch.
    var dch: Int { channels ?? 64 }

    /// x (and delta, z, out), B (and C) and the states.
    var operands: [(name: String, shape: [Int], element: Int)] {
        switch variant {
        case .selective:
            return [("x", [batch, seq, dch], 4), ("B", [batch, seq, state], 4), ("states", [batch, dch, state], 4)]
        case .ssd:
            // Packed sequences take up to 2 L rows each.
            let rows = varlen ? 2 : 1
            return [("x", [batch, rows * seq, ssd.heads, ssd.headDim], 4), ("B", [batch, rows * seq, ssd.groups, state], 4),
                    ("states", [batch, ssd.heads, ssd.headDim, state], 4)]
        }
    }

    /// The SSD run of these options.
    var ssd: MambaSSDBench {
        MambaSSDBench(batch: batch, seq: seq, heads: heads ?? 4, headDim: headDim ?? 64, state: state, groups: groups ?? 1, dtype: dtype.dtype,
                      varlen: varlen, backward: backward, check: measure.check, seed: nil, warmup: measure.warmup,
                      iterations: measure.iterations, chunkLength: chunkLength)
    }

    func run() throws {
        let context = try BenchContext(device)
        try Limits.require(operands, on: context)
        if variant == .ssd {
            try context.report(try ssd.run(context), json: measure.json)
            return
        }
        let channels = dch
        let device = context.device
        let op = SelectiveScan(deltaSoftplus: true, chunkLength: chunkLength)
        var rng = SeededRandom.fresh()
        let (dc, n) = (channels, state)
        let T = batch * seq
        let cu: [Int]? = varlen ? VarlenLengths.make(batch: batch, length: seq, rng: &rng).reduce(into: [0]) { $0.append($0.last! + $1) } : nil
        let cuList = cu ?? (0...batch).map { $0 * seq }
        let S = cuList.count - 1
        let (b, l) = varlen ? (1, T) : (batch, seq)
        let type = dtype.dtype, r = type.rounded
        let inputs = MambaReference.Inputs(
            x: rng.floats(T * dc).map(r), delta: rng.floats(T * dc, in: -4...0).map(r), A: rng.floats(dc * n, in: -8 ... -0.5),
            B: rng.floats(T * n).map(r), C: rng.floats(T * n).map(r), D: rng.floats(dc), z: rng.floats(T * dc, in: -3...3).map(r),
            deltaBias: rng.floats(dc, in: -0.5...0.5), initial: rng.floats(S * dc * n))
        let t = { (v: [Float], shape: [Int]) in try device.makeTensor(v, shape: shape) }
        let h = { (v: [Float], shape: [Int]) in try device.makeTensor(v, shape: shape, dtype: type) }
        let x = try h(inputs.x, [b, l, dc]), delta = try h(inputs.delta, [b, l, dc]), A = try t(inputs.A, [dc, n])
        let B = try h(inputs.B, [b, l, n]), C = try h(inputs.C, [b, l, n]), D = try t(inputs.D!, [dc])
        let z = try h(inputs.z!, [b, l, dc]), bias = try t(inputs.deltaBias!, [dc]), h0 = try t(inputs.initial!, [S, dc, n])
        let cu32 = try cu.map { try Limits.cumulative(zip($0.dropFirst(), $0).map { $0 - $1 }, "--varlen") }
        let reference = MambaReference(channels: dc, state: n, deltaSoftplus: true)

        // Forward: x, delta, z, B, C in, out; backward: those and dOut in, dx, dDelta, dz, dB, dC (f32) out.
        let e = type.byteSize
        let bytes = backward ? T * (4 * dc + 2 * n) * e + T * (3 * dc + 2 * n) * 4 : T * (4 * dc + 2 * n) * e
        let flops = 2 * Double(T * dc * n) * (backward ? 15 : 5)
        let copyGBps = try CopyReference.gbps(context, bytes: bytes / 2, warmup: measure.warmup, iterations: measure.iterations)

        var label = ""
        var check: (CheckResult, Double?) = (.skipped, nil)
        let timing: Timing
        if !backward {
            let out = try device.makeTensor(shape: [b, l, dc], dtype: type), final = try device.makeTensor(shape: [S, dc, n], dtype: .f32)
            timing = try Timing.measure(device, warmup: measure.warmup, iterations: measure.iterations) { s in
                label = try op.forward(x: x, delta: delta, A: A, B: B, C: C, D: D, z: z, deltaBias: bias, initialState: h0, cuSeqlens: cu32,
                                       output: out, finalState: final, on: s).path
            }
            if measure.check {
                let (o, f) = reference.forward(inputs, cuSeqlens: cuList)
                let (oS, fS) = reference.forward(inputs, cuSeqlens: cuList, absolute: true)
                let depth = depth(cuList)
                check = Self.combine([compare(try out.readFloats(), o, scale: oS, depth: depth, rounding: type == .f16 ? 0x1p-11 : type == .bf16 ? 0x1p-8 : 0,
                                              floor: type == .f16 ? 0x1p-24 : 0),
                                      compare(try final.readFloats(), f, scale: fS, depth: depth)])
            }
        } else {
            let dOutValues = rng.floats(T * dc).map(r), dFinalValues = rng.floats(S * dc * n)
            let dOut = try h(dOutValues, [b, l, dc]), dFinal = try t(dFinalValues, [S, dc, n])
            let m = { (shape: [Int]) in try device.makeTensor(shape: shape, dtype: .f32) }
            let dx = try m([b, l, dc]), dDelta = try m([b, l, dc]), dA = try m([dc, n]), dB = try m([b, l, n]), dC = try m([b, l, n])
            let dD = try m([dc]), dz = try m([b, l, dc]), dBias = try m([dc]), dInit = try m([S, dc, n])
            timing = try Timing.measure(device, warmup: measure.warmup, iterations: measure.iterations) { s in
                label = try op.backward(x: x, delta: delta, A: A, B: B, C: C, D: D, z: z, deltaBias: bias, initialState: h0, cuSeqlens: cu32,
                                        dOutput: dOut, dFinalState: dFinal, dx: dx, dDelta: dDelta, dA: dA, dB: dB, dC: dC, dD: dD, dz: dz,
                                        dDeltaBias: dBias, dInitialState: dInit, on: s).path
            }
            if measure.check {
                let g = reference.backward(inputs, cuSeqlens: cuList, dOut: dOutValues, dFinal: dFinalValues)
                let s = reference.backward(inputs, cuSeqlens: cuList, dOut: dOutValues, dFinal: dFinalValues, absolute: true)
                let d = depth(cuList), all = d + 4 * T
                check = Self.combine([
                    compare(try dx.readFloats(), g.dx, scale: s.dx, depth: d), compare(try dDelta.readFloats(), g.dDelta, scale: s.dDelta, depth: d),
                    compare(try dA.readFloats(), g.dA, scale: s.dA, depth: all), compare(try dB.readFloats(), g.dB, scale: s.dB, depth: d),
                    compare(try dC.readFloats(), g.dC, scale: s.dC, depth: d), compare(try dD.readFloats(), g.dD, scale: s.dD, depth: all),
                    compare(try dz.readFloats(), g.dz, scale: s.dz, depth: d),
                    compare(try dBias.readFloats(), g.dDeltaBias, scale: s.dDeltaBias, depth: all),
                    compare(try dInit.readFloats(), g.dInitial, scale: s.dInitial, depth: d),
                ])
            }
        }
        let gbps = Double(bytes) / (timing.medianMs * 1e6)
        var config: [String: ConfigValue] = [
            "variant": .string(variant.rawValue), "batch": .int(batch), "seq": .int(seq), "channels": .int(dc), "state": .int(n),
            "pass": .string(backward ? "backward" : "forward"), "dtype": .string(dtype.rawValue),
        ]
        if varlen { config["sequences"] = .int(S) }
        let row = ResultRow(op: "mamba", device: context.deviceName, config: config, path: label, timing: timing,
                            gbps: gbps, tflops: flops / (timing.medianMs * 1e9), ratioToCopy: gbps / copyGBps,
                            check: check.0, maxRelError: check.1)
        try context.report([row], json: measure.json)
    }

    /// The error bound's depth (see SelectiveScanTests): 4 (longest sequence + N + Dch + 64).
    func depth(_ cu: [Int]) -> Int {
        let longest: Int = zip(cu.dropFirst(), cu).map { $0 - $1 }.max() ?? 0
        return 4 * (longest + state + dch + 64)
    }

    static func combine(_ results: [(CheckResult, Double?)]) -> (CheckResult, Double?) {
        (results.allSatisfy { $0.0 == .pass } ? .pass : .fail, results.map { $0.1 ?? 0 }.max())
    }

    /// Error relative to the same sum of absolute terms, failing above 8u per unit of depth
    /// (plus 8 units of a 16-bit output's roundoff, and `floor` absolute: f16's subnormal
    /// spacing for f16 outputs; 16-bit inputs are exact). The worst error reported is relative
    /// to the scale.
    func compare(_ got: [Float], _ ref: [Double], scale: [Double], depth: Int, rounding: Double = 0, floor: Double = 0) -> (CheckResult, Double?) {
        let tol = 8 * 0x1p-24 * Double(depth) + 8 * rounding
        var worst = 0.0
        var ok = got.count == ref.count
        for i in got.indices where i < ref.count {
            let err = abs(Double(got[i]) - ref[i])
            worst = max(worst, err / max(scale[i], 1e-30))
            if !(err <= tol * scale[i] + floor + 1e-30) { ok = false }
        }
        return (ok ? .pass : .fail, worst)
    }
}
