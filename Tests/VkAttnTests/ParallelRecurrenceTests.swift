import Testing
import VkAttn
import VkAttnParallel
import TestSupport

/// One random recurrence problem over the whole sequence, run on one device
/// (`LinearRecurrence`) and sharded over ranks (`ContextParallelRecurrence`).
///
/// Bound: `RecurrenceHarness.check`'s, 2u (steps + 8) times the magnitude run on |a| and |b|,
/// with steps = L + 16 for every rank count: the carry adds per state one product and one sum
/// (2u) and the scan of the maps two roundings per rank (at most 4 ranks: 8u) on top of the
/// local recurrences' bound.
struct ShardedRecurrenceCase: Sendable {
    let seed: UInt64
    let layout: LinearRecurrence.Layout
    let reverse: Bool
    let complex: Bool
    let batch: Int, length: Int, channels: Int
    let withBoundaries: Bool
    let a: [Float], b: [Float], dh: [Float]
    let h0: [Float]?, dFinal: [Float]?

    init(seed: UInt64, layout: LinearRecurrence.Layout, reverse: Bool = false, complex: Bool = false, batch: Int, length: Int,
         channels: Int, withBoundaries: Bool, device: Device) {
        self.seed = seed
        self.layout = layout
        self.reverse = reverse
        self.complex = complex
        self.batch = batch
        self.length = length
        self.channels = channels
        self.withBoundaries = withBoundaries
        var h = RecurrenceHarness(device: device, seed: seed)
        let count = batch * length * channels
        let cw = complex ? 2 : 1
        a = h.coefficients(count, complex: complex, decay: .mixed)
        b = h.rng.floats(count * cw)
        dh = h.rng.floats(count * cw)
        h0 = withBoundaries ? h.rng.floats(batch * channels * cw) : nil
        dFinal = withBoundaries ? h.rng.floats(batch * channels * cw) : nil
    }

    /// Floats per value.
    var cw: Int { complex ? 2 : 1 }
    var shape: [Int] { shape(length) }
    func shape(_ steps: Int) -> [Int] { (layout == .bld ? [batch, steps, channels] : [batch, channels, steps]) + (complex ? [2] : []) }
    var stateShape: [Int] { [batch, channels] + (complex ? [2] : []) }
    var reference: RecurrenceReference {
        RecurrenceReference(layout: layout, complex: complex, reverse: reverse, batch: batch, length: length, channels: channels)
    }

    /// The rank of the first steps (h0 enters there) and of the last ones, of `n`.
    func first(_ n: Int) -> Int { reverse ? n - 1 : 0 }
    func last(_ n: Int) -> Int { reverse ? 0 : n - 1 }

    /// The time axis cut at `bounds` (the shard starts plus L): the library's contiguous split,
    /// with the layout's [outer, L, inner] view ([B, L, D] or [B, D, L]; complex: inner x 2).
    func split(_ bounds: [Int]) throws -> ContiguousSplit {
        try ContiguousSplit(lengths: zip(bounds.dropFirst(), bounds).map { $0 - $1 })
    }
    var outer: Int { layout == .bld ? batch : batch * channels }
    var inner: Int { (layout == .bld ? channels : 1) * cw }

    /// Rank `rank`'s steps of every channel under `bounds`, in the layout.
    func slice(_ x: [Float], bounds: [Int], rank: Int) throws -> [Float] {
        try split(bounds).shard(x, outer: outer, inner: inner, rank: rank)
    }

    /// The shards back into the whole sequence.
    func join(_ parts: [[Float]], bounds: [Int]) throws -> [Float] {
        try split(bounds).unshard(parts, outer: outer, inner: inner)
    }

    struct Result: Sendable {
        var h: [Float], final: [Float], da: [Float], db: [Float], dh0: [Float]
    }

