import Testing
import VkAttn
import VkAttnParallel
import VkAttnReference
import TestSupport

/// Mamba-2 SSD across ranks (ContextParallelSSD over LASP, LASP-2 and ZeCO) on 1..4 ranks
/// against the one-device op and the fp64 reference, with the bounds of MambaSSDTests.
@Suite("Parallel Mamba-2 SSD")
struct ParallelSSDTests {
    struct Gathered: Sendable {
        var y: [Float] = [], final: [Float] = [], dx: [Float] = [], ddt: [Float] = [], db: [Float] = [], dc: [Float] = []
        var da: [Float] = [], dd: [Float] = [], dBias: [Float] = [], dInitial: [Float] = []
    }

    struct RankResult: Sendable {
        let y: [Float], final: [Float]?, dx: [Float], ddt: [Float], db: [Float], dc: [Float], da: [Float], dd: [Float], dBias: [Float]
        let dInitial: [Float]?
    }

    @Test func everySchemeOnOneToFourRanks() async throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        let (b, l, h, p, g, n) = (2, 37, 4, 5, 2, 3)
        let ssd = MambaSSD(chunkLength: 8, dtSoftplus: true)
        let inputs = SSDReference.Inputs(x: rng.floats(b * l * h * p), dt: rng.floats(b * l * h, in: -3 ... 0), a: rng.floats(h, in: -2 ... -0.2),
                                         b: rng.floats(b * l * g * n), c: rng.floats(b * l * g * n), d: rng.floats(h),
                                         dtBias: rng.floats(h, in: -0.5...0.5), initialState: rng.floats(b * h * n * p))
        let dy = rng.floats(b * l * h * p), dFinal = rng.floats(b * h * n * p)
        let ref = SSDReference(batch: b, length: l, heads: h, headDim: p, groups: g, stateDim: n, dtSoftplus: true)
        let (y, final) = ref.forward(inputs), (yAbs, finalAbs) = ref.forward(inputs, absolute: true)
        let grads = ref.backward(inputs, dy: dy, dFinal: dFinal), gAbs = ref.backward(inputs, dy: dy, dFinal: dFinal, absolute: true)
        let depth = 4 * (l + n + p + 8)

        try await withGroup(ranks: 4) { group in
            group.timeline.isRecording = false
            for ranks in 1...4 {
                for scheme in ParallelLinearTests.schemes {
                    let comms = try group.communicators(first: ranks)
                    let lengths = ContextParallelLinearAttention.evenLengths(total: l, ranks: ranks)
                    let split = try ContiguousSplit(lengths: lengths)
                    let op = ContextParallelSSD(lengths: lengths, scheme: scheme, ssd: ssd)
                    let results = try await onEveryRank(comms) { comm -> RankResult in
                        let r = comm.rank, device = comm.device, lr = lengths[r]
                        let t = { (x: [Float], w: Int, tail: [Int]) in try device.makeTensor(split.shard(x, outer: b, inner: w, rank: r), shape: [b, lr] + tail) }
                        let x = try t(inputs.x, h * p, [h, p]), dt = try t(inputs.dt, h, [h])
                        let bT = try t(inputs.b, g * n, [g, n]), cT = try t(inputs.c, g * n, [g, n])
                        let a = try device.makeTensor(inputs.a, shape: [h]), d = try device.makeTensor(inputs.d ?? [], shape: [h])
                        let bias = try device.makeTensor(inputs.dtBias ?? [], shape: [h])
                        let s0 = r == 0 ? try device.makeTensor(inputs.initialState ?? [], shape: [b, h, n, p]) : nil
                        let out = try await op.forward(x: x, dt: dt, a: a, b: bT, c: cT, d: d, dtBias: bias, initialState: s0, returnFinalState: true,
                                                       communicator: comm)
                        let dyT = try t(dy, h * p, [h, p])
                        let dF = r == ranks - 1 ? try device.makeTensor(dFinal, shape: [b, h, n, p]) : nil
                        let gr = try await op.backward(x: x, dt: dt, a: a, b: bT, c: cT, d: d, dtBias: bias, incomingState: out.incomingState,
                                                       dy: dyT, dFinalState: dF, communicator: comm)
                        return RankResult(y: try out.y.readFloats(), final: try out.finalState?.readFloats(), dx: try gr.dx.readFloats(),
                                          ddt: try gr.ddt.readFloats(), db: try gr.db.readFloats(), dc: try gr.dc.readFloats(),
                                          da: try gr.da.readFloats(), dd: try gr.dd?.readFloats() ?? [], dBias: try gr.dDtBias?.readFloats() ?? [],
                                          dInitial: try gr.dInitialState?.readFloats())
                    }
                    let what = "ssd \(scheme) x\(ranks) [B \(b), L \(l), H \(h), P \(p), G \(g), N \(n)]"
                    #expect(results[ranks - 1].final?.count == final.count && results[0].dInitial?.count == grads.dInitial.count
                            && results.allSatisfy { $0.da.count == h && $0.dd.count == h && $0.dBias.count == h }, "\(what), seed \(seed)")
                    let un = { (parts: [[Float]], w: Int) in try split.unshard(parts, outer: b, inner: w) }
                    GLAHarness.check(try un(results.map(\.y), h * p), y, scale: yAbs, depth: depth, seed: seed, "y " + what)
                    GLAHarness.check(results[ranks - 1].final ?? [], final, scale: finalAbs, depth: depth, seed: seed, "final " + what)
                    GLAHarness.check(try un(results.map(\.dx), h * p), grads.dx, scale: gAbs.dx, depth: depth, seed: seed, "dx " + what)
                    GLAHarness.check(try un(results.map(\.db), g * n), grads.db, scale: gAbs.db, depth: depth, seed: seed, "dB " + what)
                    GLAHarness.check(try un(results.map(\.dc), g * n), grads.dc, scale: gAbs.dc, depth: depth, seed: seed, "dC " + what)
                    GLAHarness.check(results[0].dInitial ?? [], grads.dInitial, scale: gAbs.dInitial, depth: depth, seed: seed, "dInitial " + what)
                    SSDHarness.checkGlobal(try un(results.map(\.ddt), h), grads.ddt, scale: gAbs.ddt, depth: depth, seed: seed, "ddt " + what, rounding: 0)
                    for (k, result) in results.enumerated() {
                        let rd = depth + 4 * b * l
                        SSDHarness.checkGlobal(result.da, grads.da, scale: gAbs.da, depth: rd, seed: seed, "dA rank \(k) " + what, rounding: 0)
                        GLAHarness.check(result.dd, grads.dd, scale: gAbs.dd, depth: rd, seed: seed, "dD rank \(k) " + what)
                        SSDHarness.checkGlobal(result.dBias, grads.dDtBias, scale: gAbs.dDtBias, depth: rd, seed: seed, "dDtBias rank \(k) " + what, rounding: 0)
                    }
                }
            }
        }
    }
}
