import ArgumentParser
import Foundation
import VkAttn
import VkAttnReference
import VkAttnParallel

/// The body of `ring`, `ulysses` and `hybrid`: the problem on one device (Timing.measure),
/// then on N ranks (spans of the GPU intervals mapped to one host clock), overlap, bytes
/// moved per rank against the paper's formula, --check against the one-device result,
/// --timeline.
struct ParallelAttentionBenchmark {
    let options: ParallelOptions
    let measure: MeasureOptions
    let scheme: ContextParallelScheme
    let op: String

    struct Data: Sendable {
        let q: [Float], k: [Float], v: [Float], dO: [Float]
    }

    func run() throws {
        if options.backend == .mpi {
            return try MPIAttentionBenchmark(options: options, measure: measure, scheme: scheme, op: op).run()
        }
        let log = BenchTeardown.log()
        let n = options.rankCount
        let group = try DeviceGroup(ranks: n, instance: Instance(log: log), route: options.path)
        BenchTeardown.watch(group.devices)
        let lengths = try options.lengths()
        let hq = options.heads, hkv = options.kvHeads ?? hq, d = options.dim, dtype = options.storage
        let plan = try ShardPlan(lengths: lengths, ranks: n, sharding: options.sharding)
        let mask = try options.mask(lengths: lengths)
        let attention = FlashAttention(mask: mask)
        let cp = ContextParallelAttention(plan: plan, scheme: scheme, attention: attention)
        let shape = ContextParallelAttention.Shape(headsQ: hq, headsKV: hkv, headDim: d, dtype: dtype)
        try cp.validate(shape, ranks: n)
        let total = plan.totalTokens
        var rng = SeededRandom.fresh()
        let round: (Float) -> Float = dtype == .f16 ? { Float(Float16($0)) } : { $0 }
        let data = Data(q: rng.floats(total * hq * d).map(round), k: rng.floats(total * hkv * d).map(round),
                        v: rng.floats(total * hkv * d).map(round), dO: rng.floats(total * hq * d).map(round))
        let deviceName = "\(group.devices[0].capabilities.name) x\(n) (\(group.placement.rawValue), \(group.route.rawValue))"
        note("\(op): \(n) ranks, \(group.placement.rawValue), \(group.route.rawValue), clock \(group.clocks[0].method.rawValue) (+-\(Int(group.clocks[0].uncertaintyNanoseconds)) ns)")

        // The same problem on one device (rank 0's device), timed with GPU timestamps.
        let s = try SingleDeviceAttention(group.devices[0], attention, plan: plan, q: data.q, k: data.k, v: data.v, dO: data.dO,
                                          heads: (hq, hkv, d), dtype: dtype, measure: measure, backward: options.backward)
        let single = s.out, singleForward = s.forward, singleBackward = s.backward, singleGrads = s.grads

        // Every rank's tensors.
        let comms = try group.communicators()
        struct RankTensors: Sendable {
            let q: Tensor, k: Tensor, v: Tensor, dO: Tensor, out: AttentionOutput, grads: AttentionGradients
        }
        let oType = attention.outputDType ?? dtype
        let tensors: [RankTensors] = try comms.map { comm in
            let r = comm.rank, t = plan.tokens(rank: r), device = comm.device
            func make(_ x: [Float], _ heads: Int, _ type: DType) throws -> Tensor {
                try device.makeTensor(plan.shard(x, width: heads * d, rank: r), shape: [t, heads, d], dtype: type)
            }
            return RankTensors(q: try make(data.q, hq, dtype), k: try make(data.k, hkv, dtype), v: try make(data.v, hkv, dtype),
                               dO: try make(data.dO, hq, dtype),
                               out: AttentionOutput(o: try device.makeTensor(shape: [t, hq, d], dtype: oType),
                                                    lse: try device.makeTensor(shape: [hq, t], dtype: .f32)),
                               grads: AttentionGradients(dq: try device.makeTensor(shape: [t, hq, d], dtype: dtype),
                                                         dk: try device.makeTensor(shape: [t, hkv, d], dtype: dtype),
                                                         dv: try device.makeTensor(shape: [t, hkv, d], dtype: dtype)))
        }

        let forwardRuns = try timedGroupRuns(group, measure: measure) {
            try await onEveryRank(comms) { comm in
                let t = tensors[comm.rank]
                return try await cp.forward(q: t.q, k: t.k, v: t.v, into: t.out, communicator: comm).path
            }[0]
        }
        var rows = [try row(forwardRuns, group: group, name: "\(op).forward", device: deviceName, single: singleForward,
                            flops: flops(plan, mask: mask, hq: hq, d: d), expected: try cp.expectedTraffic(shape, backward: false), plan: plan,
                            heads: (hq, hkv, d), dtype: dtype,
                            check: measure.check ? try compare(plan, tensors.map { $0.out.o }, single.o, width: hq * d, dtype: dtype) : nil)]
        if let lse = measure.check ? try compareColumns(plan, tensors.map { $0.out.lse }, single.lse, heads: hq) : nil,
           let current = rows[0].base.maxRelError {
            rows[0].base.maxRelError = max(current, lse)
            rows[0].base.check = rows[0].base.maxRelError ?? 1 <= bound(dtype) ? .pass : .fail
        }
        var lastRuns = forwardRuns
        if options.backward, let singleBackward, let singleGrads {
            let backwardRuns = try timedGroupRuns(group, measure: measure) {
                try await onEveryRank(comms) { comm in
                    let t = tensors[comm.rank]
                    return try await cp.backward(q: t.q, k: t.k, v: t.v, o: t.out.o, lse: t.out.lse, dO: t.dO, into: t.grads,
                                                 communicator: comm).path
                }[0]
            }
            var check: Double?
            if measure.check {
                check = try [compare(plan, tensors.map { $0.grads.dq }, singleGrads.dq, width: hq * d, dtype: dtype),
                             compare(plan, tensors.map { $0.grads.dk }, singleGrads.dk, width: hkv * d, dtype: dtype),
                             compare(plan, tensors.map { $0.grads.dv }, singleGrads.dv, width: hkv * d, dtype: dtype)].max()
            }
            rows.append(try row(backwardRuns, group: group, name: "\(op).backward", device: deviceName, single: singleBackward,
                                flops: 2.5 * flops(plan, mask: mask, hq: hq, d: d), expected: try cp.expectedTraffic(shape, backward: true), plan: plan,
                                heads: (hq, hkv, d), dtype: dtype,
                                check: check))
            lastRuns = backwardRuns
        }
        try writeGroupTimeline(options.timeline, group, lastRuns.runs)
        if mask != .none && mask != .causal && !measure.json {
            try printMaskedTraffic(cp, shape: shape, rows: rows, mask: mask)
        }
        try reportParallel(rows, json: measure.json, log: log)
    }

