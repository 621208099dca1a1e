import Testing
import VkAttn
import VkAttnParallel
import TestSupport

/// Runs `body` with a device group of `ranks` logical devices (validation per
/// VKATTN_VALIDATION) and fails the test on any validation message, and on a device of the
/// group that outlives it once every transfer ended (a leaked buffer, stream or semaphore).
func withGroup<R: Sendable>(ranks: Int = 4, path: TransferRoute? = nil,
                            sourceLocation: SourceLocation = #_sourceLocation,
                            _ body: (DeviceGroup) async throws -> R) async throws -> R {
    let log = ValidationLog()
    let result: R
    let devices: [WeakDevice]
    do {
        let group = try DeviceGroup(ranks: ranks, route: path, log: log)
        devices = group.devices.map(WeakDevice.init)
        result = try await body(group)
        #expect(group.waitForTransfers(), "\(group.transfersInFlight) host transfers still running", sourceLocation: sourceLocation)
    }
    // A rank's child task can still be tearing down its closure (and the tensors it captured)
    // on another thread just after the group handed its result back: give that a moment. A
    // real leak outlives the wait.
    for _ in 0..<200 where devices.contains(where: { $0.device != nil }) {
        try await Task.sleep(nanoseconds: 5_000_000)
    }
    expectReleased(devices, sourceLocation: sourceLocation)
    expectClean(log, sourceLocation: sourceLocation)
    return result
}

/// Every rank's exclusive all-scan of its `value(rank)` (`count` floats) over `comms`, read back.
func allScanOnRanks<C: Communicator, S: ScanCombine>(_ comms: [C], count: Int, combine: S, algorithm: AllScanAlgorithm, tag: Int,
                                                     _ value: @escaping @Sendable (Int) -> [Float]) async throws -> [[Float]] {
    try await onEveryRank(comms) { comm in
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