    /// The single-device kernel's forward and backward.
    func single(_ device: Device, op: LinearRecurrence) throws -> Result {
        let state = stateShape
        let stream = try device.makeStream()
        let aT = try device.makeTensor(a, shape: shape), bT = try device.makeTensor(b, shape: shape)
        let h0T = try h0.map { try device.makeTensor($0, shape: state) }
        let hT = try device.makeTensor(shape: shape, dtype: .f32), finalT = try device.makeTensor(shape: state, dtype: .f32)
        try op.forward(a: aT, b: bT, h0: h0T, h: hT, finalState: finalT, on: stream)
        let daT = try device.makeTensor(shape: shape, dtype: .f32), dbT = try device.makeTensor(shape: shape, dtype: .f32)
        let dh0T = try device.makeTensor(shape: state, dtype: .f32)
        try stream.barrier()
        try op.backward(a: aT, h: hT, h0: h0T, dh: try device.makeTensor(dh, shape: shape),
                        dFinal: try dFinal.map { try device.makeTensor($0, shape: state) }, da: daT, db: dbT, dh0: dh0T, on: stream)
        try stream.synchronize()
        return Result(h: try hT.readFloats(), final: try finalT.readFloats(), da: try daT.readFloats(), db: try dbT.readFloats(),
                      dh0: try dh0T.readFloats())
    }

    /// Every rank's forward then backward; `bounds` are the shard starts plus L.
    func parallel(_ comms: [LocalCommunicator], bounds: [Int], op: ContextParallelRecurrence) async throws
        -> (Result, incoming: [[Float]], outputs: [[RecurrenceShardOutput]]) {
        let n = comms.count
        let perRank = try await onEveryRank(comms) { comm in
            let r = comm.rank, dev = comm.device, lo = bounds[r], hi = bounds[r + 1]
            let local = shape(hi - lo), state = stateShape
            let aT = try dev.makeTensor(try slice(a, bounds: bounds, rank: r), shape: local)
            let h = try Guarded(dev, shape: local, dtype: .f32), final = try Guarded(dev, shape: state, dtype: .f32)
            let incoming = try Guarded(dev, shape: state, dtype: .f32)
            let forward = try await op.forward(a: aT, b: try dev.makeTensor(try slice(b, bounds: bounds, rank: r), shape: local),
                                               h0: r == first(n) ? try h0.map { try dev.makeTensor($0, shape: state) } : nil,
                                               h: h.tensor, finalState: final.tensor, incoming: incoming.tensor, communicator: comm)
            let da = try Guarded(dev, shape: local, dtype: .f32), db = try Guarded(dev, shape: local, dtype: .f32)
            let dIncoming = try Guarded(dev, shape: state, dtype: .f32)
            let backward = try await op.backward(a: aT, h: h.tensor, incoming: r == first(n) && h0 == nil ? nil : incoming.tensor,
                                                 dh: try dev.makeTensor(try slice(dh, bounds: bounds, rank: r), shape: local),
                                                 dFinal: r == last(n) ? try dFinal.map { try dev.makeTensor($0, shape: state) } : nil,
                                                 da: da.tensor, db: db.tensor, dIncoming: dIncoming.tensor, communicator: comm)
            for (g, what) in [(h, "h"), (final, "final"), (incoming, "incoming"), (da, "da"), (db, "db"), (dIncoming, "dIncoming")] {
                try g.checkGuards("\(what) rank \(r) of \(n)")
            }
            return (h: try h.tensor.readFloats(), final: try final.tensor.readFloats(), incoming: try incoming.tensor.readFloats(),
                    da: try da.tensor.readFloats(), db: try db.tensor.readFloats(), dIncoming: try dIncoming.tensor.readFloats(),
                    outputs: [forward, backward])
        }
        let result = Result(h: try join(perRank.map(\.h), bounds: bounds), final: perRank[last(n)].final,
                            da: try join(perRank.map(\.da), bounds: bounds), db: try join(perRank.map(\.db), bounds: bounds),
                            dh0: perRank[first(n)].dIncoming)
        return (result, perRank.map(\.incoming), perRank.map(\.outputs))
    }

