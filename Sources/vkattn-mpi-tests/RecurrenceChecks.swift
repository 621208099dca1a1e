import Glibc
import VkAttn
import VkAttnReference
import VkAttnParallel
import VkAttnMPI

/// One linear recurrence h_t = a_t h_{t-1} + b_t over the whole sequence (the same on every
/// rank), with h0 and dFinal.
struct RecurrenceCase {
    let layout: LinearRecurrence.Layout
    let reverse: Bool, complex: Bool
    let batch: Int, length: Int, channels: Int
    let a: [Float], b: [Float], dh: [Float], h0: [Float], dFinal: [Float]

    init(layout: LinearRecurrence.Layout, reverse: Bool, complex: Bool, batch: Int, length: Int, channels: Int, seed: UInt64) {
        (self.layout, self.reverse, self.complex, self.batch, self.length, self.channels) = (layout, reverse, complex, batch, length, channels)
        var rng = SeededRandom(seed: seed)
        let count = batch * length * channels, cw = complex ? 2 : 1
        // |a| <= 1 as RecurrenceHarness's mixed decays: real a in [-1, 1], complex a random phase.
        a = (0..<count).flatMap { _ -> [Float] in
            let r = Float.random(in: 0...1, using: &rng)
            if !complex { return [rng.next() % 2 == 0 ? -r : r] }
            let phase = Float.random(in: -Float.pi...Float.pi, using: &rng)
            return [r * cosf(phase), r * sinf(phase)]
        }
        b = rng.floats(count * cw)
        dh = rng.floats(count * cw)
        h0 = rng.floats(batch * channels * cw)
        dFinal = rng.floats(batch * channels * cw)
    }

    var cw: Int { complex ? 2 : 1 }
    func shape(_ steps: Int) -> [Int] { (layout == .bld ? [batch, steps, channels] : [batch, channels, steps]) + (complex ? [2] : []) }
    var stateShape: [Int] { [batch, channels] + (complex ? [2] : []) }
    var recurrence: LinearRecurrence { LinearRecurrence(layout: layout, complex: complex, reverse: reverse) }
    var reference: RecurrenceReference {
        RecurrenceReference(layout: layout, complex: complex, reverse: reverse, batch: batch, length: length, channels: channels)
    }
    /// The ranks of the first steps (h0 enters there) and of the last ones.
    func first(_ n: Int) -> Int { reverse ? n - 1 : 0 }
    func last(_ n: Int) -> Int { reverse ? 0 : n - 1 }

    /// Steps [lo, hi) of every channel, in the layout: the middle part of the library's
    /// contiguous split [lo, hi - lo, L - hi] of the time axis ([B, L, D]: outer B, inner D;
    /// [B, D, L]: outer B D, inner 1; complex: inner x 2).
    func slice<T>(_ x: [T], _ lo: Int, _ hi: Int) throws -> [T] {
        let outer = layout == .bld ? batch : batch * channels, inner = (layout == .bld ? channels : 1) * cw
        return try ContiguousSplit(lengths: [lo, hi - lo, length - hi]).shard(x, outer: outer, inner: inner, rank: 1)
    }

    /// The single-device kernel's h, final, da, db, dh0.
    func single(_ device: Device) throws -> [String: [Float]] {
        let op = recurrence, shape = shape(length), state = stateShape
        let stream = try device.makeStream()
        let aT = try device.makeTensor(a, shape: shape), h0T = try device.makeTensor(h0, shape: state)
        let hT = try device.makeTensor(shape: shape, dtype: .f32), finalT = try device.makeTensor(shape: state, dtype: .f32)
        try op.forward(a: aT, b: try device.makeTensor(b, shape: shape), h0: h0T, h: hT, finalState: finalT, on: stream)
        let daT = try device.makeTensor(shape: shape, dtype: .f32), dbT = try device.makeTensor(shape: shape, dtype: .f32)
        let dh0T = try device.makeTensor(shape: state, dtype: .f32)
        try stream.barrier()
        try op.backward(a: aT, h: hT, h0: h0T, dh: try device.makeTensor(dh, shape: shape),
                        dFinal: try device.makeTensor(dFinal, shape: state), da: daT, db: dbT, dh0: dh0T, on: stream)
        try stream.synchronize()
        return ["h": try hT.readFloats(), "final": try finalT.readFloats(), "da": try daT.readFloats(), "db": try dbT.readFloats(),
                "dh0": try dh0T.readFloats()]
    }
}

