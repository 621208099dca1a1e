import ArgumentParser
import Foundation
import VkAttn
import VkAttnReference

struct Recurrence: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Linear recurrence h_t = a_t * h_{t-1} + b_t (fp32, real or complex; forward or backward).",
        discussion: """
            GB/s counts the minimum bytes moved: forward reads a and b and writes h (3 values \
            per step and channel) plus h0 and the final state; backward reads a, h and dh and \
            writes da and db (5 per step) plus dFinal, h0 and dh0. ratio_to_copy divides by \
            vkCmdCopyBuffer's GB/s (read + write) over as many bytes, measured in the same run. \
            With --varlen the B x L steps are packed sequences (cu_seqlens) of seeded random lengths \
            up to 2L (a length-1 and an empty one among them), checked against each sequence run \
            on its own.
            """)

    @OptionGroup var device: DeviceOptions
    @OptionGroup var measure: MeasureOptions
    @Option(help: "Layout: BLD ([B, L, D]) or BDL ([B, D, L]); lower case too.") var layout = LinearRecurrence.Layout.bdl
    @Option(help: "B.") var batch = 4
    @Option(help: "L (time steps).") var length = 4096
    @Option(help: "D (channels).") var channels = 1024
    @Flag(help: "Complex values ((re, im) pairs).") var complex = false
    @Flag(help: "Run time backward (h_t from h_{t+1}).") var reverse = false
    @Flag(help: "Time the backward pass (gradients of a, b, h0).") var backward = false
    @Option(help: "Path: one forced, both in turn, or default (the device's choice).") var path = PathChoice<RecurrenceAlgorithm>.deviceDefault
    @Option(help: "Steps per chunk (a multiple of 4; default: the device's choice).") var chunkLength: Int?
    @Option(help: "Element type (fp32 only).") var dtype = RecurrenceElementType.f32
    @Flag(help: "Packed variable-length batch: the B x L steps as sequences of random lengths (cu_seqlens).") var varlen = false

    func validate() throws {
        guard batch >= 1, length >= 1, channels >= 1 else { throw OptionError("--batch, --length and --channels must be >= 1") }
        try Limits.positive("--chunk-length", chunkLength)
        try Limits.require(operands)
    }

    /// a, b and h ([B, L, D] or [B, D, L], complex: x2).
    var operands: [(name: String, shape: [Int], element: Int)] {
        let shape = [batch, length, channels, complex ? 2 : 1]
        return [("a", shape, 4), ("b", shape, 4), ("h", shape, 4)]
    }

    func run() throws {
        let context = try BenchContext(device)
        try Limits.require(operands, on: context)
        let rows = try RecurrenceBenchmark(command: self).run(context)
        try context.report(rows, json: measure.json)
    }
}

struct RecurrenceBenchmark {
    let command: Recurrence

