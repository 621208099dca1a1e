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
    for device in devices.compactMap(\.device) {
        Issue.record("\(device.label) outlives the test, kept alive by \(device.liveObjects)", sourceLocation: sourceLocation)
    }
    expectClean(log, sourceLocation: sourceLocation)
    return result
}

/// A device held weakly, to see whether anything keeps it alive.
struct WeakDevice: @unchecked Sendable {
    // Safe: written once at creation and read on the test's task only.
    weak var device: Device?
    init(_ device: Device) { self.device = device }
}

/// Runs `body` once per communicator, concurrently; aborts the group when one rank fails.
func onRanks<C: Communicator, R: Sendable>(_ comms: [C], _ body: @escaping @Sendable (C) async throws -> R) async throws -> [R] {
    try await onEveryRank(comms, body)
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
