import Testing
import VkAttn
import VkAttnParallel
import TestSupport

/// Runs `body` with a device group of `ranks` logical devices (validation per
/// VKATTN_VALIDATION) and fails the test on any validation message.
func withGroup<R: Sendable>(ranks: Int = 4, path: TransferRoute? = nil,
                            sourceLocation: SourceLocation = #_sourceLocation,
                            _ body: (DeviceGroup) async throws -> R) async throws -> R {
    let log = ValidationLog()
    let result: R
    do {
        let group = try DeviceGroup(ranks: ranks, route: path, log: log)
        result = try await body(group)
    }
    expectClean(log, sourceLocation: sourceLocation)
    return result
}

/// Runs `body` once per communicator, concurrently; aborts the group when one rank fails.
func onRanks<C: Communicator, R: Sendable>(_ comms: [C], _ body: @escaping @Sendable (C) async throws -> R) async throws -> [R] {
    try await withThrowingTaskGroup(of: (Int, R).self) { tasks in
        for comm in comms {
            tasks.addTask {
                do {
                    return (comm.rank, try await body(comm))
                } catch {
                    comm.abort(error)
                    throw error
                }
            }
        }
        var results = [R?](repeating: nil, count: comms.count)
        for try await (rank, value) in tasks { results[rank] = value }
        return results.compactMap { $0 }
    }
}

/// Every rank's exclusive all-scan of its `value(rank)` (`count` floats) over `comms`, read back.
func allScanOnRanks<C: Communicator, S: ScanCombine>(_ comms: [C], count: Int, combine: S, algorithm: AllScanAlgorithm, tag: Int,
                                                     _ value: @escaping @Sendable (Int) -> [Float]) async throws -> [[Float]] {
    try await onRanks(comms) { comm in
        let device = comm.device
        let stream = try device.makeStream()
        let mine = try device.makeBuffer(value(comm.rank))
        let result = try device.makeBuffer([Float](repeating: .nan, count: count))
        let scratch = try device.makeBuffer(of: Float.self, count: count * (comm.size + 1))
        let requests = try comm.allScan(mine.whole, into: result.whole, combine: combine, algorithm: algorithm,
                                        scratch: scratch.whole, tag: tag, on: stream)
        try await finish(stream)
        try await comm.wait(requests)
        return try result.read(Float.self, count: count)
    }
}

/// Submits `stream`, waits for it without blocking a pool thread, then synchronizes it.
func finish(_ stream: Stream) async throws {
    try await stream.completion()
}
