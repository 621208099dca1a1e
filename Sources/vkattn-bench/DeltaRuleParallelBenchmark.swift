import Foundation
import VkAttn
import VkAttnReference
import VkAttnParallel

/// `delta-rule --ranks N`: the problem on one device (rank 0's), then split contiguously over N
/// in-process ranks (`ContextParallelDeltaRule`); the span of every rank's GPU intervals, the
/// bytes the busiest rank sent beside the formula, and --check against the one-device run
/// (relative L2 <= 2e-5, the one-device test's bound).
struct DeltaRuleParallelBenchmark {
    let command: DeltaRuleCommand

    struct Shard: Sendable {
        let q: Tensor, k: Tensor, v: Tensor, beta: Tensor, g: Tensor?, dO: Tensor
    }

    var scheme: ContextParallelScheme {
        switch command.scheme {
        case .lasp: return .lasp
        case .lasp2: return .lasp2
        case .zeco: return .zeco(segments: min(4, command.batch * command.heads))
        }
    }

    func run() throws {
        let c = command, measure = c.measure
        let log = BenchTeardown.log()
        let n = c.ranks
        let group = try DeviceGroup(ranks: n, instance: Instance(log: log), route: nil)
        BenchTeardown.watch(group.devices)
        let (b, l, h, dk, dv) = (c.batch, c.seq, c.heads, c.dk, c.dv)
        let rule = DeltaRule(gated: c.gated, chunkLength: c.chunkLength, preference: c.kernel)
        let lengths = ContextParallelLinearAttention.evenLengths(total: l, ranks: n)
        let cp = ContextParallelDeltaRule(lengths: lengths, scheme: scheme, deltaRule: rule)
        let shape = ContextParallelDeltaRule.Shape(batch: b, heads: h, dk: dk, dv: dv)
        try cp.validate(shape, ranks: n)
        let expected = cp.expectedTraffic(shape: shape)
        var rng = SeededRandom.fresh()
        let qv = DeltaRuleReference.l2Normalised(rng.floats(b * l * h * dk), width: dk)
        let kv = DeltaRuleReference.l2Normalised(rng.floats(b * l * h * dk), width: dk)
        let vv = rng.floats(b * l * h * dv), betav = rng.floats(b * l * h, in: 0...1)
        let gv: [Float]? = c.gated ? rng.floats(b * l * h, in: -1...0) : nil
        let dOv = rng.floats(b * l * h * dv)
        let deviceName = "\(group.devices[0].capabilities.name) x\(n) (\(group.placement.rawValue), \(group.route.rawValue))"
        note("delta-rule: \(n) ranks, lengths \(lengths), scheme \(scheme), \(group.placement.rawValue), \(group.route.rawValue)")

        // The same problem on rank 0's device alone.
        let dev = group.devices[0]
        let one = (q: try dev.makeTensor(qv, shape: [b, l, h, dk]), k: try dev.makeTensor(kv, shape: [b, l, h, dk]),
                   v: try dev.makeTensor(vv, shape: [b, l, h, dv]), beta: try dev.makeTensor(betav, shape: [b, l, h]),
                   g: try gv.map { try dev.makeTensor($0, shape: [b, l, h]) }, dO: try dev.makeTensor(dOv, shape: [b, l, h, dv]))
        let o1 = try dev.makeTensor(shape: [b, l, h, dv], dtype: .f32)
        let singleForward = try Timing.measure(dev, warmup: measure.warmup, iterations: measure.iterations) { s in
            try rule.forward(q: one.q, k: one.k, v: one.v, beta: one.beta, logDecay: one.g, output: o1, on: s)
        }

        let comms = try group.communicators()
        let split = try ContiguousSplit(lengths: lengths)
        func shard(_ x: [Float], width: Int, rank r: Int) throws -> [Float] { try split.shard(x, outer: b, inner: width, rank: r) }
        var built: [Shard] = []
        for comm in comms {
            let r = comm.rank, lr = lengths[r], device = comm.device
            built.append(Shard(q: try device.makeTensor(try shard(qv, width: h * dk, rank: r), shape: [b, lr, h, dk]),
                               k: try device.makeTensor(try shard(kv, width: h * dk, rank: r), shape: [b, lr, h, dk]),
                               v: try device.makeTensor(try shard(vv, width: h * dv, rank: r), shape: [b, lr, h, dv]),
                               beta: try device.makeTensor(try shard(betav, width: h, rank: r), shape: [b, lr, h]),
                               g: try gv.map { try device.makeTensor(try shard($0, width: h, rank: r), shape: [b, lr, h]) },
                               dO: try device.makeTensor(try shard(dOv, width: h * dv, rank: r), shape: [b, lr, h, dv])))
        }
        let shards = built
        let outputs = LinearBenchBox<[ContextParallelOutput]>([])
        let forwardRuns = try timedGroupRuns(group, measure: measure) {
            let out = try await onEveryRank(comms) { comm in
                let s = shards[comm.rank]
                return try await cp.forward(q: s.q, k: s.k, v: s.v, beta: s.beta, logDecay: s.g, communicator: comm)
            }
            outputs.value = out
            return out[0].path
        }
        let forwardOutputs = outputs.value
        func unshard(_ parts: [Tensor], width: Int) throws -> [Float] {
            try split.unshard(try parts.map { try $0.readFloats() }, outer: b, inner: width)
        }
        let forwardCheck = measure.check
            ? relativeL2(try unshard(forwardOutputs.map(\.output), width: h * dv), try o1.readFloats(), infinitiesMatch: false) : nil
        let cl = Double(rule.chunkLength(on: dev))
        let flops = 2 * Double(b * l * h) * (cl * Double(2 * dk + dv) + 3 * Double(dk * dv) + Double(dk * dk * (dk + dv)) / cl)
        var rows = [row(forwardRuns, group: group, name: "delta-rule.forward", device: deviceName, single: singleForward, flops: flops,
                        check: forwardCheck, expected: expected)]
        if c.backward {
            let g1 = (dq: try dev.makeTensor(shape: [b, l, h, dk], dtype: .f32), dk: try dev.makeTensor(shape: [b, l, h, dk], dtype: .f32),
                      dv: try dev.makeTensor(shape: [b, l, h, dv], dtype: .f32), dbeta: try dev.makeTensor(shape: [b, l, h], dtype: .f32),
                      dg: try one.g.map { _ in try dev.makeTensor(shape: [b, l, h], dtype: .f32) })
            let singleBackward = try Timing.measure(dev, warmup: measure.warmup, iterations: measure.iterations) { s in
                try rule.backward(q: one.q, k: one.k, v: one.v, beta: one.beta, logDecay: one.g, dOutput: one.dO, dq: g1.dq, dk: g1.dk,
                                  dv: g1.dv, dBeta: g1.dbeta, dLogDecay: g1.dg, on: s)
            }
            let grads = LinearBenchBox<[ContextParallelDeltaGradients]>([])
            let backwardRuns = try timedGroupRuns(group, measure: measure) {
                let out = try await onEveryRank(comms) { comm in
                    let s = shards[comm.rank]
                    return try await cp.backward(q: s.q, k: s.k, v: s.v, beta: s.beta, logDecay: s.g,
                                                 incomingState: forwardOutputs[comm.rank].incomingState, dOutput: s.dO, communicator: comm)
                }
                grads.value = out
                return out[0].path
            }
            var check: Double?
            if measure.check {
                let got = grads.value
                var errors = [relativeL2(try unshard(got.map(\.dq), width: h * dk), try g1.dq.readFloats(), infinitiesMatch: false),
                              relativeL2(try unshard(got.map(\.dk), width: h * dk), try g1.dk.readFloats(), infinitiesMatch: false),
                              relativeL2(try unshard(got.map(\.dv), width: h * dv), try g1.dv.readFloats(), infinitiesMatch: false),
                              relativeL2(try unshard(got.map(\.dBeta), width: h), try g1.dbeta.readFloats(), infinitiesMatch: false)]
                if let dg = g1.dg {
                    errors.append(relativeL2(try unshard(got.compactMap(\.dLogDecay), width: h), try dg.readFloats(), infinitiesMatch: false))
                }
                check = errors.max()
            }
            rows.append(row(backwardRuns, group: group, name: "delta-rule.backward", device: deviceName, single: singleBackward,
                            flops: 3 * flops, check: check, expected: expected))
        }
        try reportParallel(rows, json: measure.json, log: log)
    }

