import VkAttn
import VkAttnReference
import VkAttnParallel
import VkAttnMPI

/// The communicator's operations against host references: a ring rotation of point-to-point
/// messages, then all-gather, all-to-all, all-reduce (sum, max) and the affine all-scan, each
/// on MPI's collectives and on the point-to-point defaults (`PointToPoint`).
enum CollectiveChecks {
    static func values(_ seed: UInt64, rank: Int, count: Int) -> [Float] {
        var rng = SeededRandom(seed: seed &+ UInt64(rank) &* 7919)
        return rng.floats(count, in: -1...1)
    }

    static func run(_ comm: MPICommunicator, _ report: Report) async throws {
        try await rotation(comm, report)
        try await gatherAndAllToAll(comm, report, label: "MPI", comm)
        try await gatherAndAllToAll(comm, report, label: "p2p", PointToPoint(comm))
        try await allReduce(comm, report, label: "MPI", comm)
        try await allReduce(comm, report, label: "p2p", PointToPoint(comm))
        for algorithm in [AllScanAlgorithm.allGather, .chain(segments: 1), .chain(segments: 3)] {
            try await affineScan(comm, report, label: "MPI", comm, algorithm: algorithm)
        }
        try await affineScan(comm, report, label: "p2p", PointToPoint(comm), algorithm: .allGather)
    }

    /// Every rank's block travels once around the ring; each rank sums what passes by.
    static func rotation(_ comm: MPICommunicator, _ report: Report) async throws {
        let count = 1009, n = comm.size, r = comm.rank
        let device = comm.device
        let stream = try device.makeStream()
        let mine = values(report.seed, rank: r, count: count)
        let buffers = [try device.makeBuffer(mine), try device.makeBuffer(of: Float.self, count: count)]
        let acc = try device.makeBuffer(mine)
        var received: MPIRequest?, lastSend: MPIRequest?
        var all: [MPIRequest] = []
        for step in 0..<(n - 1) {
            let current = buffers[step % 2], next = buffers[(step + 1) % 2]
            if let received { try comm.complete(received, on: stream) }
            let sent = try comm.send(current.whole, to: (r + 1) % n, tag: 1, after: received.map { [$0] } ?? [], on: stream)
            let incoming = try comm.receive(into: next.whole, from: (r + n - 1) % n, tag: 1, after: lastSend.map { [$0] } ?? [], on: stream)
            try comm.complete(incoming, on: stream)
            try stream.barrier()
            try ParallelKernels.elementwise(x: next.whole, y: acc.whole, count: count, op: .sum, on: stream)
            try stream.barrier()
            lastSend = sent
            received = incoming
            all += [sent, incoming]
        }
        if let lastSend { try comm.complete(lastSend, on: stream) }
        try await finish(stream)
        try await comm.wait(all)
        var expected = [Double](repeating: 0, count: count)
        for q in 0..<n { for (i, x) in values(report.seed, rank: q, count: count).enumerated() { expected[i] += Double(x) } }
        report.expect("p2p ring rotation x\(n)", error: maxAbsError(try acc.read(Float.self, count: count), expected), bound: 1e-5)
    }

    static func gatherAndAllToAll<C: Communicator>(_ mpi: MPICommunicator, _ report: Report, label: String, _ comm: C) async throws {
        let count = 37, n = comm.size, r = comm.rank
        let device = comm.device
        let stream = try device.makeStream()
        let mine = try device.makeBuffer(values(report.seed, rank: r, count: count))
        let gathered = try device.makeBuffer([Float](repeating: .nan, count: count * n))
        let blocks = try (0..<n).map { try gathered.slice(of: Float.self, first: $0 * count, count: count) }
        var requests = try comm.allGather(mine.whole, into: blocks, tag: 10, on: stream)
        // All-to-all with unequal blocks: rank r sends s + 1 + r values to rank s.
        func block(from q: Int, to s: Int) -> [Float] { Array(values(report.seed, rank: 100 + q * 17 + s, count: s + 1 + q)) }
        let sendBuffers = try (0..<n).map { try device.makeBuffer(block(from: r, to: $0)) }
        let receiveBuffers = try (0..<n).map { try device.makeBuffer([Float](repeating: .nan, count: r + 1 + $0)) }
        requests += try comm.allToAll(sendBuffers.map(\.whole), into: receiveBuffers.map(\.whole), tag: 11, on: stream)
        try comm.complete(requests, on: stream)
        try await finish(stream)
        try await comm.wait(requests)
        let want = (0..<n).flatMap { values(report.seed, rank: $0, count: count) }.map(Double.init)
        report.expect("allGather (\(label)) x\(n)", error: maxAbsError(try gathered.read(Float.self, count: count * n), want), bound: 0)
        var worst = 0.0
        for q in 0..<n {
            worst = max(worst, maxAbsError(try receiveBuffers[q].read(Float.self, count: r + 1 + q), block(from: q, to: r).map(Double.init)))
        }
        report.expect("allToAll (\(label)) x\(n)", error: worst, bound: 0)
    }

