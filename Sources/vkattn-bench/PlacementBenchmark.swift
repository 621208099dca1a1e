import ArgumentParser
import Foundation
import VkAttn
import VkAttnReference
import VkAttnParallel

/// The body of `placement`: the batch on one device (the reference and the measured
/// throughput), then the data-aware plan and the naive plan on N ranks in the same run, each
/// with its groups, predicted and measured per-rank time, imbalance, bytes and span.
struct PlacementBenchmark {
    let options: PlacementOptions
    let measure: MeasureOptions

    struct RankTensors: Sendable {
        let q: Tensor, k: Tensor, v: Tensor, dO: Tensor, out: AttentionOutput, grads: AttentionGradients
    }

    func run() throws {
        let log = BenchTeardown.log()
        let n = options.rankCount
        let group = try DeviceGroup(ranks: n, instance: Instance(log: log), route: options.path)
        BenchTeardown.watch(group.devices)
        let lengths = try options.batch()
        let hq = options.heads, hkv = options.kvHeads ?? hq, d = options.dim, dtype = options.dtype.dtype
        let attention = FlashAttention(mask: options.causal ? .causal : .none)
        let whole = try ShardPlan(lengths: lengths, ranks: 1, sharding: .contiguous)
        var rng = SeededRandom.fresh()
        let round: (Float) -> Float = dtype == .f16 ? { Float(Float16($0)) } : { $0 }
        let total = whole.totalTokens
        let data = ParallelAttentionBenchmark.Data(q: rng.floats(total * hq * d).map(round), k: rng.floats(total * hkv * d).map(round),
                                                   v: rng.floats(total * hkv * d).map(round), dO: rng.floats(total * hq * d).map(round))
        let deviceName = "\(group.devices[0].capabilities.name) x\(n) (\(group.placement.rawValue), \(group.route.rawValue))"
        note("placement: \(n) ranks, \(lengths.count) sequences, \(total) tokens, \(group.placement.rawValue), \(group.route.rawValue)")

        // The whole batch on rank 0's device: the reference, and the throughput the model uses.
        let single = try SingleDeviceAttention(group.devices[0], attention, plan: whole, q: data.q, k: data.k, v: data.v, dO: data.dO,
                                               heads: (hq, hkv, d), dtype: dtype, measure: measure, backward: options.backward)
        func model(backward: Bool, flops: Double) throws -> PlacementCostModel {
            try PlacementCostModel(headsQ: hq, headsKV: hkv, headDim: d, elementBytes: dtype.byteSize, causal: options.causal,
                                   backward: backward, flopsPerSecond: flops, intraNodeBandwidth: options.intraNodeGBps * 1e9,
                                   interNodeBandwidth: options.interNodeGBps * 1e9, ranksPerNode: options.ranksPerNode ?? n)
        }
        let probe = try model(backward: false, flops: 1)
        let forwardFlops = lengths.reduce(0.0) { $0 + probe.flops(pairs: probe.pairs(length: $1)) }
        let forwardModel = try model(backward: false, flops: forwardFlops / max(single.forward.medianMs * 1e-3, 1e-9))
        let backwardModel = try single.backward.map { try model(backward: true, flops: 2.5 * forwardFlops / max($0.medianMs * 1e-3, 1e-9)) }
        note(String(format: "model: %.3f GFLOP/s measured (one device, forward)%@, links %.1f GB/s in a node, %.1f GB/s between nodes, %d ranks per node",
                    forwardModel.flopsPerSecond / 1e9, backwardModel.map { String(format: ", %.3f GFLOP/s backward", $0.flopsPerSecond / 1e9) } ?? "",
                    options.intraNodeGBps, options.interNodeGBps, forwardModel.ranksPerNode))

        let placed = try PlacementPlan(lengths: lengths, ranks: n, model: backwardModel ?? forwardModel)
        let naive = try PlacementPlan.naive(lengths: lengths, ranks: n, model: forwardModel)
        let comms = try group.communicators()
        var rows: [ParallelRow] = []
        var lastRuns: [TimedRun] = []
        for (name, plan) in [("placed", placed), ("naive", naive)] {
            let op = PlacedAttention(plan: plan, attention: attention)
            try op.validate(ContextParallelShape(headsQ: hq, headsKV: hkv, headDim: d, dtype: dtype), ranks: n)
            let tensors = try makeTensors(plan, comms: comms, data: data, heads: (hq, hkv, d), dtype: dtype, attention: attention)
            let forwardRuns = try timedGroupRuns(group, measure: measure) {
                try await onEveryRank(comms) { comm in
                    let t = tensors[comm.rank]
                    return try await op.forward(q: t.q, k: t.k, v: t.v, into: t.out, communicator: comm).path
                }[0]
            }
            var check: Double?
            if measure.check {
                check = max(relativeL2(plan.unshard(try tensors.map { try $0.out.o.readFloats() }, width: hq * d, fill: .nan),
                                       try single.out.o.readFloats(), infinitiesMatch: true),
                            relativeL2(plan.unshardColumns(try tensors.map { try $0.out.lse.readFloats() }, heads: hq, fill: .nan),
                                       try single.out.lse.readFloats(), infinitiesMatch: true))
            }
            rows.append(try report("\(name).forward", plan.predicted(with: forwardModel), forwardRuns, single: single.forward,
                                   device: deviceName, group: group, flops: forwardFlops, dtype: dtype, check: check))
            lastRuns = name == "placed" ? forwardRuns.runs : lastRuns
            guard let backwardModel, let singleBackward = single.backward, let singleGrads = single.grads else { continue }
            let backwardRuns = try timedGroupRuns(group, measure: measure) {
                try await onEveryRank(comms) { comm in
                    let t = tensors[comm.rank]
                    return try await op.backward(q: t.q, k: t.k, v: t.v, o: t.out.o, lse: t.out.lse, dO: t.dO, into: t.grads,
                                                 communicator: comm).path
                }[0]
            }
            var gradCheck: Double?
            if measure.check {
                gradCheck = try [(tensors.map(\.grads.dq), singleGrads.dq, hq), (tensors.map(\.grads.dk), singleGrads.dk, hkv),
                                 (tensors.map(\.grads.dv), singleGrads.dv, hkv)].map { parts, want, heads in
                    relativeL2(plan.unshard(try parts.map { try $0.readFloats() }, width: heads * d, fill: .nan), try want.readFloats(),
                               infinitiesMatch: true)
                }.max()
            }
            rows.append(try report("\(name).backward", plan.predicted(with: backwardModel), backwardRuns, single: singleBackward,
                                   device: deviceName, group: group, flops: 2.5 * forwardFlops, dtype: dtype, check: gradCheck))
            lastRuns = name == "placed" ? backwardRuns.runs : lastRuns
        }
        try writeGroupTimeline(options.timeline, group, lastRuns)
        try reportParallel(rows, json: measure.json, log: log)
    }