/// ContextParallelRecurrence (LASP, LASP-2, ZeCO's all-scan) across the processes, forward
/// and backward, against the fp64 reference and the single-device kernel with the bounds of
/// ParallelRecurrenceTests (2u (L + 16 + 8) times the magnitude run on |a| and |b|; twice that
/// against the one-device kernel). Real maps with `.allGather` take MPI_Iexscan; complex ones
/// (`ComplexAffineScan`) take the point-to-point default, which the bytes sent show: the
/// all-gather's N - 1 values per rank rather than MPI_Iexscan's one. The backward's suffix
/// scan runs on `subgroup` of the reversed ranks.
enum RecurrenceChecks {
    static let schemes: [AllScanAlgorithm] = [.chain(segments: 1), .allGather, .chain(segments: 3)]

    static func run(_ comm: MPICommunicator, _ report: Report) async throws {
        let seed = report.seed &+ 20
        let cases = [
            // First shard a single step.
            (RecurrenceCase(layout: .bld, reverse: false, complex: false, batch: 2, length: 41, channels: 7, seed: seed), true),
            (RecurrenceCase(layout: .bld, reverse: true, complex: false, batch: 2, length: 41, channels: 7, seed: seed &+ 1), false),
            (RecurrenceCase(layout: .bdl, reverse: false, complex: true, batch: 2, length: 29, channels: 5, seed: seed &+ 2), false),
            (RecurrenceCase(layout: .bld, reverse: true, complex: true, batch: 1, length: 29, channels: 5, seed: seed &+ 3), true),
        ]
        for (c, skewed) in cases {
            let n = comm.size, l = c.length
            let bounds = skewed && n > 1 ? [0, 1] + (1..<n).map { 1 + $0 * (l - 1) / (n - 1) } : (0...n).map { $0 * l / n }
            try await check(comm, report, c, bounds: bounds)
        }
    }

