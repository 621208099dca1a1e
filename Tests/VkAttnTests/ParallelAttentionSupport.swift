import Testing
import VkAttn
import VkAttnParallel
import TestSupport

/// One context-parallel problem: global host data, the single-device results (the kernel
/// the schedulers must reproduce), and a runner that shards, runs every rank and unshards.
struct ParallelCase: CustomStringConvertible, Sendable {
    var seed: UInt64
    var lengths: [Int]
    var headsQ: Int
    var headsKV: Int
    var headDim: Int
    var causal: Bool
    var dtype: DType = .f32
    /// A mask other than none/causal (windows, block masks); nil: `causal` decides.
    var mask: AttentionMask?
    var q: [Float] = [], k: [Float] = [], v: [Float] = [], dO: [Float] = []

    init(seed: UInt64, lengths: [Int], headsQ: Int = 4, headsKV: Int = 2, headDim: Int = 32, causal: Bool, dtype: DType = .f32) {
        self.seed = seed
        self.lengths = lengths
        self.headsQ = headsQ
        self.headsKV = headsKV
        self.headDim = headDim
        self.causal = causal
        self.dtype = dtype
        var rng = SeededRandom(seed: seed)
        let total = lengths.reduce(0, +)
        let round: (Float) -> Float = dtype == .f16 ? { Float(Float16($0)) } : { $0 }
        q = rng.floats(total * headsQ * headDim).map(round)
        k = rng.floats(total * headsKV * headDim).map(round)
        v = rng.floats(total * headsKV * headDim).map(round)
        dO = rng.floats(total * headsQ * headDim).map(round)
    }

    var description: String { "lengths \(lengths.count > 6 ? "\(lengths.prefix(6))..." : "\(lengths)") Hq \(headsQ) Hkv \(headsKV) D \(headDim) \(mask.map { "\($0)" } ?? (causal ? "causal" : "full")) \(dtype) seed \(seed)" }
    var total: Int { lengths.reduce(0, +) }
    var cu: [Int32] { lengths.reduce(into: [Int32(0)]) { $0.append($0[$0.count - 1] + Int32($1)) } }
    var attention: FlashAttention { FlashAttention(mask: mask ?? (causal ? .causal : .none)) }
    var tolerance: Double { dtype == .f16 ? 2e-3 : 1e-5 }

    struct Results: Sendable {
        var o: [Float], lse: [Float], dq: [Float], dk: [Float], dv: [Float]
    }

    /// The single-device kernel on `device` (packed layout over the whole problem).
    func single(_ device: Device, backward: Bool) throws -> Results {
        let layout = AttentionLayout.packed(cuSeqlensQ: cu, cuSeqlensK: cu)
        let qt = try device.makeTensor(q, shape: [total, headsQ, headDim], dtype: dtype)
        let kt = try device.makeTensor(k, shape: [total, headsKV, headDim], dtype: dtype)
        let vt = try device.makeTensor(v, shape: [total, headsKV, headDim], dtype: dtype)
        let stream = try device.makeStream()
        let out = try attention.forward(q: qt, k: kt, v: vt, layout: layout, on: stream)
        var grads: AttentionGradients?
        if backward {
            let dOt = try device.makeTensor(dO, shape: [total, headsQ, headDim], dtype: dtype)
            try stream.barrier()
            grads = try attention.backward(q: qt, k: kt, v: vt, o: out.o, lse: out.lse, dO: dOt, layout: layout, on: stream)
        }
        try stream.synchronize()
        return Results(o: try out.o.readFloats(), lse: try out.lse.readFloats(), dq: try grads?.dq.readFloats() ?? [],
                       dk: try grads?.dk.readFloats() ?? [], dv: try grads?.dv.readFloats() ?? [])
    }

