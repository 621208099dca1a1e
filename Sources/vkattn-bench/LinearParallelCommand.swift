import ArgumentParser
import Foundation
import Synchronization
import VkAttn
import VkAttnReference
import VkAttnParallel

/// Options of `lasp`, `lasp2` and `zeco` (chunked gated linear attention across ranks).
struct LinearParallelOptions: ParsableArguments {
    @Option(help: "Ranks (logical devices; default VKATTN_RANKS, else 2).") var ranks: Int?
    @Option(help: "Total sequence length, split contiguously over the ranks (uneven splits allowed).") var seq = 4096
    @Option(help: "B (sequences, each --seq long).") var batch = 1
    @Option(help: "H (heads).") var heads = 4
    @Option(help: "Dk (key dimension).") var dk = 64
    @Option(help: "Dv (value dimension).") var dv = 64
    @Option(help: "Gates: per-key (GLA), per-head (scalar decay) or none.") var gating = GatedLinearAttention.Gating.perKey
    @Option(help: "Rows per chunk of the local GLA (default: from the device).") var chunkLength: Int?
    @Option(help: "Transfer path (default: host-mapped where all memory is host-visible, else imported-host where offered, else staged).") var path: TransferRoute?
    @Flag(help: "Also time the backward pass.") var backward = false
    @Option(help: "Write a Chrome trace (chrome://tracing, Perfetto) of the last timed run to FILE.") var timeline: String?
    @Option(help: "local (ranks are devices of this process) or mpi (one process per rank: mpirun -np N vkattn-bench ...).")
    var backend = Backend.local

    func validate() throws {
        guard batch >= 1, seq >= 1, heads >= 1, dk >= 1, dv >= 1 else { throw OptionError("sizes must be >= 1") }
        if backend == .local {
            let n = try Limits.ranks(ranks)
            guard n <= seq else { throw OptionError("--ranks must be in 1...--seq") }
        }
        if let chunkLength, !(1...64).contains(chunkLength) { throw OptionError("--chunk-length must be in 1...64, got \(chunkLength)") }
        try Limits.require([("q", [batch, seq, heads, dk], 4), ("v", [batch, seq, heads, dv], 4)])
        try checkWritable(timeline, "--timeline")
    }

    /// `--ranks`, else VKATTN_RANKS, else 2 (validated in `validate`).
    var rankCount: Int { (try? Limits.ranks(ranks)) ?? 2 }
}

struct Lasp: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Linear attention across N ranks, LASP's serial chain of states.",
        discussion: LinearParallelBenchmark.discussion)
    @OptionGroup var options: LinearParallelOptions
    @OptionGroup var measure: MeasureOptions

    func run() throws {
        try LinearParallelBenchmark(options: options, measure: measure, scheme: .lasp, op: "lasp").run()
    }
}

struct Lasp2: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Linear attention across N ranks, LASP-2: one all-gather of every rank's (decay, state).",
        discussion: LinearParallelBenchmark.discussion)
    @OptionGroup var options: LinearParallelOptions
    @OptionGroup var measure: MeasureOptions

    func run() throws {
        try LinearParallelBenchmark(options: options, measure: measure, scheme: .lasp2, op: "lasp2").run()
    }
}

struct Zeco: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Linear attention across N ranks, ZeCO: the chain of states pipelined in row segments (all-scan).",
        discussion: LinearParallelBenchmark.discussion)
    @OptionGroup var options: LinearParallelOptions
    @OptionGroup var measure: MeasureOptions
    @Option(help: "Row segments of the pipelined chain (1 = LASP's chain).") var segments = 4

    func validate() throws {
        guard (1...options.seq).contains(segments) else { throw OptionError("--segments must be in 1...--seq, got \(segments)") }
    }

    func run() throws {
        try LinearParallelBenchmark(options: options, measure: measure, scheme: .zeco(segments: segments), op: "zeco").run()
    }
}

/// The body of `lasp`, `lasp2` and `zeco`: the problem on one device (Timing.measure), then on
/// N ranks (the span of every rank's GPU intervals on one host clock), overlap, bytes one rank
/// sends against the paper's formula, --check against the one-device result, --timeline.
struct LinearParallelBenchmark {
    let options: LinearParallelOptions
    let measure: MeasureOptions
    let scheme: ContextParallelScheme
    let op: String

    static let discussion = """
        median_ms is the span of the GPU intervals of every rank on one host clock (first start to last end) \
        for one call; single_device_ms the same problem on rank 0's device alone. overlap_efficiency = \
        1 - exposed / copy time. bytes_per_rank is the most one rank sends per call; the expected bytes \
        follow the papers: LASP-2 all-gathers N - 1 states of Dk x Dv (+ Dk decays) per head per rank \
        (B H Dk (Dv + 1) 4 bytes each); LASP's chain and ZeCO's all-scan send one state per hop. The \
        backward sends the same again (the suffix scan of state gradients). --check compares o (and \
        dq, dk, dv, d log-gates with --backward) with the one-device run (relative L2 <= 1e-5).
        """

