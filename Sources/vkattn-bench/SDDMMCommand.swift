import ArgumentParser
import VkAttn
import VkAttnReference

struct SDDMM: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sddmm",
        abstract: "Sampled dense-dense product: out[p] = alpha * dot(X[r], Y[c]) (* A[p]) at the nonzeros (r, c) of a CSR pattern.",
        discussion: """
            X is [M, k], Y is [N, k] f32, the pattern [M, N] comes from a generator or --matrix FILE.mtx.
            GFLOP/s counts 2 * nnz * k (tflops holds TFLOP/s); GB/s counts the minimum bytes: the pattern
            (values too with --scale), X, the rows of Y the pattern references, out. A malformed matrix
            fails the command with its error.
            """)

    @OptionGroup var device: DeviceOptions
    @OptionGroup var measure: MeasureOptions
    @OptionGroup var input: SparseMatrixOptions
    @Option(help: "Inner dimension of X and Y.") var k = 64
    @Flag(help: "Multiply each product by the pattern's value.") var scale = false
    @Option(help: "out = alpha * ...") var alpha: Float = 1

    func validate() throws {
        guard k >= 1 else { throw OptionError("--k must be positive") }
        try Limits.require([("X", [input.rows, k], 4), ("Y", [input.cols ?? input.rows, k], 4)])
    }

    func run() throws {
        let context = try BenchContext(device)
        let device = context.device
        let seed = input.seed ?? SeededRandom.fresh().seed
        var (a, source) = try input.load(seed: seed)
        if input.valueType == .f16 { a = a.roundedToHalf() }
        let pattern = try device.makeCSR(a, valueType: input.valueType)
        let plan = try SDDMMPlan(pattern, k: k, options: SDDMMOptions(scaleByValues: scale, validation: input.validation))
        if !measure.json {
            print("sddmm: \(plan.statistics); validated on the \(plan.validatedOn); \(plan.path), \(plan.lanesAcrossK) lanes across k, \(plan.nonzerosPerTeam) nonzeros per team")
        }
        var rng = SeededRandom(seed: seed ^ 0x5DD)
        let xValues = rng.floats(a.rows * k)
        let yValues = rng.floats(a.cols * k)
        let x = try device.makeTensor(xValues, shape: [a.rows, k])
        let y = try device.makeTensor(yValues, shape: [a.cols, k])
        let out = try device.makeTensor(shape: [max(a.nnz, 1)], dtype: .f32)
        let alpha = self.alpha

        var check: (CheckResult, Double?) = (.skipped, nil)
        if measure.check {
            let stream = try device.makeStream()
            try ShaderFill.encode(out.slice, value: Float.nan, on: stream)
            try stream.barrier()
            try plan.encode(x: x, y: y, out: out, alpha: alpha, on: stream)
            try stream.synchronize()
            let reference = SparseReference.sddmm(a, x: xValues, y: yValues, k: k, alpha: alpha, scaleByValues: scale)
            let result = sparseCheck(reference, Array(try out.readFloats().prefix(a.nnz)), tolerance: 1e-4)
            check = (result.0, result.1)
        }
        let timing = try Timing.measure(device, warmup: measure.warmup, iterations: measure.iterations) { stream in
            try plan.encode(x: x, y: y, out: out, alpha: alpha, on: stream)
        }
        let seconds = timing.medianMs * 1e-3
        let flops = 2 * Double(a.nnz) * Double(k)
        let bytes = (a.rows + 1) * 4 + a.nnz * (4 + (scale ? input.valueType.byteSize : 0)) + a.rows * k * 4
            + distinctColumns(a) * k * 4 + a.nnz * 4
        let gbps = Double(bytes) / seconds / 1e9
        let copy = try CopyReference.gbps(context, bytes: bytes, warmup: 2, iterations: 5)
        if !measure.json {
            print("\(plan.path): \(fixed(flops / seconds / 1e9, 3)) GFLOP/s, \(fixed(gbps, 2)) GB/s, median \(fixed(timing.medianMs, 3)) ms")
        }
        let config = source.merging(statisticsConfig(plan.statistics)).merging([
            "cols": .int(a.cols), "k": .int(k), "dtype": .string(input.dtype.rawValue), "scale": .bool(scale),
            "validated_on": .string(plan.validatedOn.rawValue), "alpha": .double(Double(alpha))])
        let row = ResultRow(op: "sddmm", device: context.deviceName, config: config, path: plan.path, timing: timing, gbps: gbps,
                            tflops: flops / seconds / 1e12, ratioToCopy: gbps / copy, check: check.0, maxRelError: check.1)
        try context.report([row], json: measure.json)
    }
}