    func makeTensors(_ plan: PlacementPlan, comms: [LocalCommunicator], data: ParallelAttentionBenchmark.Data,
                     heads: (q: Int, kv: Int, d: Int), dtype: DType, attention: FlashAttention) throws -> [RankTensors] {
        let (hq, hkv, d) = heads
        let oType = attention.outputDType ?? dtype
        return try comms.map { comm in
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
    }

    /// Prints one plan's pass (groups; per rank predicted and measured busy time and bytes;
    /// imbalances; median span) and returns its JSON row.
    func report(_ name: String, _ plan: PlacementPlan, _ measured: (runs: [TimedRun], path: String), single: Timing, device: String,
                group: DeviceGroup, flops: Double, dtype: DType, check: Double?) throws -> ParallelRow {
        let timing = Timing(samplesMs: measured.runs.map(\.spanMs))
        let median = measured.runs.sorted { $0.spanMs < $1.spanMs }[measured.runs.count / 2]
        let overlap = OverlapReport(median.intervals)
        let busy = (0..<plan.ranks).map { r in (overlap.ranks.first { $0.rank == r }?.computeNs ?? 0) / 1e6 }
        let bytes = (0..<plan.ranks).map { median.traffic.indices.contains($0) ? median.traffic[$0].bytesSent : 0 }
        func imbalance(_ x: [Double]) -> Double {
            let mean = x.reduce(0, +) / Double(max(1, x.count))
            return mean > 0 ? (x.max() ?? 0) / mean : 1
        }
        let measuredImbalance = imbalance(busy)
        if !measure.json {
            print("\(name): \(measured.path)")
            print(renderTable(header: ["rank", "tokens", "predicted ms", "busy ms", "bytes sent", "predicted bytes"],
                              rows: (0..<plan.ranks).map { r in
                                  [String(r), String(plan.tokens(rank: r)), fixed(plan.predictedTime(rank: r) * 1e3, 2), fixed(busy[r], 2),
                                   String(bytes[r]), fixed(plan.predictedBytes(rank: r), 0)]
                              }))
            print("  \(name): predicted imbalance \(fixed(plan.predictedImbalance, 3)), measured imbalance \(fixed(measuredImbalance, 3)), "
                  + "predicted span \(fixed(plan.predictedMakespan * 1e3, 2)) ms, median span \(fixed(timing.medianMs, 2)) ms"
                  + (check.map { ", check \($0 <= checkBound(dtype) ? "pass" : "fail") (max rel error \(String(format: "%.1e", $0)))" } ?? ""))
        }
        let config: [String: ConfigValue] = [
            "ranks": .int(plan.ranks), "sequences": .int(plan.lengths.count), "tokens": .int(plan.totalTokens),
            "heads": .int(options.heads), "kv_heads": .int(options.kvHeads ?? options.heads), "dim": .int(options.dim),
            "dtype": .string(dtype.rawValue), "causal": .bool(options.causal), "groups": .int(plan.groups.count),
            "predicted_imbalance": .double(plan.predictedImbalance), "measured_imbalance": .double(measuredImbalance),
            "predicted_ms": .double(plan.predictedMakespan * 1e3), "busy_ms": .string(busy.map { fixed($0, 3) }.joined(separator: ",")),
            "predicted_rank_ms": .string((0..<plan.ranks).map { fixed(plan.predictedTime(rank: $0) * 1e3, 3) }.joined(separator: ",")),
            "bytes_sent": .string(bytes.map(String.init).joined(separator: ",")),
            "ranks_per_node": .int(plan.model.ranksPerNode), "intra_node_gbps": .double(options.intraNodeGBps),
            "inter_node_gbps": .double(options.interNodeGBps), "model_gflops": .double(plan.model.flopsPerSecond / 1e9),
            "placement": .string(group.placement.rawValue), "transfer": .string(group.route.rawValue)]
        let predictedBytes = (0..<plan.ranks).map { plan.predictedBytes(rank: $0) }.max() ?? 0
        let steps = max(1, (plan.groups.map(\.ranks.count).max() ?? 1) - 1)
        return .measured(op: "placement.\(name)", device: device, config: config, path: measured.path, timing: timing, flops: flops,
                         check: check, bound: checkBound(dtype), ranks: plan.ranks, single: single, overlapEfficiency: overlap.efficiency,
                         copyNs: overlap.copyNs, exposedNs: overlap.exposedNs, overlapRanks: overlap.ranks.count,
                         bytesPerRank: bytes.max() ?? 0,
                         expected: ExpectedTraffic(bytes: predictedBytes, steps: steps,
                                                   formula: "placement: per group of g ranks over T tokens, the ring's (g-1) K/V blocks 2 (T/g) Hkv D b (backward: + g fp32 dK/dV blocks); local groups send nothing"))
    }
}
