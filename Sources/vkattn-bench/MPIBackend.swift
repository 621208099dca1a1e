import ArgumentParser
import Foundation
import VkAttn
import VkAttnReference
import VkAttnParallel
import VkAttnMPI

/// `--backend mpi`: one process per rank under mpirun, each with its own device, on
/// `MPICommunicator`. Reusable by every parallel subcommand: `MPIBackend.run(path:_:)` runs a
/// body on this process's communicator, `timed`, `row` and `report` turn per-rank timelines
/// into the bench's numbers, table and trace.
enum MPIBackend {
    /// The bench waits far longer than the tests: rank 0 times the single-device run while
    /// the others wait in a barrier (VKATTN_MPI_TIMEOUT still overrides).
    static let benchTimeoutSeconds = 3600.0

    /// This process's communicator over every rank of the MPI job (`path` forces a transfer path).
    static func communicator(log: ValidationLog, path: TransferRoute? = nil) throws -> MPICommunicator {
        let timeout = ProcessInfo.processInfo.environment["VKATTN_MPI_TIMEOUT"].flatMap(Double.init) ?? benchTimeoutSeconds
        return try MPICommunicator.world(log: log, timeout: timeout, route: path)
    }

    /// Runs `body` on this process's communicator (`path` forces a transfer path); an error
    /// aborts every rank instead of leaving them waiting.
    static func run(path: TransferRoute?, _ body: @escaping @Sendable (MPICommunicator, ValidationLog) async throws -> Void) throws {
        let log = BenchTeardown.log()
        let comm = try communicator(log: log, path: path)
        defer { comm.finalize() }
        do {
            try blocking { try await body(comm, log) }
        } catch {
            comm.abort(error)
            throw error
        }
    }

    /// Refuses a --ranks other than the processes mpirun started.
    static func checkRanks(_ ranks: Int?, _ comm: MPICommunicator) throws {
        if let ranks, ranks != comm.size {
            throw OptionError("--ranks \(ranks) but mpirun started \(comm.size) processes (omit --ranks with --backend mpi)")
        }
    }

