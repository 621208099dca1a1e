import Testing
import VkAttn
import VkAttnParallel
import TestSupport

/// The in-process communicator: point-to-point rotation, all-gather, all-to-all,
/// all-reduce, all-scan, for 1 to 4 ranks and every transfer path; errors and abort.
@Suite("Parallel: communicator")
struct ParallelCommunicatorTests {
    static let paths: [TransferRoute] = [.hostMapped, .staged, .importedHost]

    static func values(_ seed: UInt64, rank: Int, count: Int) -> [Float] {
        var rng = SeededRandom(seed: seed &+ UInt64(rank) &* 7919)
        return rng.floats(count, in: -1...1)
    }

    @Test(arguments: paths)
    func ringRotationAccumulatesEveryRank(path: TransferRoute) async throws {
        let seed = testSeed()
        let count = 1000
        try await withGroup(path: path) { group in
            for n in 1...4 {
                let comms = try group.communicators(first: n)
                let sums = try await onEveryRank(comms) { comm in
                    let device = comm.device
                    let stream = try device.makeStream()
                    let mine = Self.values(seed, rank: comm.rank, count: count)
                    let buffers = [try device.makeBuffer(mine), try device.makeBuffer(of: Float.self, count: count)]
                    let acc = try device.makeBuffer(mine)
                    var previousSend: (any CommunicationRequest)?
                    var lastSend: LocalRequest?
                    var received: LocalRequest?
                    for step in 0..<(comm.size - 1) {
                        let current = buffers[step % 2], next = buffers[(step + 1) % 2]
                        if let received { try comm.complete(received, on: stream) }
                        let sent = try comm.send(current.whole, to: (comm.rank + 1) % comm.size, tag: 1,
                                                 after: received.map { [$0] } ?? [], on: stream)
                        let incoming = try comm.receive(into: next.whole, from: (comm.rank + comm.size - 1) % comm.size, tag: 1,
                                                        after: lastSend.map { [$0] } ?? [], on: stream)
                        try comm.complete(incoming, on: stream)
                        try stream.barrier()
                        try ParallelKernels.elementwise(x: next.whole, y: acc.whole, count: count, op: .sum, on: stream)
                        try stream.barrier()
                        previousSend = lastSend
                        lastSend = sent
                        received = incoming
                    }
                    _ = previousSend
                    if let lastSend { try comm.complete(lastSend, on: stream) }
                    try await finish(stream)
                    if let lastSend { try await lastSend.wait() }
                    if let received { try await received.wait() }
                    return try acc.read(Float.self, count: count)
                }
                var expected = [Double](repeating: 0, count: count)
                for r in 0..<n { for (i, x) in Self.values(seed, rank: r, count: count).enumerated() { expected[i] += Double(x) } }
                for (rank, sum) in sums.enumerated() {
                    let err = zip(sum, expected).map { abs(Double($0) - $1) }.max() ?? 0
                    #expect(err < 1e-5, "ranks \(n) rank \(rank) \(path): error \(err), seed \(seed)")
                }
            }
        }
    }
}

extension ParallelCommunicatorTests {
    @Test(arguments: paths)
    func allGatherAndAllToAll(path: TransferRoute) async throws {
        let seed = testSeed()
        let count = 37
        try await withGroup(path: path) { group in
            for n in 1...4 {
                let comms = try group.communicators(first: n)
                let results = try await onEveryRank(comms) { comm in
                    let device = comm.device, size = comm.size
                    let stream = try device.makeStream()
                    let mine = try device.makeBuffer(Self.values(seed, rank: comm.rank, count: count))
                    let gathered = try device.makeBuffer(of: Float.self, count: count * size)
                    let blocks = try (0..<size).map { try gathered.slice(of: Float.self, first: $0 * count, count: count) }
                    var requests = try comm.allGather(mine.whole, into: blocks, tag: 10, on: stream)
                    // All-to-all: block s of rank r is values(r)[s ...] shifted by s (distinct per pair).
                    let sendValues = (0..<size).flatMap { s in Self.values(seed, rank: 100 + comm.rank * 8 + s, count: count) }
                    let sendBuffer = try device.makeBuffer(sendValues)
                    let exchanged = try device.makeBuffer(of: Float.self, count: count * size)
                    requests += try comm.allToAll(try (0..<size).map { try sendBuffer.slice(of: Float.self, first: $0 * count, count: count) },
                                                  into: try (0..<size).map { try exchanged.slice(of: Float.self, first: $0 * count, count: count) },
                                                  tag: 11, on: stream)
                    try comm.complete(requests, on: stream)
                    try await finish(stream)
                    try await comm.wait(requests)
                    return (try gathered.read(Float.self, count: count * size), try exchanged.read(Float.self, count: count * size))
                }
                for (rank, (gathered, exchanged)) in results.enumerated() {
                    let expectedGather = (0..<n).flatMap { Self.values(seed, rank: $0, count: count) }
                    let expectedA2A = (0..<n).flatMap { s in Self.values(seed, rank: 100 + s * 8 + rank, count: count) }
                    #expect(gathered == expectedGather, "all-gather ranks \(n) rank \(rank) \(path) seed \(seed)")
                    #expect(exchanged == expectedA2A, "all-to-all ranks \(n) rank \(rank) \(path) seed \(seed)")
                }
            }
        }
    }

