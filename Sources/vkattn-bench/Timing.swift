import VkAttn

/// GPU-timestamp timing of one configuration: warm-up runs, then `iterations` timed runs,
/// each bracketed by timestamps taken after everything before it finished.
struct Timing {
    static let maxIterations = Stream.maxTimestamps - 1

    let samplesMs: [Double]

    var medianMs: Double {
        let s = samplesMs.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }
    var minMs: Double { samplesMs.min() ?? 0 }
    var maxMs: Double { samplesMs.max() ?? 0 }

    /// Times `encode` (which records one run of the operation into the stream): `warmup` runs
    /// (at least one), then up to `iterations` timed runs, fewer when the runs are slow: the
    /// timed runs stop at about `budgetSeconds` of GPU time, but never below three.
    static func measure(_ device: Device, warmup: Int, iterations: Int, budgetSeconds: Double = 20,
                        _ encode: (Stream) throws -> Void) throws -> Timing {
        let stream = try device.makeStream()
        var warmMs = 0.0
        for _ in 0..<max(1, warmup) {
            let start = try stream.timestamp()
            try encode(stream)
            try stream.barrier()
            let end = try stream.timestamp()
            try stream.synchronize()
            warmMs = try stream.nanoseconds(from: start, to: end) / 1e6
        }
        let affordable = warmMs > 0 ? Int(budgetSeconds * 1000 / warmMs) : iterations
        let runs = min(iterations, max(3, affordable))
        var stamps = [try stream.timestamp()]
        for _ in 0..<runs {
            try encode(stream)
            try stream.barrier()
            stamps.append(try stream.timestamp())
        }
        try stream.synchronize()
        var samples: [Double] = []
        for i in 1..<stamps.count {
            samples.append(try stream.nanoseconds(from: stamps[i - 1], to: stamps[i]) / 1e6)
        }
        return Timing(samplesMs: samples)
    }
}