    /// A generator seeded by rank 0's fresh seed, so that every rank makes the same global data
    /// and takes its shard.
    static func sharedRandom(_ comm: MPICommunicator) async throws -> SeededRandom {
        let seeds = try await comm.hostAllGather(withUnsafeBytes(of: SeededRandom.fresh().seed) { Array($0) })
        return SeededRandom(seed: seeds[0].withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
    }

    /// The end of every `--backend mpi` command: the Chrome trace of every rank's last timed run
    /// (--timeline), then on rank 0 the per-rank table of the last pass's median run and the rows.
    static func report(_ comm: MPICommunicator, last: Measured, timeline: String?, rows: [ParallelRow], json: Bool,
                       log: ValidationLog) async throws {
        if let file = timeline {
            let intervals = try await gatherIntervals(comm, last.lastIntervals)
            if comm.rank == 0 {
                let names = Dictionary(uniqueKeysWithValues: (0..<comm.size).map { ($0, "rank \($0) (process)") })
                try ParallelTimeline.chromeTrace(intervals, rankNames: names).write(toFile: file, atomically: true, encoding: .utf8)
                note("timeline: \(intervals.count) intervals of every rank's last timed run written to \(file)")
            }
        }
        guard comm.rank == 0 else { return }
        print("per rank (median run of the last pass, host clock of each process):")
        print(rankTable(last.median))
        try reportParallel(rows, json: json, log: log)
    }

    /// The row of one measured call from every rank's figures of its median run.
    static func row(_ m: Measured, op: String, device: String, config: [String: ConfigValue], single: Timing, flops: Double,
                    check: Double?, bound: Double, expected: ExpectedTraffic) -> ParallelRow {
        let n = m.median.count
        let copy = m.median.reduce(0) { $0 + $1.copyNs }, exposed = m.median.reduce(0) { $0 + $1.exposedNs }
        return .measured(op: op, device: device, config: config, path: m.path + " (MPI)", timing: Timing(samplesMs: m.spansMs),
                         flops: flops, check: check, bound: bound, ranks: n, single: single,
                         overlapEfficiency: copy > 0 ? 1 - exposed / copy : 1, copyNs: copy, exposedNs: exposed, overlapRanks: n,
                         bytesPerRank: m.median.map(\.traffic.bytesSent).max() ?? 0, expected: expected)
    }

    /// One rank's figures of one timed run.
    struct RankRun: Codable {
        var rank: Int
        var firstStartNs: Double
        var lastEndNs: Double
        var computeNs: Double
        var copyNs: Double
        var exposedNs: Double
        var traffic: RankTraffic
    }

    /// This rank's figures from its timeline intervals (host CLOCK_MONOTONIC nanoseconds).
    static func rankRun(_ comm: MPICommunicator, _ intervals: [ParallelTimeline.Interval]) -> RankRun {
        let report = OverlapReport(intervals)
        let mine = report.ranks.first { $0.rank == comm.globalRank }
        return RankRun(rank: comm.rank, firstStartNs: intervals.map(\.startNs).min() ?? 0, lastEndNs: intervals.map(\.endNs).max() ?? 0,
                       computeNs: mine?.computeNs ?? 0, copyNs: mine?.copyNs ?? 0, exposedNs: mine?.exposedNs ?? 0, traffic: comm.traffic)
    }

    /// Every rank's figures, on every rank.
    static func gather(_ comm: MPICommunicator, _ run: RankRun) async throws -> [RankRun] {
        let bytes = try await comm.hostAllGather(Array(try JSONEncoder().encode(run)))
        return try bytes.map { try JSONDecoder().decode(RankRun.self, from: Data($0)) }
    }

    /// The span of one call: first start to last end over every rank when all ranks share a
    /// host (one CLOCK_MONOTONIC); across hosts, clocks differ, so the longest rank's own span.
    static func span(_ runs: [RankRun], sameHost: Bool) -> Double {
        if sameHost { return (runs.map(\.lastEndNs).max() ?? 0) - (runs.map(\.firstStartNs).min() ?? 0) }
        return runs.map { $0.lastEndNs - $0.firstStartNs }.max() ?? 0
    }

    /// One timeline interval on the wire.
    struct WireInterval: Codable {
        var rank: Int, kind: ParallelTimeline.Kind, label: String, startNs: Double, endNs: Double, bytes: Int
    }

    /// Every rank's intervals, on every rank (for one Chrome trace written by rank 0; across
    /// hosts the ranks' clocks are offset by the hosts' clock difference).
    static func gatherIntervals(_ comm: MPICommunicator, _ intervals: [ParallelTimeline.Interval]) async throws -> [ParallelTimeline.Interval] {
        let wire = intervals.map { WireInterval(rank: $0.rank, kind: $0.kind, label: $0.label, startNs: $0.startNs, endNs: $0.endNs, bytes: $0.bytes) }
        let all = try await comm.hostAllGather(Array(try JSONEncoder().encode(wire)))
        return try all.flatMap { try JSONDecoder().decode([WireInterval].self, from: Data($0)) }.map {
            ParallelTimeline.Interval(rank: $0.rank, kind: $0.kind, label: $0.label, startNs: $0.startNs, endNs: $0.endNs, bytes: $0.bytes)
        }
    }

    struct Measured {
        var spansMs: [Double]
        var median: [RankRun]
        var path: String
        /// This rank's intervals of the last timed run (--timeline).
        var lastIntervals: [ParallelTimeline.Interval]
    }

    /// Warm-up runs, then timed runs (as many on every rank: rank 0's count), each after a
    /// barrier; every rank's figures gathered per run (every `--backend mpi` command).
    static func timed(_ comm: MPICommunicator, measure: MeasureOptions, sameHost: Bool,
                      _ body: () async throws -> String) async throws -> Measured {
        comm.timeline?.isRecording = false
        var warm = 0.0
        for _ in 0..<max(1, measure.warmup) {
            let start = Date()
            _ = try await body()
            warm = Date().timeIntervalSince(start)
        }
        let counts = try await comm.hostAllGather(withUnsafeBytes(of: Int64(min(measure.iterations, max(min(3, measure.iterations), Int(60 / max(warm, 1e-3)))))) { Array($0) })
        let count = Int(counts[0].withUnsafeBytes { $0.loadUnaligned(as: Int64.self) })
        var all: [[RankRun]] = []
        var path = ""
        var lastIntervals: [ParallelTimeline.Interval] = []
        for _ in 0..<count {
            try await comm.barrier()
            _ = comm.timeline?.drain()
            comm.engine.resetTraffic()
            comm.timeline?.isRecording = true
            path = try await body()
            comm.timeline?.isRecording = false
            lastIntervals = comm.timeline?.drain() ?? []
            let mine = rankRun(comm, lastIntervals)
            all.append(try await gather(comm, mine))
        }
        let spans = all.map { span($0, sameHost: sameHost) / 1e6 }
        let median = all[spans.indices.sorted { spans[$0] < spans[$1] }[spans.count / 2]]
        return Measured(spansMs: spans, median: median, path: path, lastIntervals: lastIntervals)
    }

    static func rankTable(_ runs: [RankRun]) -> String {
        let header = ["rank", "time ms", "compute ms", "copy ms", "exposed ms", "overlap", "bytes sent", "bytes received", "messages"]
        let rows = runs.map { r -> [String] in
            [String(r.rank), fixed((r.lastEndNs - r.firstStartNs) / 1e6, 1), fixed(r.computeNs / 1e6, 1), fixed(r.copyNs / 1e6, 2),
             fixed(r.exposedNs / 1e6, 2), fixed(r.copyNs > 0 ? 1 - r.exposedNs / r.copyNs : 1, 3), String(r.traffic.bytesSent),
             String(r.traffic.bytesReceived), "\(r.traffic.messagesSent)/\(r.traffic.messagesReceived)"]
        }
        return renderTable(header: header, rows: rows)
    }
}

/// `ring|ulysses|hybrid --backend mpi`: the same numbers as the in-process run, measured by
/// every process for its rank and assembled on rank 0 (which also times the single-device
/// run and, with --check, compares the gathered outputs with it).
struct MPIAttentionBenchmark {
    let options: ParallelOptions
    let measure: MeasureOptions
    let scheme: ContextParallelScheme
    let op: String

