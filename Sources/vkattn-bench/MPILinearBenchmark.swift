import VkAttnParallel
import ArgumentParser
import Foundation
import VkAttn
import VkAttnReference
import VkAttnMPI

/// `lasp|lasp2|zeco --backend mpi`: the numbers of the in-process run (span, overlap, bytes
/// one rank sends against the papers' formulas, --check), each process measuring its rank on
/// `MPICommunicator` and rank 0 assembling them; rank 0 also times the single-device run.
/// LASP and ZeCO pass states point to point (one per hop); LASP-2's all-scan is MPI_Iexscan,
/// to which each rank hands its one (decay, state) value.
struct MPILinearBenchmark {
    let options: LinearParallelOptions
    let measure: MeasureOptions
    let scheme: ContextParallelScheme
    let op: String

    func run() throws {
        try MPIBackend.run(path: options.path) { comm, log in try await self.body(comm, log: log) }
    }

    func body(_ comm: MPICommunicator, log: ValidationLog) async throws {
        let n = comm.size, r = comm.rank, root = r == 0
        try MPIBackend.checkRanks(options.ranks, comm)
        let (b, l, h, dk, dv) = (options.batch, options.seq, options.heads, options.dk, options.dv)
        guard l >= n else { throw OptionError("--seq \(l) is below the \(n) processes: every rank needs a token") }
        let gla = GatedLinearAttention(gating: options.gating, chunkLength: options.chunkLength)
        let lengths = ContextParallelLinearAttention.evenLengths(total: l, ranks: n)
        let cp = ContextParallelLinearAttention(lengths: lengths, scheme: scheme, attention: gla)
        let shape = ContextParallelLinearAttention.Shape(batch: b, heads: h, dk: dk, dv: dv)
        try cp.validate(shape, ranks: n)
        let expected = MPICommunicator.expectedTraffic(of: cp, shape: shape)
        let gateTail = gla.gating == .perKey ? [h, dk] : [h], gateWidth = gateTail.reduce(1, *)
        var rng = try await MPIBackend.sharedRandom(comm)
        let qv = rng.floats(b * l * h * dk), kv = rng.floats(b * l * h * dk), vv = rng.floats(b * l * h * dv)
        let gv: [Float]? = gla.gating == .none ? nil : rng.floats(b * l * gateWidth, in: -0.5...0)
        let dOv = rng.floats(b * l * h * dv)
        let device = comm.device
        let sameHost = comm.engine.localSize == n
        let deviceName = "\(device.capabilities.name) x\(n) (mpi, \(comm.route.rawValue))"
        if root {
            note("\(op) --backend mpi: \(n) processes, lengths \(lengths), rank 0 on \(comm.deviceChoice), \(comm.route.rawValue), clock \(comm.clock.method.rawValue) (+-\(Int(comm.clock.uncertaintyNanoseconds)) ns)\(sameHost ? "" : "; ranks on several hosts: spans are per rank")")
        }

        // The single-device run on rank 0 (the others wait in the barrier below).
        var single: (forward: Timing, o: [Float], backward: Timing?, grads: [[Float]])?
        if root {
            let s = try SingleDeviceLinear(device, gla, options: options, q: qv, k: kv, v: vv, logGates: gv, dO: dOv, measure: measure)
            let grads = try s.grads.map { g in
                try [g.dq.readFloats(), g.dk.readFloats(), g.dv.readFloats()] + (g.dg.map { [try $0.readFloats()] } ?? [])
            } ?? []
            single = (s.forward, try s.output.readFloats(), s.backward, grads)
        }
        try await comm.barrier()

        // This rank's shard: tokens [start, start + lengths[r]) of every batch entry.
        let split = try ContiguousSplit(lengths: lengths), lr = lengths[r]
        func shard(_ x: [Float], width: Int) throws -> [Float] { try split.shard(x, outer: b, inner: width, rank: r) }
        let q = try device.makeTensor(try shard(qv, width: h * dk), shape: [b, lr, h, dk])
        let k = try device.makeTensor(try shard(kv, width: h * dk), shape: [b, lr, h, dk])
        let v = try device.makeTensor(try shard(vv, width: h * dv), shape: [b, lr, h, dv])
        let g = try gv.map { try device.makeTensor(try shard($0, width: gateWidth), shape: [b, lr] + gateTail) }
        let dO = try device.makeTensor(try shard(dOv, width: h * dv), shape: [b, lr, h, dv])

        var forwardOut: ContextParallelOutput?
        let forwardRuns = try await MPIBackend.timed(comm, measure: measure, sameHost: sameHost) {
            let out = try await cp.forward(q: q, k: k, v: v, logGates: g, communicator: comm)
            forwardOut = out
            return out.path
        }
        guard let forwardOut else { throw OptionError("the forward produced nothing") }
        var check: Double?
        if measure.check {
            let o = try await gather(comm, forwardOut.output, lengths: lengths, width: h * dv)
            if let single { check = relativeL2(o, single.o, infinitiesMatch: false) }
        }
        let chunk = gla.chunkLength(on: device)
        let flops = Double(b * l * h) * Double(4 * dk * dv + 2 * chunk * (dk + dv))
        var rows: [ParallelRow] = []
        if let single {
            rows.append(row(forwardRuns, name: "\(op).forward", device: deviceName, single: single.forward, flops: flops, check: check,
                            sameHost: sameHost, expected: expected))
        }
        var last = forwardRuns
        if options.backward {
            var gradients: ContextParallelGradients?
            let backwardRuns = try await MPIBackend.timed(comm, measure: measure, sameHost: sameHost) {
                let grads = try await cp.backward(q: q, k: k, v: v, logGates: g, incomingState: forwardOut.incomingState, dOutput: dO,
                                                  communicator: comm)
                gradients = grads
                return grads.path
            }
            var check: Double?
            if measure.check, let got = gradients {
                var parts = [try await gather(comm, got.dq, lengths: lengths, width: h * dk),
                             try await gather(comm, got.dk, lengths: lengths, width: h * dk),
                             try await gather(comm, got.dv, lengths: lengths, width: h * dv)]
                if let dg = got.dLogGates { parts.append(try await gather(comm, dg, lengths: lengths, width: gateWidth)) }
                if let single { check = zip(parts, single.grads).map { relativeL2($0, $1, infinitiesMatch: false) }.max() }
            }
            if let single, let timing = single.backward {
                rows.append(row(backwardRuns, name: "\(op).backward", device: deviceName, single: timing, flops: 2 * flops, check: check,
                                sameHost: sameHost, expected: expected))
            }
            last = backwardRuns
        }
        try await MPIBackend.report(comm, last: last, timeline: options.timeline, rows: rows, json: measure.json, log: log)
    }

