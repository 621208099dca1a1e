import VkAttn
import VkAttnReference
import VkAttnParallel
import VkAttnMPI

/// Every context-parallel scheduler across the processes against the single-device kernel:
/// each rank computes the whole problem on its own device and compares its shard (relative
/// L2 errors, the bounds of the in-process tests: 1e-5 for f32 outputs, gradients with a
/// 1e-2 floor).
struct SchedulerCase {
    let seed: UInt64
    let lengths: [Int]
    let headsQ: Int
    let headsKV: Int
    let headDim: Int
    let causal: Bool
    let q: [Float], k: [Float], v: [Float], dO: [Float]

    init(seed: UInt64, lengths: [Int], headsQ: Int, headsKV: Int, headDim: Int = 32, causal: Bool) {
        self.seed = seed
        self.lengths = lengths
        self.headsQ = headsQ
        self.headsKV = headsKV
        self.headDim = headDim
        self.causal = causal
        var rng = SeededRandom(seed: seed)
        let total = lengths.reduce(0, +)
        q = rng.floats(total * headsQ * headDim)
        k = rng.floats(total * headsKV * headDim)
        v = rng.floats(total * headsKV * headDim)
        dO = rng.floats(total * headsQ * headDim)
    }

    var total: Int { lengths.reduce(0, +) }
    var cu: [Int32] { lengths.reduce(into: [Int32(0)]) { $0.append($0[$0.count - 1] + Int32($1)) } }
    var attention: FlashAttention { FlashAttention(mask: causal ? .causal : .none) }
    var label: String { "lengths \(lengths) Hq \(headsQ) Hkv \(headsKV) D \(headDim) \(causal ? "causal" : "full") seed \(seed)" }

    /// O, LSE, dQ, dK, dV of the single-device kernel (packed layout over the whole problem).
    func single(_ device: Device) throws -> [[Float]] {
        let layout = AttentionLayout.packed(cuSeqlensQ: cu, cuSeqlensK: cu)
        let qt = try device.makeTensor(q, shape: [total, headsQ, headDim])
        let kt = try device.makeTensor(k, shape: [total, headsKV, headDim])
        let vt = try device.makeTensor(v, shape: [total, headsKV, headDim])
        let stream = try device.makeStream()
        let out = try attention.forward(q: qt, k: kt, v: vt, layout: layout, on: stream)
        try stream.barrier()
        let grads = try attention.backward(q: qt, k: kt, v: vt, o: out.o, lse: out.lse,
                                           dO: try device.makeTensor(dO, shape: [total, headsQ, headDim]), layout: layout, on: stream)
        try stream.synchronize()
        return [try out.o.readFloats(), try out.lse.readFloats(), try grads.dq.readFloats(), try grads.dk.readFloats(), try grads.dv.readFloats()]
    }