    struct Shard: Sendable {
        let q: Tensor, k: Tensor, v: Tensor, g: Tensor?, dO: Tensor
    }

    func run() throws {
        if options.backend == .mpi {
            return try MPILinearBenchmark(options: options, measure: measure, scheme: scheme, op: op).run()
        }
        let log = BenchTeardown.log()
        let n = options.rankCount
        let group = try DeviceGroup(ranks: n, instance: Instance(log: log), route: options.path)
        BenchTeardown.watch(group.devices)
        let (b, l, h, dk, dv) = (options.batch, options.seq, options.heads, options.dk, options.dv)
        let gla = GatedLinearAttention(gating: options.gating, chunkLength: options.chunkLength)
        let lengths = ContextParallelLinearAttention.evenLengths(total: l, ranks: n)
        let cp = ContextParallelLinearAttention(lengths: lengths, scheme: scheme, attention: gla)
        let shape = ContextParallelLinearAttention.Shape(batch: b, heads: h, dk: dk, dv: dv)
        try cp.validate(shape, ranks: n)
        let expected = cp.expectedTraffic(shape: shape)
        let gateTail = gla.gating == .perKey ? [h, dk] : [h]
        var rng = SeededRandom.fresh()
        let qv = rng.floats(b * l * h * dk), kv = rng.floats(b * l * h * dk), vv = rng.floats(b * l * h * dv)
        let gv: [Float]? = gla.gating == .none ? nil : rng.floats(b * l * gateTail.reduce(1, *), in: -0.5...0)
        let dOv = rng.floats(b * l * h * dv)
        let deviceName = "\(group.devices[0].capabilities.name) x\(n) (\(group.placement.rawValue), \(group.route.rawValue))"
        note("\(op): \(n) ranks, lengths \(lengths), \(group.placement.rawValue), \(group.route.rawValue), clock \(group.clocks[0].method.rawValue)")

        // The same problem on one device (rank 0's), timed with GPU timestamps.
        let dev = group.devices[0]
        let s = try SingleDeviceLinear(dev, gla, options: options, q: qv, k: kv, v: vv, logGates: gv, dO: dOv, measure: measure)
        let o1 = s.output, singleForward = s.forward

        // Every rank's shard.
        let comms = try group.communicators()
        let split = try ContiguousSplit(lengths: lengths)
        func shard(_ x: [Float], width: Int, rank r: Int) throws -> [Float] { try split.shard(x, outer: b, inner: width, rank: r) }
        let gateWidth = gateTail.reduce(1, *)
        var built: [Shard] = []
        for comm in comms {
            let r = comm.rank, lr = lengths[r], device = comm.device
            let q = try device.makeTensor(try shard(qv, width: h * dk, rank: r), shape: [b, lr, h, dk])
            let k = try device.makeTensor(try shard(kv, width: h * dk, rank: r), shape: [b, lr, h, dk])
            let v = try device.makeTensor(try shard(vv, width: h * dv, rank: r), shape: [b, lr, h, dv])
            let dO = try device.makeTensor(try shard(dOv, width: h * dv, rank: r), shape: [b, lr, h, dv])
            var g: Tensor?
            if let gv { g = try device.makeTensor(try shard(gv, width: gateWidth, rank: r), shape: [b, lr] + gateTail) }
            built.append(Shard(q: q, k: k, v: v, g: g, dO: dO))
        }
        let shards = built
        let outputs = LinearBenchBox<[ContextParallelOutput]>([])
        let forwardRuns = try timedGroupRuns(group, measure: measure) {
            let out = try await onEveryRank(comms) { comm in
                let s = shards[comm.rank]
                return try await cp.forward(q: s.q, k: s.k, v: s.v, logGates: s.g, communicator: comm)
            }
            outputs.value = out
            return out[0].path
        }
        let forwardOutputs = outputs.value
        func unshard(_ parts: [Tensor], width: Int) throws -> [Float] {
            try split.unshard(try parts.map { try $0.readFloats() }, outer: b, inner: width)
        }
        let forwardCheck = measure.check ? relativeL2(try unshard(forwardOutputs.map(\.output), width: h * dv), try o1.readFloats(), infinitiesMatch: false) : nil
        let flops = Double(b * l * h) * Double(4 * dk * dv + 2 * gla.chunkLength(on: dev) * (dk + dv))
        var rows = [try row(forwardRuns, group: group, name: "\(op).forward", device: deviceName, single: singleForward, flops: flops,
                            check: forwardCheck, expected: expected)]
        var lastRuns = forwardRuns
        if let singleBackward = s.backward, let single = s.grads {
            let grads = LinearBenchBox<[ContextParallelGradients]>([])
            let backwardRuns = try timedGroupRuns(group, measure: measure) {
                let out = try await onEveryRank(comms) { comm in
                    let s = shards[comm.rank]
                    return try await cp.backward(q: s.q, k: s.k, v: s.v, logGates: s.g, incomingState: forwardOutputs[comm.rank].incomingState,
                                                 dOutput: s.dO, communicator: comm)
                }
                grads.value = out
                return out[0].path
            }
            var check: Double?
            if measure.check {
                let got = grads.value
                var errors = [relativeL2(try unshard(got.map(\.dq), width: h * dk), try single.dq.readFloats(), infinitiesMatch: false),
                              relativeL2(try unshard(got.map(\.dk), width: h * dk), try single.dk.readFloats(), infinitiesMatch: false),
                              relativeL2(try unshard(got.map(\.dv), width: h * dv), try single.dv.readFloats(), infinitiesMatch: false)]
                if let dg = single.dg {
                    errors.append(relativeL2(try unshard(got.compactMap(\.dLogGates), width: gateTail.reduce(1, *)), try dg.readFloats(), infinitiesMatch: false))
                }
                check = errors.max()
            }
            rows.append(try row(backwardRuns, group: group, name: "\(op).backward", device: deviceName, single: singleBackward,
                                flops: 2 * flops, check: check, expected: expected))
            lastRuns = backwardRuns
        }
        try writeGroupTimeline(options.timeline, group, lastRuns.runs)
        try reportParallel(rows, json: measure.json, log: log)
    }