    func run() throws {
        try MPIBackend.run(path: options.path) { comm, log in try await self.body(comm, log: log) }
    }

    func body(_ comm: MPICommunicator, log: ValidationLog) async throws {
        let n = comm.size, r = comm.rank, root = r == 0
        try MPIBackend.checkRanks(options.ranks, comm)
        let lengths = try options.lengths()
        let hq = options.heads, hkv = options.kvHeads ?? hq, d = options.dim, dtype = options.storage
        let plan = try ShardPlan(lengths: lengths, ranks: n, sharding: options.sharding)
        let attention = FlashAttention(mask: try options.mask(lengths: lengths))
        let cp = ContextParallelAttention(plan: plan, scheme: scheme, attention: attention)
        let shape = ContextParallelAttention.Shape(headsQ: hq, headsKV: hkv, headDim: d, dtype: dtype)
        try cp.validate(shape, ranks: n)
        var rng = try await MPIBackend.sharedRandom(comm)
        let total = plan.totalTokens
        let round: (Float) -> Float = dtype == .f16 ? { Float(Float16($0)) } : { $0 }
        let q = rng.floats(total * hq * d).map(round), k = rng.floats(total * hkv * d).map(round)
        let v = rng.floats(total * hkv * d).map(round), dO = rng.floats(total * hq * d).map(round)
        let device = comm.device
        let sameHost = comm.engine.localSize == n
        let deviceName = "\(device.capabilities.name) x\(n) (mpi, \(comm.route.rawValue))"
        if root {
            note("\(op) --backend mpi: \(n) processes, rank 0 on \(comm.deviceChoice), \(comm.route.rawValue), clock \(comm.clock.method.rawValue) (+-\(Int(comm.clock.uncertaintyNanoseconds)) ns)\(sameHost ? "" : "; ranks on several hosts: spans are per rank")")
        }

        // The single-device run on rank 0 (the others wait in the barrier below).
        var single: SingleDeviceAttention?
        if root {
            single = try SingleDeviceAttention(device, attention, plan: plan, q: q, k: k, v: v, dO: dO, heads: (hq, hkv, d), dtype: dtype,
                                               measure: measure, backward: options.backward)
        }
        try await comm.barrier()

        // This rank's tensors.
        let t = plan.tokens(rank: r)
        func make(_ x: [Float], _ heads: Int) throws -> Tensor {
            try device.makeTensor(plan.shard(x, width: heads * d, rank: r), shape: [t, heads, d], dtype: dtype)
        }
        let qt = try make(q, hq), kt = try make(k, hkv), vt = try make(v, hkv), dOt = try make(dO, hq)
        let oType = attention.outputDType ?? dtype
        let out = AttentionOutput(o: try device.makeTensor(shape: [t, hq, d], dtype: oType), lse: try device.makeTensor(shape: [hq, t], dtype: .f32))
        let grads = AttentionGradients(dq: try device.makeTensor(shape: [t, hq, d], dtype: dtype),
                                       dk: try device.makeTensor(shape: [t, hkv, d], dtype: dtype),
                                       dv: try device.makeTensor(shape: [t, hkv, d], dtype: dtype))

        let forwardRuns = try await MPIBackend.timed(comm, measure: measure, sameHost: sameHost) {
            try await cp.forward(q: qt, k: kt, v: vt, into: out, communicator: comm).path
        }
        var check: Double?
        if measure.check {
            let o = try await gatherRows(comm, out.o, plan: plan, width: hq * d)
            let lse = try await gatherColumns(comm, out.lse, plan: plan, heads: hq)
            if let single { check = max(relativeL2(o, try single.out.o.readFloats(), infinitiesMatch: true), relativeL2(lse, try single.out.lse.readFloats(), infinitiesMatch: true)) }
        }
        var rows: [ParallelRow] = []
        if let single {
            rows.append(row(forwardRuns, name: "\(op).forward", device: deviceName, single: single.forward, flops: try flops(plan, hq: hq, d: d),
                            expected: try cp.expectedTraffic(shape, backward: false), plan: plan, heads: (hq, hkv, d), dtype: dtype, check: check, sameHost: sameHost))
        }
        var last = forwardRuns
        if options.backward {
            let backwardRuns = try await MPIBackend.timed(comm, measure: measure, sameHost: sameHost) {
                try await cp.backward(q: qt, k: kt, v: vt, o: out.o, lse: out.lse, dO: dOt, into: grads, communicator: comm).path
            }
            var check: Double?
            if measure.check {
                let dq = try await gatherRows(comm, grads.dq, plan: plan, width: hq * d)
                let dk = try await gatherRows(comm, grads.dk, plan: plan, width: hkv * d)
                let dv = try await gatherRows(comm, grads.dv, plan: plan, width: hkv * d)
                if let g = single?.grads {
                    check = [relativeL2(dq, try g.dq.readFloats(), infinitiesMatch: true), relativeL2(dk, try g.dk.readFloats(), infinitiesMatch: true), relativeL2(dv, try g.dv.readFloats(), infinitiesMatch: true)].max()
                }
            }
            if let single, let timing = single.backward {
                rows.append(row(backwardRuns, name: "\(op).backward", device: deviceName, single: timing, flops: 2.5 * (try flops(plan, hq: hq, d: d)),
                                expected: try cp.expectedTraffic(shape, backward: true), plan: plan, heads: (hq, hkv, d), dtype: dtype, check: check, sameHost: sameHost))
            }
            last = backwardRuns
        }
        try await MPIBackend.report(comm, last: last, timeline: options.timeline, rows: rows, json: measure.json, log: log)
    }