    func row(_ measured: (runs: [TimedRun], path: String), group: DeviceGroup, name: String, device: String, single: Timing,
             flops: Double, check: Double?, expected: ExpectedTraffic) -> ParallelRow {
        let c = command
        let timing = Timing(samplesMs: measured.runs.map(\.spanMs))
        let median = measured.runs.sorted { $0.spanMs < $1.spanMs }[measured.runs.count / 2]
        let report = OverlapReport(median.intervals)
        let bytes = median.traffic.map(\.bytesSent).max() ?? 0
        let config: [String: ConfigValue] = [
            "ranks": .int(group.ranks), "seq": .int(c.seq), "batch": .int(c.batch), "heads": .int(c.heads), "dk": .int(c.dk),
            "dv": .int(c.dv), "gated": .bool(c.gated), "scheme": .string("\(scheme)"), "placement": .string(group.placement.rawValue),
            "transfer": .string(group.route.rawValue)]
        return .measured(op: name, device: device, config: config, path: measured.path, timing: timing, flops: flops, check: check,
                         bound: 2e-5, ranks: group.ranks, single: single, overlapEfficiency: report.efficiency,
                         copyNs: report.copyNs, exposedNs: report.exposedNs, overlapRanks: report.ranks.count, bytesPerRank: bytes,
                         expected: expected)
    }
}