    static func check(_ comm: MPICommunicator, _ report: Report, _ c: RecurrenceCase, bounds: [Int]) async throws {
        let r = comm.rank, n = comm.size, device = comm.device, lo = bounds[r], hi = bounds[r + 1]
        let ref = c.reference
        let tol = 2 * 0x1p-24 * Double(c.length + 16 + 8)
        let (h, final) = ref.forward(a: c.a, b: c.b, h0: c.h0)
        let m = ref.magnitude(a: c.a, b: c.b, h0: c.h0)
        var finalScale = [Double](repeating: 0, count: final.count)
        for bi in 0..<c.batch {
            for d in 0..<c.channels {
                for k in 0..<c.cw { finalScale[(bi * c.channels + d) * c.cw + k] = m[ref.index(bi, c.reverse ? 0 : c.length - 1, d) + k] }
            }
        }
        let single = try c.single(device)
        // Scales as ParallelRecurrenceTests: the gradient recurrence run on |a| and |dh|.
        let gScale = ref.gradientMagnitude(a: c.a, dh: c.dh, dFinal: c.dFinal).map { $0 * 2 }
        let hMax = ((single["h"] ?? []) + c.h0).map { abs(Double($0)) }.max() ?? 1
        let daScale = gScale.map { $0 * max(hMax, 1e-3) }
        let (da, db, dh0) = ref.backward(a: c.a, h: single["h"] ?? [], h0: c.h0, dh: c.dh, dFinal: c.dFinal)
        var want: [(String, [Double], [Double], [Float])] = try [
            ("h", c.slice(h, lo, hi), c.slice(m, lo, hi), c.slice(single["h"] ?? [], lo, hi)),
            ("db", c.slice(db, lo, hi), c.slice(gScale, lo, hi), c.slice(single["db"] ?? [], lo, hi)),
            ("da", c.slice(da, lo, hi), c.slice(daScale, lo, hi), c.slice(single["da"] ?? [], lo, hi)),
        ]
        if r == c.last(n) { want.append(("final", final, finalScale, single["final"] ?? [])) }
        if r == c.first(n) { want.append(("dh0", dh0, [Double](repeating: gScale.max() ?? 1, count: dh0.count), single["dh0"] ?? [])) }
        // The state entering this shard: h at the neighbouring step outside it (the first rank: h0).
        let outside = c.reverse ? hi : lo - 1
        let incomingWant: [Float] = r == c.first(n) ? c.h0 : (0..<(c.batch * c.channels * c.cw)).map {
            let channel = $0 / c.cw
            return (single["h"] ?? [])[ref.index(channel / c.channels, outside, channel % c.channels) + $0 % c.cw]
        }

        let local = c.shape(hi - lo), state = c.stateShape
        let aT = try device.makeTensor(try c.slice(c.a, lo, hi), shape: local), bT = try device.makeTensor(try c.slice(c.b, lo, hi), shape: local)
        let dhT = try device.makeTensor(try c.slice(c.dh, lo, hi), shape: local)
        let h0T = r == c.first(n) ? try device.makeTensor(c.h0, shape: state) : nil
        let dFinalT = r == c.last(n) ? try device.makeTensor(c.dFinal, shape: state) : nil
        let rows = c.batch * c.channels
        for algorithm in schemes {
            let op = ContextParallelRecurrence(recurrence: c.recurrence, scheme: .linear(algorithm))
            let hT = try Guarded(device, shape: local), finalT = try Guarded(device, shape: state), incoming = try Guarded(device, shape: state)
            let forward = try await op.forward(a: aT, b: bT, h0: h0T, h: hT.tensor, finalState: finalT.tensor, incoming: incoming.tensor,
                                               communicator: comm)
            let daT = try Guarded(device, shape: local), dbT = try Guarded(device, shape: local), dIncoming = try Guarded(device, shape: state)
            let backward = try await op.backward(a: aT, h: hT.tensor, incoming: incoming.tensor, dh: dhT, dFinal: dFinalT,
                                                 da: daT.tensor, db: dbT.tensor, dIncoming: dIncoming.tensor, communicator: comm)
            let got = ["h": try hT.tensor.readFloats(), "final": try finalT.tensor.readFloats(), "da": try daT.tensor.readFloats(),
                       "db": try dbT.tensor.readFloats(), "dh0": try dIncoming.tensor.readFloats()]
            let what = "recurrence \(op.scheme) \(c.layout) \(c.complex ? "complex" : "real")\(c.reverse ? " reversed" : "") x\(n) bounds \(bounds)"
            for (name, reference, scale, one) in want {
                let x = got[name] ?? []
                report.expect("\(what) \(name) vs fp64 (error / bound)", error: boundRatio(x, reference, scale: scale, tol: tol), bound: 1)
                report.expect("\(what) \(name) vs one device (error / bound)",
                              error: boundRatio(x, one.map(Double.init), scale: scale.map { $0 * 2 }, tol: tol), bound: 1)
            }
            let incomingGot = try incoming.tensor.readFloats()
            let incomingError = incomingGot.count == incomingWant.count
                ? zip(incomingGot, incomingWant).map { $0.isNaN ? .infinity : Double(abs($0 - $1) / (1 + abs($1))) }.max() ?? 0 : .infinity
            report.expect("\(what) incoming state vs one device h", error: incomingError, bound: 1e-4)
            report.expect("\(what) guard words intact", [hT, finalT, incoming, daT, dbT, dIncoming].allSatisfy(\.intact))
            // Bytes: the point-to-point scans send what the scheme says; a real all-gather scan is
            // one MPI_Iexscan contribution, a complex one the point-to-point all-gather.
            let value = rows * (c.complex ? 16 : 8)
            for (direction, output, backwardPass) in [("forward", forward, false), ("backward", backward, true)] {
                let expected = n > 1 && algorithm == .allGather && !c.complex
                    ? value : op.expectedBytesSent(rank: r, ranks: n, channels: rows, backward: backwardPass)
                if n > 1 || algorithm != .allGather || c.complex {
                    report.expect("\(what) \(direction) bytes sent", output.bytesSent == expected, "\(output.bytesSent), expected \(expected)")
                }
                report.expect("\(what) \(direction) path", output.path.hasPrefix("\(op.scheme) x\(n) \(direction)"), output.path)
            }
        }
    }
}