    /// This rank's forward and backward with `scheme`; returns its O, LSE, dQ, dK, dV and the path.
    func parallel<C: Communicator>(_ comm: C, sharding: SequenceSharding, scheme: ContextParallelScheme) async throws -> ([[Float]], String, Bool) {
        let plan = try ShardPlan(lengths: lengths, ranks: comm.size, sharding: sharding)
        let cp = ContextParallelAttention(plan: plan, scheme: scheme, attention: attention)
        let r = comm.rank, device = comm.device, t = plan.tokens(rank: r)
        let hq = headsQ * headDim, hkv = headsKV * headDim
        let qt = try device.makeTensor(plan.shard(q, width: hq, rank: r), shape: [t, headsQ, headDim])
        let kt = try device.makeTensor(plan.shard(k, width: hkv, rank: r), shape: [t, headsKV, headDim])
        let vt = try device.makeTensor(plan.shard(v, width: hkv, rank: r), shape: [t, headsKV, headDim])
        let o = try Guarded(device, shape: [t, headsQ, headDim]), lse = try Guarded(device, shape: [headsQ, t])
        let forward = try await cp.forward(q: qt, k: kt, v: vt, into: AttentionOutput(o: o.tensor, lse: lse.tensor), communicator: comm)
        let dOt = try device.makeTensor(plan.shard(dO, width: hq, rank: r), shape: [t, headsQ, headDim])
        let dq = try Guarded(device, shape: [t, headsQ, headDim])
        let dk = try Guarded(device, shape: [t, headsKV, headDim]), dv = try Guarded(device, shape: [t, headsKV, headDim])
        _ = try await cp.backward(q: qt, k: kt, v: vt, o: o.tensor, lse: lse.tensor, dO: dOt,
                                  into: AttentionGradients(dq: dq.tensor, dk: dk.tensor, dv: dv.tensor), communicator: comm)
        let guards = [o, lse, dq, dk, dv].allSatisfy(\.intact)
        return ([try o.tensor.readFloats(), try lse.tensor.readFloats(), try dq.tensor.readFloats(),
                 try dk.tensor.readFloats(), try dv.tensor.readFloats()], forward.path, guards)
    }

    /// Runs one scheme and records each output's error against this rank's shard of `want`.
    func check<C: Communicator>(_ comm: C, _ report: Report, want: [[Float]], sharding: SequenceSharding,
                                scheme: ContextParallelScheme) async throws {
        let plan = try ShardPlan(lengths: lengths, ranks: comm.size, sharding: sharding)
        let (got, path, guards) = try await parallel(comm, sharding: sharding, scheme: scheme)
        let r = comm.rank, hq = headsQ * headDim, hkv = headsKV * headDim
        let mine = [plan.shard(want[0], width: hq, rank: r), plan.shardColumns(want[1], heads: headsQ, rank: r),
                    plan.shard(want[2], width: hq, rank: r), plan.shard(want[3], width: hkv, rank: r), plan.shard(want[4], width: hkv, rank: r)]
        let what = "\(scheme) \(sharding) x\(comm.size) [\(path)] \(label)"
        for (i, name) in ["O", "LSE", "dQ", "dK", "dV"].enumerated() {
            // A rank without tokens has nothing to compare.
            guard !mine[i].isEmpty else { continue }
            report.expect("\(what) \(name)", error: relativeError(got[i], mine[i].map(Double.init), floor: i < 2 ? 1e-3 : 1e-2), bound: 1e-5)
        }
        report.expect("\(what) guard words intact", guards)
    }
}

enum SchedulerChecks {
    static func run(_ comm: MPICommunicator, _ report: Report) async throws {
        let n = comm.size
        // Heads that every scheme can shard at this rank count (Ulysses: Hq % N == 0 and Hkv
        // dividing or divisible by N; 4 ranks replicate 2 KV heads, GQA).
        let (hq, hkv) = n == 3 ? (6, 3) : (4, 2)
        for causal in [true, false] {
            let c = SchedulerCase(seed: report.seed &+ (causal ? 1 : 2), lengths: [67, 0, 41], headsQ: hq, headsKV: hkv, causal: causal)
            let want = try c.single(comm.device)
            let shardings: [SequenceSharding] = causal ? [.zigzag, .striped, .contiguous] : [.contiguous]
            for sharding in shardings {
                try await c.check(comm, report, want: want, sharding: sharding, scheme: .ring)
            }
            // TokenRing, and the double ring (2 x 2 on 4 ranks, else a ring of one-rank nodes).
            try await c.check(comm, report, want: want, sharding: causal ? .zigzag : .contiguous, scheme: .tokenRing)
            let perNode = n % 2 == 0 && n > 2 ? 2 : 1
            try await c.check(comm, report, want: want, sharding: causal ? .striped : .contiguous, scheme: .doubleRing(ranksPerNode: perNode))
            guard causal else { continue }
            try await c.check(comm, report, want: want, sharding: .zigzag, scheme: .allGather(headSlices: hkv == 2 ? 2 : 1))
            try await c.check(comm, report, want: want, sharding: .striped, scheme: .allGather(headSlices: 1))
            try await c.check(comm, report, want: want, sharding: .zigzag, scheme: .allToAll)
            if n % 2 == 0 && n > 2 {
                try await c.check(comm, report, want: want, sharding: .zigzag, scheme: .hierarchical(ulysses: 2))
            }
            // The same scheduler on the point-to-point defaults of every collective.
            try await c.check(PointToPoint(comm), report, want: want, sharding: .zigzag, scheme: .allToAll)
        }
        try await treeDecode(comm, report)
    }