    func run(_ context: BenchContext) throws -> [ResultRow] {
        let c = command
        let device = context.device
        let layout = c.layout
        let cw = c.complex ? 2 : 1
        var rng = SeededRandom.fresh()
        let lengths = c.varlen ? VarlenLengths.make(batch: c.batch, length: c.length, rng: &rng) : []
        let cu: [Int32]? = c.varlen ? VarlenLengths.cumulative(lengths) : nil
        let (batch, length) = c.varlen ? (1, lengths.reduce(0, +)) : (c.batch, c.length)
        let count = batch * length * c.channels * cw
        let shape: [Int] = (layout == .bld ? [batch, length, c.channels] : [batch, c.channels, length]) + (c.complex ? [2] : [])
        let stateShape: [Int] = [c.batch, c.channels] + (c.complex ? [2] : [])
        let states = c.batch * c.channels * cw
        // Decays in (0.9, 1): long memories, values that stay O(1).
        var aValues = [Float](repeating: 0, count: count)
        if c.complex {
            for i in stride(from: 0, to: count, by: 2) {
                let r = Float.random(in: 0.9...1, using: &rng), p = Float.random(in: -0.3...0.3, using: &rng)
                aValues[i] = r * Float(cos(Double(p)))
                aValues[i + 1] = r * Float(sin(Double(p)))
            }
        } else {
            for i in 0..<count { aValues[i] = Float.random(in: 0.9...1, using: &rng) }
        }
        let bValues = rng.floats(count)
        let h0Values = rng.floats(states)
        let a = try device.makeTensor(aValues, shape: shape)
        let b = try device.makeTensor(bValues, shape: shape)
        let h0 = try device.makeTensor(h0Values, shape: stateShape)
        let h = try device.makeTensor(shape: shape, dtype: .f32)
        let final = try device.makeTensor(shape: stateShape, dtype: .f32)
        let stepBytes = (c.backward ? 5 : 3) * count * 4
        let bytes = stepBytes + (c.backward ? 3 : 2) * states * 4
        let copyGBps = try CopyReference.gbps(context, bytes: bytes / 2, warmup: c.measure.warmup, iterations: c.measure.iterations)
        let dense = RecurrenceReference(layout: layout, complex: c.complex, reverse: c.reverse,
                                        batch: c.batch, length: c.length, channels: c.channels)
        let packed = cu.map { PackedRecurrenceReference(layout: layout, complex: c.complex, reverse: c.reverse, channels: c.channels, cuSeqlens: $0) }
        let steps = c.varlen ? (lengths.max() ?? 0) : c.length

        let paths = c.path.paths
        var rows: [ResultRow] = []
        for forced in paths {
            let op = LinearRecurrence(layout: layout, complex: c.complex, reverse: c.reverse, algorithm: forced, chunkLength: c.chunkLength)
            let stream = try device.makeStream()
            var label = ""
            var check: (CheckResult, Double?) = (.skipped, nil)
            let timing: Timing
            if !c.backward {
                try ShaderFill.encode(h.slice, value: Float.nan, on: stream)
                try stream.synchronize()
                timing = try Timing.measure(device, warmup: c.measure.warmup, iterations: c.measure.iterations) { s in
                    label = try op.forward(a: a, b: b, h0: h0, h: h, finalState: final, cuSeqlens: cu, on: s).path
                }
                if c.measure.check {
                    let refH = packed?.forward(a: aValues, b: bValues, h0: h0Values).h ?? dense.forward(a: aValues, b: bValues, h0: h0Values).h
                    let m = packed?.magnitude(a: aValues, b: bValues, h0: h0Values) ?? dense.magnitude(a: aValues, b: bValues, h0: h0Values)
                    check = compare(try h.readFloats(), refH, scale: m, steps: steps)
                }
            } else {
                try op.forward(a: a, b: b, h0: h0, h: h, finalState: final, cuSeqlens: cu, on: stream)
                try stream.synchronize()
                let dh = try device.makeTensor(rng.floats(count), shape: shape)
                let dFinal = try device.makeTensor(rng.floats(states), shape: stateShape)
                let da = try device.makeTensor(shape: shape, dtype: .f32)
                let db = try device.makeTensor(shape: shape, dtype: .f32)
                let dh0 = try device.makeTensor(shape: stateShape, dtype: .f32)
                timing = try Timing.measure(device, warmup: c.measure.warmup, iterations: c.measure.iterations) { s in
                    label = try op.backward(a: a, h: h, h0: h0, dh: dh, dFinal: dFinal, da: da, db: db, dh0: dh0, cuSeqlens: cu, on: s).path
                }
                if c.measure.check {
                    let hValues = try h.readFloats()
                    let (dhValues, dFinalValues) = (try dh.readFloats(), try dFinal.readFloats())
                    let ref = packed?.backward(a: aValues, h: hValues, h0: h0Values, dh: dhValues, dFinal: dFinalValues)
                        ?? dense.backward(a: aValues, h: hValues, h0: h0Values, dh: dhValues, dFinal: dFinalValues)
                    let g = packed?.gradientMagnitude(a: aValues, dh: dhValues, dFinal: dFinalValues)
                        ?? dense.gradientMagnitude(a: aValues, dh: dhValues, dFinal: dFinalValues)
                    let hMax = hValues.map { abs(Double($0)) }.max() ?? 1
                    let first = compare(try db.readFloats(), ref.db, scale: g.map { 2 * $0 }, steps: steps)
                    let second = compare(try da.readFloats(), ref.da, scale: g.map { 2 * $0 * max(hMax, 1e-3) }, steps: steps)
                    check = (first.0 == .pass && second.0 == .pass ? .pass : .fail, max(first.1, second.1))
                }
            }
            let gbps = Double(bytes) / (timing.medianMs * 1e6)
            let config: [String: ConfigValue] = [
                "layout": .string(layout.rawValue), "batch": .int(c.batch), "length": .int(c.length),
                "channels": .int(c.channels), "complex": .bool(c.complex), "reverse": .bool(c.reverse),
                "pass": .string(c.backward ? "backward" : "forward"), "dtype": .string("f32"),
                "varlen": .string(c.varlen ? "\(c.batch) sequences, \(length) steps" : "no"),
            ]
            rows.append(ResultRow(op: "recurrence", device: context.deviceName, config: config, path: label, timing: timing,
                                  gbps: gbps, ratioToCopy: gbps / copyGBps, check: check.0, maxRelError: check.1))
        }
        return rows
    }

    /// Error relative to the magnitude recurrence (|a|, |b|), failing above 2u * (L + 8) of
    /// it: the bound of any evaluation order of the recurrence in fp32 (see RecurrenceTests).
    func compare(_ got: [Float], _ ref: [Double], scale: [Double], steps: Int) -> (CheckResult, Double) {
        let tol = 2 * 0x1p-24 * Double(steps + 8)
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