    /// The masked schedule's bytes beside the unmasked schedule's for the same shape (both
    /// from `expectedTraffic`, which ParallelMaskTests holds equal to the measured bytes), the
    /// bytes saved, and the (rank, step) pairs the mask skips.
    func printMaskedTraffic(_ cp: ContextParallelAttention, shape: ContextParallelAttention.Shape, rows: [ParallelRow],
                            mask: AttentionMask) throws {
        let skipped = try cp.skippedSteps()
        print("mask \(options.maskLabel(mask)): \(skipped.skipped) of \(skipped.steps) (rank, step) pairs skipped")
        for (pass, row) in zip(["forward", "backward"], rows) {
            let backward = pass == "backward"
            let masked = try cp.expectedBytesPerRank(shape, backward: backward)
            let plain = try cp.unmaskedTraffic(shape, backward: backward)
            var unmasked = cp
            unmasked.attention = FlashAttention()
            let plainTotal = try unmasked.expectedBytesPerRank(shape, backward: backward).reduce(0, +)
            let busiest = masked.max() ?? 0, total = masked.reduce(0, +)
            print("  \(pass) bytes/rank (busiest) \(Int(busiest)) measured \(row.bytesPerRank), unmasked \(Int(plain.bytes)), saved \(Int(plain.bytes - busiest)); "
                  + "all ranks \(Int(total)), unmasked \(Int(plainTotal)), saved \(Int(plainTotal - total)) (\(String(format: "%.1f", 100 * (plainTotal - total) / max(plainTotal, 1)))%)")
        }
    }

