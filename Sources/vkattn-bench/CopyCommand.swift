import ArgumentParser
import VkAttn
import VkAttnReference

struct Copy: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Copy bandwidth: vkCmdCopyBuffer and the vectorized shader copy.",
        discussion: "GB/s counts bytes read plus bytes written. ratio_to_copy is against vkCmdCopyBuffer in the same run.")

    @OptionGroup var device: DeviceOptions
    @OptionGroup var measure: MeasureOptions
    @OptionGroup var size: ByteCountOption

    func run() throws {
        let context = try BenchContext(device)
        try Limits.require([("the copied buffer", [size.bytes], 1)], on: context)
        let rows = try CopyBenchmark(bytes: size.bytes, warmup: measure.warmup, iterations: measure.iterations,
                                     check: measure.check).run(context)
        try context.report(rows, json: measure.json)
    }
}

/// Measures vkCmdCopyBuffer and ShaderCopy on random data; with `check`, verifies the copy.
struct CopyBenchmark {
    var bytes: Int
    var warmup: Int
    var iterations: Int
    var check: Bool

    func run(_ context: BenchContext) throws -> [ResultRow] {
        let device = context.device
        var rng = SeededRandom.fresh()
        let words = bytes / 4
        let source = try device.makeBuffer(rng.words(words))
        let destination = try device.makeBuffer(of: UInt32.self, count: words)
        let config: [String: ConfigValue] = ["bytes": .int(bytes)]

        func verify() throws -> (CheckResult, Double?) {
            guard check else { return (.skipped, nil) }
            let a = try source.read(UInt32.self, count: words)
            let b = try destination.read(UInt32.self, count: words)
            let mismatches = zip(a, b).reduce(0) { $0 + ($1.0 == $1.1 ? 0 : 1) }
            return (mismatches == 0 ? .pass : .fail, mismatches == 0 ? 0 : 1)
        }
        func poison() throws {
            let stream = try device.makeStream()
            try ShaderFill.encode(destination.whole, value: Float.nan, on: stream)
            try stream.synchronize()
        }

        try poison()
        let reference = try Timing.measure(device, warmup: warmup, iterations: iterations) { stream in
            try stream.copy(from: source.whole, to: destination.whole)
        }
        let referenceCheck = try verify()
        let referenceGBps = 2 * Double(bytes) / (reference.medianMs * 1e6)

        try poison()
        let copy = ShaderCopy()
        let shader = try Timing.measure(device, warmup: warmup, iterations: iterations) { stream in
            try copy.encode(from: source.whole, to: destination.whole, on: stream)
        }
        let shaderCheck = try verify()
        let shaderGBps = 2 * Double(bytes) / (shader.medianMs * 1e6)

        return [
            ResultRow(op: "copy", device: context.deviceName, config: config, path: "vkCmdCopyBuffer", timing: reference,
                      gbps: referenceGBps, ratioToCopy: 1, check: referenceCheck.0, maxRelError: referenceCheck.1),
            ResultRow(op: "copy", device: context.deviceName, config: config, path: ShaderCopy.path(on: device), timing: shader,
                      gbps: shaderGBps, ratioToCopy: shaderGBps / referenceGBps, check: shaderCheck.0, maxRelError: shaderCheck.1),
        ]
    }
}