    /// Shards, runs `scheme` on every rank of `comms` (outputs poisoned with NaN and fenced
    /// by guard words first), unshards. Throws what the scheduler throws.
    func parallel(_ comms: [LocalCommunicator], sharding: SequenceSharding, scheme: ContextParallelScheme,
                  backward: Bool) async throws -> Results {
        let plan = try ShardPlan(lengths: lengths, ranks: comms.count, sharding: sharding)
        let cp = ContextParallelAttention(plan: plan, scheme: scheme, attention: attention)
        let c = self
        let perRank = try await onEveryRank(comms) { comm -> ([Float], [Float], [Float], [Float], [Float]) in
            let r = comm.rank, device = comm.device, t = plan.tokens(rank: r)
            let hq = c.headsQ * c.headDim, hkv = c.headsKV * c.headDim
            let q = try device.makeTensor(plan.shard(c.q, width: hq, rank: r), shape: [t, c.headsQ, c.headDim], dtype: c.dtype)
            let k = try device.makeTensor(plan.shard(c.k, width: hkv, rank: r), shape: [t, c.headsKV, c.headDim], dtype: c.dtype)
            let v = try device.makeTensor(plan.shard(c.v, width: hkv, rank: r), shape: [t, c.headsKV, c.headDim], dtype: c.dtype)
            let o = try Guarded(device, shape: [t, c.headsQ, c.headDim], dtype: c.dtype)
            let lse = try Guarded(device, shape: [c.headsQ, t], dtype: .f32)
            _ = try await cp.forward(q: q, k: k, v: v, into: AttentionOutput(o: o.tensor, lse: lse.tensor), communicator: comm)
            try o.checkGuards("O rank \(r) \(c)")
            try lse.checkGuards("LSE rank \(r) \(c)")
            guard backward else { return (try o.tensor.readFloats(), try lse.tensor.readFloats(), [], [], []) }
            let dO = try device.makeTensor(plan.shard(c.dO, width: hq, rank: r), shape: [t, c.headsQ, c.headDim], dtype: c.dtype)
            let dq = try Guarded(device, shape: [t, c.headsQ, c.headDim], dtype: c.dtype)
            let dk = try Guarded(device, shape: [t, c.headsKV, c.headDim], dtype: c.dtype)
            let dv = try Guarded(device, shape: [t, c.headsKV, c.headDim], dtype: c.dtype)
            _ = try await cp.backward(q: q, k: k, v: v, o: o.tensor, lse: lse.tensor, dO: dO,
                                      into: AttentionGradients(dq: dq.tensor, dk: dk.tensor, dv: dv.tensor), communicator: comm)
            for (name, g) in [("dQ", dq), ("dK", dk), ("dV", dv)] { try g.checkGuards("\(name) rank \(r) \(c)") }
            return (try o.tensor.readFloats(), try lse.tensor.readFloats(), try dq.tensor.readFloats(),
                    try dk.tensor.readFloats(), try dv.tensor.readFloats())
        }
        let hq = headsQ * headDim, hkv = headsKV * headDim
        return Results(o: plan.unshard(perRank.map(\.0), width: hq, fill: .nan),
                       lse: plan.unshardColumns(perRank.map(\.1), heads: headsQ, fill: .nan),
                       dq: backward ? plan.unshard(perRank.map(\.2), width: hq, fill: .nan) : [],
                       dk: backward ? plan.unshard(perRank.map(\.3), width: hkv, fill: .nan) : [],
                       dv: backward ? plan.unshard(perRank.map(\.4), width: hkv, fill: .nan) : [])
    }

    /// Relative errors (L2) of `got` against `want`, per output.
    static func errors(_ got: Results, _ want: Results) -> [String: Double] {
        var out = ["O": relativeError(got.o, want.o.map(Double.init)), "LSE": relativeError(got.lse, want.lse.map(Double.init))]
        if !want.dq.isEmpty {
            out["dQ"] = relativeError(got.dq, want.dq.map(Double.init), floor: 1e-2)
            out["dK"] = relativeError(got.dk, want.dk.map(Double.init), floor: 1e-2)
            out["dV"] = relativeError(got.dv, want.dv.map(Double.init), floor: 1e-2)
        }
        return out
    }
}

/// A tensor poisoned with NaN inside a buffer with guard words on both sides.
struct Guarded {
    static let guardWords = 64
    static let guardValue: UInt32 = 0x5A5A_1234
    let tensor: Tensor
    let count: Int

    init(_ device: Device, shape: [Int], dtype: DType) throws {
        count = shape.reduce(1, *) * dtype.byteSize / 4
        let words = [UInt32](repeating: Self.guardValue, count: Self.guardWords)
            + [UInt32](repeating: dtype == .f16 ? 0x7E00_7E00 : Float.nan.bitPattern, count: count)
            + [UInt32](repeating: Self.guardValue, count: Self.guardWords)
        let buffer = try device.makeBuffer(words)
        tensor = try Tensor(buffer, shape: shape, dtype: dtype, byteOffset: Self.guardWords * 4)
    }

    func checkGuards(_ what: String) throws {
        let words = try tensor.buffer.read(UInt32.self, count: count + 2 * Self.guardWords)
        let intact = words.prefix(Self.guardWords).allSatisfy { $0 == Self.guardValue }
            && words.suffix(Self.guardWords).allSatisfy { $0 == Self.guardValue }
        #expect(intact, "guard words overwritten: \(what)")
    }
}