    func row(_ m: MPIBackend.Measured, name: String, device: String, single: Timing, flops: Double, expected: ExpectedTraffic,
             plan: ShardPlan, heads: (q: Int, kv: Int, d: Int), dtype: DType, check: Double?, sameHost: Bool) -> ParallelRow {
        let n = m.median.count
        let config: [String: ConfigValue] = [
            "ranks": .int(n), "seq": .int(plan.lengths.max() ?? 0), "sequences": .int(plan.lengths.count),
            "heads": .int(heads.q), "kv_heads": .int(heads.kv), "dim": .int(heads.d), "dtype": .string(dtype.rawValue),
            "causal": .bool(options.causal), "sharding": .string(plan.sharding.rawValue), "scheme": .string("\(scheme)"),
            "backend": .string("mpi"), "transfer": .string("mpi, \(device)"), "same_host": .bool(sameHost)]
        return MPIBackend.row(m, op: name, device: device, config: config, single: single, flops: flops, check: check, bound: dtype == .f16 ? 2e-3 : 1e-5,
                              expected: expected)
    }

    /// The global [tokens, width] rows from every rank's shard (on every rank).
    func gatherRows(_ comm: MPICommunicator, _ tensor: Tensor, plan: ShardPlan, width: Int) async throws -> [Float] {
        let parts = try await comm.hostAllGather(try tensor.readFloats().withUnsafeBytes { Array($0) })
        return plan.unshard(parts.map(floats), width: width, fill: .nan)
    }

    func gatherColumns(_ comm: MPICommunicator, _ tensor: Tensor, plan: ShardPlan, heads: Int) async throws -> [Float] {
        let parts = try await comm.hostAllGather(try tensor.readFloats().withUnsafeBytes { Array($0) })
        return plan.unshardColumns(parts.map(floats), heads: heads, fill: .nan)
    }

    func floats(_ bytes: [UInt8]) -> [Float] {
        bytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    }

    func flops(_ plan: ShardPlan, hq: Int, d: Int) throws -> Double {
        let mask = try options.mask(lengths: plan.lengths)
        return 4 * plan.lengths.reduce(0.0) { $0 + Double($1) * Double($1) * mask.keptFraction(sq: $1, sk: $1) } * Double(hq) * Double(d)
    }
}
