import ArgumentParser
import VkAttn
import VkAttnReference

struct Fill: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fill bandwidth: vkCmdFillBuffer and the vectorized shader fill (f32, u32).",
        discussion: "GB/s counts bytes written. ratio_to_copy is against vkCmdCopyBuffer of the same size in the same run.")

    @OptionGroup var device: DeviceOptions
    @OptionGroup var measure: MeasureOptions
    @OptionGroup var size: ByteCountOption

    func run() throws {
        let context = try BenchContext(device)
        try Limits.require([("the filled buffer", [size.bytes], 1)], on: context)
        let device = context.device
        let bytes = size.bytes
        let words = bytes / 4
        let buffer = try device.makeBuffer(of: UInt32.self, count: words)
        let copyGBps = try CopyReference.gbps(context, bytes: size.bytes, warmup: measure.warmup, iterations: measure.iterations)
        var rng = SeededRandom.fresh()
        let config: [String: ConfigValue] = ["bytes": .int(bytes)]
        var rows: [ResultRow] = []

        func verify(_ word: UInt32) throws -> (CheckResult, Double?) {
            guard measure.check else { return (.skipped, nil) }
            let ok = try buffer.read(UInt32.self, count: words).allSatisfy { $0 == word }
            return (ok ? .pass : .fail, ok ? 0 : 1)
        }

        let word = UInt32(truncatingIfNeeded: rng.next())
        let command = try Timing.measure(device, warmup: measure.warmup, iterations: measure.iterations) { stream in
            try stream.fill(buffer.whole, word: word)
        }
        var result = try verify(word)
        rows.append(ResultRow(op: "fill", device: context.deviceName, config: config, path: "vkCmdFillBuffer", timing: command,
                              gbps: Double(bytes) / (command.medianMs * 1e6),
                              ratioToCopy: Double(bytes) / (command.medianMs * 1e6) / copyGBps,
                              check: result.0, maxRelError: result.1))
        for element in ShaderFill.Element.allCases {
            let value = rng.floats(1, in: -1000...1000)[0]
            let bits = element == .f32 ? value.bitPattern : UInt32(truncatingIfNeeded: rng.next())
            let timing = try Timing.measure(device, warmup: measure.warmup, iterations: measure.iterations) { stream in
                if element == .f32 {
                    try ShaderFill.encode(buffer.whole, value: value, on: stream)
                } else {
                    try ShaderFill.encode(buffer.whole, value: bits, on: stream)
                }
            }
            result = try verify(bits)
            let gbps = Double(bytes) / (timing.medianMs * 1e6)
            rows.append(ResultRow(op: "fill", device: context.deviceName, config: config,
                                  path: ShaderFill(element: element).path, timing: timing, gbps: gbps,
                                  ratioToCopy: gbps / copyGBps, check: result.0, maxRelError: result.1))
        }
        try context.report(rows, json: measure.json)
    }
}