    @Test(arguments: paths)
    func allReduceSumAndMaxAgreeOnEveryRank(path: TransferRoute) async throws {
        let seed = testSeed()
        let count = 301
        try await withGroup(path: path) { group in
            for n in 1...4 {
                let comms = try group.communicators(first: n)
                let results = try await onEveryRank(comms) { comm in
                    let device = comm.device
                    let stream = try device.makeStream()
                    let sum = try device.makeBuffer(Self.values(seed, rank: comm.rank, count: count))
                    let max = try device.makeBuffer(Self.values(seed, rank: comm.rank, count: count))
                    let scratch = try device.makeBuffer(of: Float.self, count: count)
                    var requests = try comm.allReduce(sum.whole, count: count, op: .sum, scratch: scratch.whole, tag: 20, on: stream)
                    requests += try comm.allReduce(max.whole, count: count, op: .max, scratch: scratch.whole, tag: 30, on: stream)
                    try await finish(stream)
                    try await comm.wait(requests)
                    return (try sum.read(Float.self, count: count), try max.read(Float.self, count: count))
                }
                var expectedSum = [Double](repeating: 0, count: count)
                var expectedMax = [Float](repeating: -.infinity, count: count)
                for r in 0..<n {
                    for (i, x) in Self.values(seed, rank: r, count: count).enumerated() {
                        expectedSum[i] += Double(x)
                        expectedMax[i] = Swift.max(expectedMax[i], x)
                    }
                }
                for (rank, (sum, max)) in results.enumerated() {
                    let err = zip(sum, expectedSum).map { abs(Double($0) - $1) }.max() ?? 0
                    #expect(err < 1e-5, "sum ranks \(n) rank \(rank) \(path): error \(err), seed \(seed)")
                    #expect(sum == results[0].0, "ranks disagree bitwise, ranks \(n) rank \(rank) seed \(seed)")
                    #expect(max == expectedMax, "max ranks \(n) rank \(rank) \(path) seed \(seed)")
                }
            }
        }
    }

    @Test(arguments: [AllScanAlgorithm.chain(segments: 1), .chain(segments: 3), .allGather])
    func allScanOfAffineMapsMatchesTheComposition(algorithm: AllScanAlgorithm) async throws {
        let seed = testSeed()
        let combine = AffineScan(rows: 7, width: 5)
        let count = combine.rows * (combine.width + 1)
        @Sendable func value(_ rank: Int) -> [Float] {
            var v = Self.values(seed, rank: 200 + rank, count: count)
            for r in 0..<combine.rows { v[r * 6] = 0.5 + abs(v[r * 6]) / 2 }  // decays in (0.5, 1)
            return v
        }
        try await withGroup { group in
            for n in 1...4 {
                let results = try await allScanOnRanks(try group.communicators(first: n), count: count, combine: combine,
                                                       algorithm: algorithm, tag: 40, value)
                for (rank, got) in results.enumerated() {
                    var identity = [Double](repeating: 0, count: count)
                    for r in 0..<combine.rows { identity[r * 6] = 1 }
                    let expected = rank == 0 ? identity : AffineScan.reference((0..<rank).map(value), width: combine.width)
                    let err = zip(got, expected).map { abs(Double($0) - $1) }.max() ?? .infinity
                    #expect(err < 1e-5, "\(algorithm) ranks \(n) rank \(rank): error \(err), seed \(seed)")
                }
            }
        }
    }

    /// Without a path asked for: host-mapped where every device's memory is host-visible (no
    /// GPU copies needed), else imported-host where every device imports host memory, else staged.
    @Test func defaultPathFollowsTheDevices() async throws {
        try await withGroup(ranks: 2) { group in
            let mapped = try group.devices.allSatisfy { try $0.makeBuffer(byteCount: 16).isHostVisible }
            let importing = group.devices.allSatisfy { $0.capabilities.externalMemoryHost }
            #expect(group.route == (mapped ? .hostMapped : importing ? .importedHost : .staged), "\(group.route)")
            let comms = try group.communicators()
            #expect(comms.allSatisfy { $0.route == group.route })
        }
    }

    @Test(arguments: paths)
    func mismatchedSizesFailBothSidesAndBadPeersAreTypedErrors(path: TransferRoute) async throws {
        try await withGroup(ranks: 2, path: path) { group in
            let comms = try group.communicators()
            let outcomes = try await onEveryRank(comms) { comm -> String in
                let stream = try comm.device.makeStream()
                #expect(throws: VkAttnError.self) {
                    _ = try comm.send(try comm.device.makeBuffer(byteCount: 16).whole, to: 2, tag: 0, on: stream)
                }
                let buffer = try comm.device.makeBuffer(byteCount: comm.rank == 0 ? 64 : 32)
                let request = comm.rank == 0 ? try comm.send(buffer.whole, to: 1, tag: 0, on: stream)
                                             : try comm.receive(into: buffer.whole, from: 0, tag: 0, on: stream)
                try comm.complete(request, on: stream)
                try await finish(stream)
                do {
                    try await request.wait()
                    return "completed"
                } catch let error as VkAttnError {
                    return "\(error)"
                }
            }
            #expect(outcomes.allSatisfy { $0.contains("64 bytes") && $0.contains("32 bytes") }, "\(outcomes)")
        }
    }

    @Test func abortReleasesAGPUWaitingOnAMessageThatNeverComes() async throws {
        try await withGroup(ranks: 2) { group in
            let comm = try group.communicators()[0]
            let stream = try comm.device.makeStream()
            let buffer = try comm.device.makeBuffer(byteCount: 64)
            let request = try comm.receive(into: buffer.whole, from: 1, tag: 5, on: stream)
            try comm.complete(request, on: stream)
            try stream.fill(buffer.whole, word: 0)
            let submission = try stream.submit()
            try await Task.sleep(nanoseconds: 10_000_000)
            #expect(!submission.isComplete)
            struct Stop: Error {}
            comm.abort(Stop())
            try await finish(stream)
            await #expect(throws: Stop.self) { try await request.wait() }
            #expect(throws: Stop.self) { _ = try comm.send(buffer.whole, to: 1, tag: 5, on: stream) }
        }
    }
}