    /// Checks `got` against the fp64 reference and the single-device kernel's result.
    func check(_ got: Result, single: Result, _ what: String) {
        let ref = reference
        let steps = length + 16
        let (h, final) = ref.forward(a: a, b: b, h0: h0)
        let m = ref.magnitude(a: a, b: b, h0: h0)
        var finalScale = [Double](repeating: 0, count: final.count)
        for bi in 0..<batch {
            for d in 0..<channels {
                for k in 0..<cw { finalScale[(bi * channels + d) * cw + k] = m[ref.index(bi, reverse ? 0 : length - 1, d) + k] }
            }
        }
        // Scales as in RecurrenceHarness: the gradient recurrence run on |a| and |dh|.
        let gScale = ref.gradientMagnitude(a: a, dh: dh, dFinal: dFinal).map { $0 * 2 }
        let hMax = (got.h + (h0 ?? [])).map { abs(Double($0)) }.max() ?? 1
        let daScale = gScale.map { $0 * max(hMax, 1e-3) }
        let dh0Scale = [Double](repeating: (gScale.max() ?? 1), count: got.dh0.count)
        let (da, db, dh0) = ref.backward(a: a, h: got.h, h0: h0, dh: dh, dFinal: dFinal)
        func both(_ x: [Float], _ r: [Double], _ s: [Float], _ scale: [Double], _ name: String) {
            RecurrenceHarness.check(x, r, scale: scale, steps: steps, seed: seed, "\(name) vs fp64, \(what)")
            RecurrenceHarness.check(x, s.map(Double.init), scale: scale.map { $0 * 2 }, steps: steps, seed: seed,
                                    "\(name) vs one device, \(what)")
        }
        both(got.h, h, single.h, m, "h")
        both(got.final, final, single.final, finalScale, "final")
        both(got.db, db, single.db, gScale, "db")
        both(got.da, da, single.da, daScale, "da")
        both(got.dh0, dh0, single.dh0, dh0Scale, "dh0")
    }
}

@Suite("Parallel: linear recurrence across ranks")
struct ParallelRecurrenceTests {
    static let schemes: [AllScanAlgorithm] = [.chain(segments: 1), .allGather, .chain(segments: 3)]

    /// Shard bounds: near-equal splits, and uneven ones with length-1 shards.
    static func splits(_ length: Int) -> [[Int]] {
        (1...4).map { n in (0...n).map { $0 * length / n } } + [[0, 1, 2, length], [0, length - 2, length - 1, length],
                                                              [0, 1, length / 2, length / 2 + 1, length]]
    }