    /// Tree decode: the KV cache split over the ranks; every rank ends with the whole result.
    static func treeDecode(_ comm: MPICommunicator, _ report: Report) async throws {
        var rng = SeededRandom(seed: report.seed &+ 3)
        let hq = 4, hkv = 2, d = 32
        let cacheLengths = [101, 7, 40]
        let cuQ: [Int32] = [0, 3, 4, 6]
        let totalQ = Int(cuQ.last ?? 0), totalK = cacheLengths.reduce(0, +)
        let q = rng.floats(totalQ * hq * d), k = rng.floats(totalK * hkv * d), v = rng.floats(totalK * hkv * d)
        let cuK = cacheLengths.reduce(into: [Int32(0)]) { $0.append($0[$0.count - 1] + Int32($1)) }
        let device = comm.device
        let stream = try device.makeStream()
        let want = try FlashAttention().decode(q: try device.makeTensor(q, shape: [totalQ, hq, d]),
                                               kCache: try device.makeTensor(k, shape: [totalK, hkv, d]),
                                               vCache: try device.makeTensor(v, shape: [totalK, hkv, d]),
                                               layout: .packed(cuSeqlensQ: cuQ, cuSeqlensK: cuK), on: stream)
        try stream.synchronize()
        let plan = try ShardPlan(lengths: cacheLengths, ranks: comm.size, sharding: .contiguous)
        let r = comm.rank
        let piece = plan.pieces(rank: r)[0]
        let rows = plan.tokens(rank: r)
        let shardK = plan.shard(k, width: hkv * d, rank: r), shardV = plan.shard(v, width: hkv * d, rank: r)
        // Flat, then two-level (2 x 2 on 4 ranks, else one node of every rank).
        for ranksPerNode in [nil, comm.size % 2 == 0 && comm.size > 2 ? 2 : comm.size] {
            let o = try Guarded(device, shape: [totalQ, hq, d]), lse = try Guarded(device, shape: [hq, totalQ])
            let out = try await TreeDecode(ranksPerNode: ranksPerNode).decode(
                q: try device.makeTensor(q, shape: [totalQ, hq, d]), kCache: try device.makeTensor(shardK, shape: [rows, hkv, d]),
                vCache: try device.makeTensor(shardV, shape: [rows, hkv, d]), layout: .packed(cuSeqlensQ: cuQ, cuSeqlensK: piece.cuSeqlens),
                into: AttentionOutput(o: o.tensor, lse: lse.tensor), communicator: comm)
            let gotO = try o.tensor.readFloats(), gotL = try lse.tensor.readFloats()
            let what = "tree decode x\(comm.size) [\(out.path)]"
            report.expect("\(what) O", error: relativeError(gotO, try want.o.readFloats().map(Double.init)), bound: 1e-5)
            report.expect("\(what) LSE", error: relativeError(gotL, try want.lse.readFloats().map(Double.init)), bound: 1e-5)
            report.expect("\(what) guard words intact", o.intact && lse.intact)
            let all = try await comm.hostAllGather((gotO + gotL).withUnsafeBytes { Array($0) })
            report.expect("\(what) identical on every rank", all.allSatisfy { $0 == all[0] })
        }
    }
}