    func row(_ m: MPIBackend.Measured, name: String, device: String, single: Timing, flops: Double, check: Double?,
             sameHost: Bool, expected: ExpectedTraffic) -> ParallelRow {
        let n = m.median.count
        let config: [String: ConfigValue] = [
            "ranks": .int(n), "seq": .int(options.seq), "batch": .int(options.batch), "heads": .int(options.heads),
            "dk": .int(options.dk), "dv": .int(options.dv), "gating": .string(options.gating.rawValue), "scheme": .string("\(scheme)"),
            "backend": .string("mpi"), "transfer": .string("mpi, \(device)"), "same_host": .bool(sameHost)]
        return MPIBackend.row(m, op: name, device: device, config: config, single: single, flops: flops, check: check, bound: 1e-5,
                              expected: expected)
    }

    /// The global [B, L, width] rows from every rank's [B, L_r, width] shard (on every rank).
    func gather(_ comm: MPICommunicator, _ tensor: Tensor, lengths: [Int], width: Int) async throws -> [Float] {
        let parts = try await comm.hostAllGather(try tensor.readFloats().withUnsafeBytes { Array($0) })
            .map { bytes in bytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) } }
        return try ContiguousSplit(lengths: lengths).unshard(parts, outer: options.batch, inner: width)
    }
}