    @Test(arguments: schemes, [false, true])
    func forwardAndBackwardMatchOneDeviceOnEveryRankCount(algorithm: AllScanAlgorithm, reverse: Bool) async throws {
        let seed = testSeed()
        try await withGroup(ranks: 4) { group in
            let c = ShardedRecurrenceCase(seed: seed, layout: .bld, reverse: reverse, batch: 2, length: 101, channels: 7,
                                          withBoundaries: true, device: group.devices[0])
            let recurrence = LinearRecurrence(layout: .bld, reverse: reverse)
            let single = try c.single(group.devices[0], op: recurrence)
            let op = ContextParallelRecurrence(recurrence: recurrence, scheme: .linear(algorithm))
            for bounds in Self.splits(c.length) {
                let n = bounds.count - 1
                group.resetTraffic()
                _ = group.timeline.drain()
                let (got, incoming, outputs) = try await c.parallel(try group.communicators(first: n), bounds: bounds, op: op)
                let what = "\(op.scheme) reverse \(reverse) bounds \(bounds)"
                c.check(got, single: single, what)
                // The state entering a shard is h at the neighbouring step outside it (the first rank: h0).
                for r in 0..<n {
                    let outside = reverse ? bounds[r + 1] : bounds[r] - 1
                    let want = r == c.first(n) ? c.h0 ?? [] : (0..<(c.batch * c.channels * c.cw)).map {
                        let channel = $0 / c.cw
                        return single.h[c.reference.index(channel / c.channels, outside, channel % c.channels) + $0 % c.cw]
                    }
                    let err = zip(incoming[r], want).map { abs($0 - $1) / (1 + abs($1)) }.max() ?? .infinity
                    #expect(err < 1e-4, "incoming of rank \(r), \(what): error \(err), seed \(seed)")
                }
                // Traffic: each rank's sends per call as the scheme says.
                let rows = c.batch * c.channels
                for r in 0..<n {
                    let forward = outputs[r][0], backward = outputs[r][1]
                    #expect(forward.bytesSent == op.expectedBytesSent(rank: r, ranks: n, channels: rows, backward: false),
                            "forward bytes of rank \(r), \(what)")
                    #expect(backward.bytesSent == op.expectedBytesSent(rank: r, ranks: n, channels: rows, backward: true),
                            "backward bytes of rank \(r), \(what)")
                    #expect(forward.path.hasPrefix("\(op.scheme) x\(n) forward"), "\(forward.path)")
                    // Only the first shard of each flow skips the decay pass.
                    #expect(forward.decayPass == (r != c.first(n)) && backward.decayPass == (r != c.last(n)), "\(what) rank \(r)")
                }
                let intervals = group.timeline.drain()
                for r in 0..<n {
                    #expect(intervals.contains { $0.rank == r && $0.kind == .compute }, "rank \(r) has no compute interval, \(what)")
                }
                if n > 1 { #expect(intervals.contains { $0.kind == .copy && $0.bytes > 0 }, "no copy interval, \(what)") }
            }
        }
    }

    /// Time-contiguous layout, 33 channels, no h0 / dFinal, the chunked local path; both
    /// transfer paths.
    @Test(arguments: schemes, TransferRoute.allCases)
    func bdlLayoutWithoutBoundaryStates(algorithm: AllScanAlgorithm, transfer: TransferRoute) async throws {
        let seed = testSeed()
        try await withGroup(ranks: 3, path: transfer) { group in
            let c = ShardedRecurrenceCase(seed: seed, layout: .bdl, batch: 1, length: 301, channels: 33, withBoundaries: false,
                                          device: group.devices[0])
            let recurrence = LinearRecurrence(layout: .bdl, algorithm: .chunked, chunkLength: 16)
            let single = try c.single(group.devices[0], op: LinearRecurrence(layout: .bdl))
            let op = ContextParallelRecurrence(recurrence: recurrence, scheme: .linear(algorithm))
            for bounds in [[0, 150, 301], [0, 1, 300, 301], [0, 97, 98, 301]] {
                let (got, _, _) = try await c.parallel(try group.communicators(first: bounds.count - 1), bounds: bounds, op: op)
                c.check(got, single: single, "\(op.scheme) BDL \(transfer.rawValue) bounds \(bounds)")
            }
        }
    }

    /// Complex values (`ComplexAffineScan` across ranks), both layouts and directions.
    @Test(arguments: LinearRecurrence.Layout.allCases, [false, true])
    func complexValues(layout: LinearRecurrence.Layout, reverse: Bool) async throws {
        let seed = testSeed()
        try await withGroup(ranks: 4) { group in
            let c = ShardedRecurrenceCase(seed: seed, layout: layout, reverse: reverse, complex: true, batch: 2, length: 67, channels: 5,
                                          withBoundaries: true, device: group.devices[0])
            let recurrence = LinearRecurrence(layout: layout, complex: true, reverse: reverse)
            let single = try c.single(group.devices[0], op: recurrence)
            for (k, bounds) in [[0, 67], [0, 1, 67], [0, 20, 21, 67], [0, 16, 33, 50, 67]].enumerated() {
                let op = ContextParallelRecurrence(recurrence: recurrence, scheme: .linear(Self.schemes[k % Self.schemes.count]))
                let n = bounds.count - 1
                let (got, _, outputs) = try await c.parallel(try group.communicators(first: n), bounds: bounds, op: op)
                c.check(got, single: single, "complex \(op.scheme) \(layout) reverse \(reverse) bounds \(bounds)")
                for r in 0..<n {
                    #expect(outputs[r][0].bytesSent == op.expectedBytesSent(rank: r, ranks: n, channels: c.batch * c.channels, backward: false),
                            "complex forward bytes of rank \(r), bounds \(bounds)")
                }
            }
        }
    }

    /// The complex combine alone: the exclusive scan of random complex maps (|a| < 1) equals
    /// the fp64 composition, for 1 to 4 ranks and every algorithm.
    @Test(arguments: schemes)
    func complexAffineScanMatchesTheComposition(algorithm: AllScanAlgorithm) async throws {
        let seed = testSeed()
        let combine = ComplexAffineScan(rows: 5, width: 3)
        let count = combine.rows * (combine.width + 1) * 2
        @Sendable func value(_ rank: Int) -> [Float] {
            var rng = SeededRandom(seed: seed &+ UInt64(rank))
            var v = rng.floats(count)
            for r in 0..<combine.rows {
                v[r * 8] *= 0.7
                v[r * 8 + 1] *= 0.7
            }
            return v
        }
        try await withGroup { group in
            for n in 1...4 {
                let results = try await allScanOnRanks(try group.communicators(first: n), count: count, combine: combine,
                                                       algorithm: algorithm, tag: 60, value)
                for (rank, got) in results.enumerated() {
                    var identity = [Double](repeating: 0, count: count)
                    for r in 0..<combine.rows { identity[r * 8] = 1 }
                    let expected = rank == 0 ? identity : ComplexAffineScan.reference((0..<rank).map(value), width: combine.width)
                    let err = zip(got, expected).map { abs(Double($0) - $1) }.max() ?? .infinity
                    #expect(err < 1e-5, "\(algorithm) ranks \(n) rank \(rank): error \(err), seed \(seed)")
                }
            }
        }
    }

    /// Ranks that disagree on the channels only meet in the scan's messages: every rank
    /// fails (the sizes differ), none waits forever.
    @Test(arguments: schemes)
    func ranksWithDifferentChannelCountsFailInsteadOfHanging(algorithm: AllScanAlgorithm) async throws {
        try await withGroup(ranks: 2) { group in
            let op = ContextParallelRecurrence(scheme: .linear(algorithm))
            do {
                _ = try await onEveryRank(try group.communicators()) { comm in
                    let dev = comm.device, shape = [1, 4, comm.rank == 0 ? 4 : 3]
                    let x = try (0..<3).map { _ in try dev.makeTensor([Float](repeating: 0.5, count: shape.reduce(1, *)), shape: shape) }
                    return try await op.forward(a: x[0], b: x[1], h: x[2], communicator: comm).bytesSent
                }
                Issue.record("\(op.scheme): mismatched ranks did not fail")
            } catch {
                #expect(group.abortError != nil && "\(error)".contains("bytes"), "\(op.scheme): \(error)")
            }
        }
    }

    /// The all-ranks call equals the per-rank calls bit for bit and checks the ranks against
    /// each other before anything starts.
    @Test func allRanksAtOnce() async throws {
        let seed = testSeed()
        try await withGroup(ranks: 3) { group in
            let c = ShardedRecurrenceCase(seed: seed, layout: .bld, reverse: true, batch: 1, length: 40, channels: 9, withBoundaries: true,
                                          device: group.devices[0])
            let bounds = [0, 13, 14, 40]
            let comms = try group.communicators()
            let op = ContextParallelRecurrence(recurrence: LinearRecurrence(layout: .bld, reverse: true), scheme: .linear(.allGather))
            let (want, _, _) = try await c.parallel(comms, bounds: bounds, op: op)
            func tensors(_ x: [Float]?) throws -> [Tensor] {
                try comms.map { comm in
                    let r = comm.rank, lo = bounds[r], hi = bounds[r + 1]
                    return x == nil ? try comm.device.makeTensor(shape: c.shape(hi - lo), dtype: .f32)
                                    : try comm.device.makeTensor(c.slice(x ?? [], bounds: bounds, rank: r), shape: c.shape(hi - lo))
                }
            }
            func states() throws -> [Tensor] { try comms.map { try $0.device.makeTensor(shape: c.stateShape, dtype: .f32) } }
            let a = try tensors(c.a), h = try tensors(nil), final = try states(), incoming = try states()
            let devices = comms.map(\.device)
            let h0 = try devices[2].makeTensor(c.h0 ?? [], shape: c.stateShape)
            _ = try await op.forward(a: a, b: try tensors(c.b), h0: h0, h: h, finalState: final, incoming: incoming, communicators: comms)
            let da = try tensors(nil), db = try tensors(nil), dIncoming = try states()
            _ = try await op.backward(a: a, h: h, incoming: incoming, dh: try tensors(c.dh),
                                      dFinal: try devices[0].makeTensor(c.dFinal ?? [], shape: c.stateShape),
                                      da: da, db: db, dIncoming: dIncoming, communicators: comms)
            #expect(try c.join(try h.map { try $0.readFloats() }, bounds: bounds) == want.h, "h, seed \(seed)")
            #expect(try c.join(try da.map { try $0.readFloats() }, bounds: bounds) == want.da, "da, seed \(seed)")
            #expect(try c.join(try db.map { try $0.readFloats() }, bounds: bounds) == want.db, "db, seed \(seed)")
            #expect(try final[0].readFloats() == want.final && dIncoming[2].readFloats() == want.dh0, "final, dh0, seed \(seed)")

            // Rank 1 with other channels: a typed error before any rank starts.
            func other() throws -> [Tensor] {
                var x = try tensors(nil)
                x[1] = try devices[1].makeTensor(shape: [1, 1, 8], dtype: .f32)
                return x
            }
            do {
                _ = try await op.forward(a: try other(), b: try other(), h: try other(), communicators: comms)
                Issue.record("ranks with other channels: no error")
            } catch let error as VkAttnError {
                #expect("\(error)".contains("a of rank 1"), "\(error)")
            }
            #expect(group.abortError == nil, "a configuration error aborted the group")
        }
    }

    @Test func badConfigurationsAreTypedErrorsBeforeAnythingIsPosted() async throws {
        try await withGroup(ranks: 2) { group in
            let comms = try group.communicators()
            let dev = comms[1].device
            let a = try dev.makeTensor(shape: [1, 5, 3], dtype: .f32), b = try dev.makeTensor(shape: [1, 5, 3], dtype: .f32)
            let h = try dev.makeTensor(shape: [1, 5, 3], dtype: .f32), state = try dev.makeTensor(shape: [1, 3], dtype: .f32)
            let plain = ContextParallelRecurrence()
            func expectError(_ what: String, _ body: () async throws -> Void) async {
                do {
                    try await body()
                    Issue.record("\(what): no error")
                } catch let error as VkAttnError {
                    #expect("\(error)".contains("contextParallel.recurrence") || "\(error)".contains("recurrence"), "\(what): \(error)")
                } catch {
                    Issue.record("\(what): \(error)")
                }
            }
            await expectError("h0 on rank 1") { _ = try await plain.forward(a: a, b: b, h0: state, h: h, communicator: comms[1]) }
            await expectError("complex op with a real shape") {
                _ = try await ContextParallelRecurrence(recurrence: LinearRecurrence(layout: .bld, complex: true))
                    .forward(a: a, b: b, h: h, communicator: comms[1])
            }
            await expectError("h0 on rank 0 of a reversed recurrence") {
                let d0 = comms[0].device
                let x = try (0..<3).map { _ in try d0.makeTensor(shape: [1, 5, 3], dtype: .f32) }
                _ = try await ContextParallelRecurrence(recurrence: LinearRecurrence(layout: .bld, reverse: true))
                    .forward(a: x[0], b: x[1], h0: try d0.makeTensor(shape: [1, 3], dtype: .f32), h: x[2], communicator: comms[0])
            }
            await expectError("segments > rows") {
                _ = try await ContextParallelRecurrence(scheme: .zeco(segments: 4)).forward(a: a, b: b, h: h, communicator: comms[1])
            }
            await expectError("b of another shape") {
                _ = try await plain.forward(a: a, b: try dev.makeTensor(shape: [1, 4, 3], dtype: .f32), h: h, communicator: comms[1])
            }
            await expectError("finalState of another shape") {
                _ = try await plain.forward(a: a, b: b, h: h, finalState: try dev.makeTensor(shape: [3], dtype: .f32), communicator: comms[1])
            }
            await expectError("a tensor of rank 2") {
                _ = try await plain.forward(a: state, b: state, h: state, communicator: comms[1])
            }
            await expectError("dFinal off the last rank") {
                let d0 = comms[0].device
                let x = try (0..<5).map { _ in try d0.makeTensor(shape: [1, 5, 3], dtype: .f32) }
                _ = try await plain.backward(a: x[0], h: x[1], dh: x[2], dFinal: try d0.makeTensor(shape: [1, 3], dtype: .f32),
                                             da: x[3], db: x[4], communicator: comms[0])
            }
            await expectError("no incoming on rank 1") {
                _ = try await plain.backward(a: a, h: h, dh: b, da: try dev.makeTensor(shape: [1, 5, 3], dtype: .f32),
                                             db: try dev.makeTensor(shape: [1, 5, 3], dtype: .f32), communicator: comms[1])
            }
            await expectError("tensor on another device") {
                _ = try await plain.forward(a: a, b: b, h: h, communicator: comms[0])
            }
            #expect(group.abortError == nil, "a configuration error aborted the group")
        }
    }
}