    static func allReduce<C: Communicator>(_ mpi: MPICommunicator, _ report: Report, label: String, _ comm: C) async throws {
        let count = 301, n = comm.size
        let device = comm.device
        let stream = try device.makeStream()
        let sum = try device.makeBuffer(values(report.seed, rank: comm.rank, count: count))
        let maxBuffer = try device.makeBuffer(values(report.seed, rank: comm.rank, count: count))
        let scratch = try device.makeBuffer(of: Float.self, count: count)
        var requests = try comm.allReduce(sum.whole, count: count, op: .sum, scratch: scratch.whole, tag: 20, on: stream)
        requests += try comm.allReduce(maxBuffer.whole, count: count, op: .max, scratch: scratch.whole, tag: 30, on: stream)
        try await finish(stream)
        try await comm.wait(requests)
        var wantSum = [Double](repeating: 0, count: count), wantMax = [Double](repeating: -.infinity, count: count)
        for q in 0..<n {
            for (i, x) in values(report.seed, rank: q, count: count).enumerated() {
                wantSum[i] += Double(x)
                wantMax[i] = Swift.max(wantMax[i], Double(x))
            }
        }
        let gotSum = try sum.read(Float.self, count: count)
        report.expect("allReduce sum (\(label)) x\(n)", error: maxAbsError(gotSum, wantSum), bound: 1e-5)
        report.expect("allReduce max (\(label)) x\(n)", error: maxAbsError(try maxBuffer.read(Float.self, count: count), wantMax), bound: 0)
        // Every rank must hold the same bits (tree decode relies on it).
        let all = try await mpi.hostAllGather(gotSum.withUnsafeBytes { Array($0) })
        report.expect("allReduce sum (\(label)) identical on every rank", all.allSatisfy { $0 == all[0] })
    }

    static func affineScan<C: Communicator>(_ mpi: MPICommunicator, _ report: Report, label: String, _ comm: C,
                                            algorithm: AllScanAlgorithm) async throws {
        let combine = AffineScan(rows: 7, width: 5)
        let count = combine.rows * (combine.width + 1), n = comm.size
        func value(_ rank: Int) -> [Float] {
            var v = values(report.seed, rank: 200 + rank, count: count)
            for row in 0..<combine.rows { v[row * 6] = 0.5 + abs(v[row * 6]) / 2 }  // decays in (0.5, 1)
            return v
        }
        let device = comm.device
        let stream = try device.makeStream()
        let mine = try device.makeBuffer(value(comm.rank))
        let result = try device.makeBuffer([Float](repeating: .nan, count: count))
        let scratch = try device.makeBuffer(of: Float.self, count: count * (n + 1))
        let requests = try comm.allScan(mine.whole, into: result.whole, combine: combine, algorithm: algorithm,
                                        scratch: scratch.whole, tag: 40, on: stream)
        try await finish(stream)
        try await comm.wait(requests)
        var identity = [Double](repeating: 0, count: count)
        for row in 0..<combine.rows { identity[row * 6] = 1 }
        let want = comm.rank == 0 ? identity : AffineScan.reference((0..<comm.rank).map(value), width: combine.width)
        report.expect("allScan affine \(algorithm) (\(label)) x\(n)", error: maxAbsError(try result.read(Float.self, count: count), want), bound: 1e-5)
    }
}