    func row(_ measured: (runs: [TimedRun], path: String), group: DeviceGroup, name: String, device: String, single: Timing, flops: Double,
             expected: ExpectedTraffic, plan: ShardPlan, heads: (q: Int, kv: Int, d: Int), dtype: DType, check: Double?) throws -> ParallelRow {
        let timing = Timing(samplesMs: measured.runs.map(\.spanMs))
        let median = measured.runs.sorted { $0.spanMs < $1.spanMs }[measured.runs.count / 2]
        let report = OverlapReport(median.intervals)
        let bytes = median.traffic.map(\.bytesSent).max() ?? 0
        let config: [String: ConfigValue] = [
            "ranks": .int(group.ranks), "seq": .int(plan.lengths.max() ?? 0), "sequences": .int(plan.lengths.count),
            "heads": .int(heads.q), "kv_heads": .int(heads.kv), "dim": .int(heads.d), "dtype": .string(dtype.rawValue),
            "causal": .bool(options.causal), "mask": .string(options.maskLabel(try options.mask(lengths: plan.lengths))), "sharding": .string(plan.sharding.rawValue), "scheme": .string("\(scheme)"),
            "placement": .string(group.placement.rawValue), "transfer": .string(group.route.rawValue),
            "clock": .string(group.clocks[0].method.rawValue)]
        return .measured(op: name, device: device, config: config, path: measured.path, timing: timing, flops: flops, check: check,
                         bound: bound(dtype), ranks: group.ranks, single: single, overlapEfficiency: report.efficiency,
                         copyNs: report.copyNs, exposedNs: report.exposedNs, overlapRanks: report.ranks.count, bytesPerRank: bytes,
                         expected: expected)
    }

    func flops(_ plan: ShardPlan, mask: AttentionMask, hq: Int, d: Int) -> Double {
        4 * plan.lengths.reduce(0.0) { $0 + Double($1) * Double($1) * mask.keptFraction(sq: $1, sk: $1) } * Double(hq) * Double(d)
    }

    func bound(_ dtype: DType) -> Double { dtype == .f16 ? 2e-3 : 1e-5 }

    /// ||parallel - single|| / ||single|| over the whole output (unsharded).
    func compare(_ plan: ShardPlan, _ parts: [Tensor], _ single: Tensor, width: Int, dtype: DType) throws -> Double {
        let got = plan.unshard(try parts.map { try $0.readFloats() }, width: width, fill: .nan)
        return relativeL2(got, try single.readFloats(), infinitiesMatch: true)
    }

    func compareColumns(_ plan: ShardPlan, _ parts: [Tensor], _ single: Tensor, heads: Int) throws -> Double {
        let got = plan.unshardColumns(try parts.map { try $0.readFloats() }, heads: heads, fill: .nan)
        return relativeL2(got, try single.readFloats(), infinitiesMatch: true)
    }
}

/// The single-device run a parallel one is compared with: the whole packed problem on
/// `device`, timed with GPU timestamps (the backward too when `backward`).
struct SingleDeviceAttention {
    var forward: Timing
    var out: AttentionOutput
    var backward: Timing?
    var grads: AttentionGradients?

    init(_ device: Device, _ attention: FlashAttention, plan: ShardPlan, q: [Float], k: [Float], v: [Float], dO: [Float],
         heads: (q: Int, kv: Int, d: Int), dtype: DType, measure: MeasureOptions, backward: Bool) throws {
        let (total, hq, hkv, d) = (plan.totalTokens, heads.q, heads.kv, heads.d)
        let layout = AttentionLayout.packed(cuSeqlensQ: plan.cuSeqlens, cuSeqlensK: plan.cuSeqlens)
        let q1 = try device.makeTensor(q, shape: [total, hq, d], dtype: dtype)
        let k1 = try device.makeTensor(k, shape: [total, hkv, d], dtype: dtype)
        let v1 = try device.makeTensor(v, shape: [total, hkv, d], dtype: dtype)
        var out: AttentionOutput?
        forward = try Timing.measure(device, warmup: measure.warmup, iterations: measure.iterations) { stream in
            out = try attention.forward(q: q1, k: k1, v: v1, layout: layout, into: out, on: stream)
        }
        guard let out else { throw OptionError("forward produced nothing") }
        self.out = out
        guard backward else { return }
        let dO1 = try device.makeTensor(dO, shape: [total, hq, d], dtype: dtype)
        var grads: AttentionGradients?
        self.backward = try Timing.measure(device, warmup: measure.warmup, iterations: measure.iterations) { stream in
            grads = try attention.backward(q: q1, k: k1, v: v1, o: out.o, lse: out.lse, dO: dO1, layout: layout, into: grads, on: stream)
        }
        self.grads = grads
    }
}