    func row(_ measured: (runs: [TimedRun], path: String), group: DeviceGroup, name: String, device: String, single: Timing,
             flops: Double, check: Double?, expected: ExpectedTraffic) throws -> ParallelRow {
        let timing = Timing(samplesMs: measured.runs.map(\.spanMs))
        let median = measured.runs.sorted { $0.spanMs < $1.spanMs }[measured.runs.count / 2]
        let report = OverlapReport(median.intervals)
        let bytes = median.traffic.map(\.bytesSent).max() ?? 0
        let config: [String: ConfigValue] = [
            "ranks": .int(group.ranks), "seq": .int(options.seq), "batch": .int(options.batch), "heads": .int(options.heads),
            "dk": .int(options.dk), "dv": .int(options.dv), "gating": .string(options.gating.rawValue), "scheme": .string("\(scheme)"),
            "placement": .string(group.placement.rawValue), "transfer": .string(group.route.rawValue),
            "clock": .string(group.clocks[0].method.rawValue)]
        return .measured(op: name, device: device, config: config, path: measured.path, timing: timing, flops: flops, check: check,
                         bound: 1e-5, ranks: group.ranks, single: single, overlapEfficiency: report.efficiency,
                         copyNs: report.copyNs, exposedNs: report.exposedNs, overlapRanks: report.ranks.count, bytesPerRank: bytes,
                         expected: expected)
    }
}

/// The single-device run a parallel one is compared with: the whole [B, L] problem on
/// `device`, timed with GPU timestamps (the backward too with --backward).
struct SingleDeviceLinear {
    var forward: Timing
    var output: Tensor
    var backward: Timing?
    var grads: (dq: Tensor, dk: Tensor, dv: Tensor, dg: Tensor?)?

    init(_ device: Device, _ gla: GatedLinearAttention, options: LinearParallelOptions, q: [Float], k: [Float], v: [Float],
         logGates: [Float]?, dO: [Float], measure: MeasureOptions) throws {
        let (b, l, h, dk, dv) = (options.batch, options.seq, options.heads, options.dk, options.dv)
        let gateTail = gla.gating == .perKey ? [h, dk] : [h]
        let q1 = try device.makeTensor(q, shape: [b, l, h, dk]), k1 = try device.makeTensor(k, shape: [b, l, h, dk])
        let v1 = try device.makeTensor(v, shape: [b, l, h, dv])
        let g1 = try logGates.map { try device.makeTensor($0, shape: [b, l] + gateTail) }
        let o1 = try device.makeTensor(shape: [b, l, h, dv], dtype: .f32)
        forward = try Timing.measure(device, warmup: measure.warmup, iterations: measure.iterations) { stream in
            try gla.forward(q: q1, k: k1, v: v1, logGates: g1, output: o1, on: stream)
        }
        output = o1
        guard options.backward else { return }
        let dO1 = try device.makeTensor(dO, shape: [b, l, h, dv])
        let g = (dq: try device.makeTensor(shape: [b, l, h, dk], dtype: .f32), dk: try device.makeTensor(shape: [b, l, h, dk], dtype: .f32),
                 dv: try device.makeTensor(shape: [b, l, h, dv], dtype: .f32),
                 dg: try g1.map { _ in try device.makeTensor(shape: [b, l] + gateTail, dtype: .f32) })
        backward = try Timing.measure(device, warmup: measure.warmup, iterations: measure.iterations) { stream in
            try gla.backward(q: q1, k: k1, v: v1, logGates: g1, dOutput: dO1, dq: g.dq, dk: g.dk, dv: g.dv, dLogGates: g.dg, on: stream)
        }
        grads = g
    }
}

/// A value set from the body of a timed run (the pool task) and read after it.
final class LinearBenchBox<T: Sendable>: Sendable {
    private let lock: Mutex<T>
    init(_ value: T) { lock = Mutex(value) }
    var value: T {
        get { lock.withLock { $0 } }
        set { lock.withLock { $0 = newValue } }
    }
}
