import VkAttn
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// N ranks, each a logical Vulkan device of its own: distinct physical devices where the
/// machine has enough of them, else several logical devices on one physical device (so that
/// every scheduler runs on lavapipe and on a single GPU). Owns the in-process fabric that
/// moves bytes between them, the per-device GPU clocks, and the timeline.
public final class DeviceGroup: Sendable {
    /// Host relays (the in-process transfers) still running in this process, over every group.
    public static var transfersInFlight: Int { LocalFabric.relaysInFlight.load(ordering: .sequentiallyConsistent) }

    /// Waits until every host relay of every group in this process has ended. A relay lets
    /// go of the message's buffers and semaphores a moment after the ranks saw the message
    /// arrive; call this before checking that devices were released (a leak check, a test's
    /// teardown, the end of a benchmark).
    /// - Parameter timeoutNanoseconds: How long to wait at most.
    /// - Returns: Whether every relay ended in time.
    @discardableResult
    public static func waitForTransfers(timeoutNanoseconds: UInt64 = 10_000_000_000) -> Bool {
        waitUntil(timeoutNanoseconds) { transfersInFlight == 0 }
    }

    /// This group's host relays still running.
    public var transfersInFlight: Int { fabric.relays.load(ordering: .sequentiallyConsistent) }

    /// Waits until every host relay of this group has ended (see the static form).
    /// - Parameter timeoutNanoseconds: How long to wait at most.
    /// - Returns: Whether every relay ended in time.
    @discardableResult
    public func waitForTransfers(timeoutNanoseconds: UInt64 = 10_000_000_000) -> Bool {
        Self.waitUntil(timeoutNanoseconds) { transfersInFlight == 0 }
    }

    private static func waitUntil(_ timeoutNanoseconds: UInt64, _ done: () -> Bool) -> Bool {
        let deadline = HostClock.nanoseconds() &+ timeoutNanoseconds
        while !done() {
            if HostClock.nanoseconds() >= deadline { return false }
            var pause = timespec(tv_sec: 0, tv_nsec: 50_000)
            nanosleep(&pause, nil)
        }
        return true
    }

    /// How the ranks were placed.
    public enum Placement: String, Sendable, Hashable, Codable {
        /// Each rank on a physical device of its own.
        case distinctPhysicalDevices = "distinct-physical"
        /// All ranks are logical devices of one physical device.
        case sharedPhysicalDevice = "shared-physical"
    }

    /// One device per rank, in rank order.
    public let devices: [Device]
    /// Where the ranks' devices live.
    public let placement: Placement
    /// Each rank's GPU clock, mapped to the shared host clock.
    public let clocks: [GPUClock]
    /// The compute and copy intervals every rank records.
    public let timeline: ParallelTimeline
    let fabric: LocalFabric

    /// The number of ranks.
    public var ranks: Int { devices.count }
    /// How bytes travel between the ranks' devices.
    public var route: TransferRoute { fabric.route }

    /// `VKATTN_RANKS`, when set to a positive integer.
    public static var ranksFromEnvironment: Int? {
        guard let raw = getenv("VKATTN_RANKS"), let n = Int(String(cString: raw)), n > 0 else { return nil }
        return n
    }

    /// Creates `ranks` logical devices. `physicalDevices` pins them (round-robin); without it
    /// the group takes distinct usable GPUs when there are at least `ranks` of them and
    /// `VKATTN_DEVICE` is unset, else `ranks` logical devices on the instance's selected device.
    /// `path` forces a transfer path; by default host-mapped when every device's memory is
    /// host-visible, else imported-host where every device imports host allocations
    /// (VK_EXT_external_memory_host), else staged.
    /// - Parameters:
    ///   - ranks: The number of ranks; at least 1.
    ///   - instance: The instance whose physical devices are used.
    ///   - physicalDevices: Devices to place the ranks on, round-robin; nil decides as above.
    ///   - route: A transfer route to force; nil decides as above.
    /// - Throws: `VkAttnError.invalidValue(op:operand:reason:)` for fewer than one rank or an
    ///   empty device list; `VkAttnError.unsupported(op:reason:)` for a forced path the devices
    ///   cannot take; the errors of creating the devices and calibrating their clocks.
    public init(ranks: Int, instance: Instance, physicalDevices: [PhysicalDevice]? = nil, route: TransferRoute? = nil) throws {
        let op = "parallel.deviceGroup"
        guard ranks >= 1 else {
            throw VkAttnError.invalidValue(op: op, operand: "ranks", reason: "\(ranks) must be at least 1")
        }
        var chosen: [PhysicalDevice]
        if let physicalDevices {
            guard !physicalDevices.isEmpty else {
                throw VkAttnError.invalidValue(op: op, operand: "physicalDevices", reason: "is empty")
            }
            chosen = (0..<ranks).map { physicalDevices[$0 % physicalDevices.count] }
        } else {
            let gpus = instance.physicalDevices.filter { $0.capabilities.unsupportedReason == nil && $0.capabilities.type != .cpu }
            if gpus.count >= ranks && getenv(EnvironmentKey.device) == nil {
                chosen = Array(gpus.prefix(ranks))
            } else {
                let one = try instance.selectDevice()
                chosen = [PhysicalDevice](repeating: one, count: ranks)
            }
        }
        placement = Set(chosen.map(\.index)).count == ranks ? .distinctPhysicalDevices : .sharedPhysicalDevice
        let devices = try chosen.map { try Device(physicalDevice: $0) }
        self.devices = devices
        self.clocks = try devices.map { try GPUClock.calibrate($0) }
        let mapped = try devices.allSatisfy { try $0.makeBuffer(byteCount: 16).isHostVisible }
        if route == .hostMapped && !mapped {
            throw VkAttnError.unsupported(op: op, reason: "the host-mapped path needs host-visible device memory, which \(devices.first { !((try? $0.makeBuffer(byteCount: 16).isHostVisible) ?? false) }?.label ?? "a device") lacks")
        }
        let importing = devices.allSatisfy { $0.enabled.externalMemoryHost }
        if route == .importedHost && !importing {
            throw VkAttnError.unsupported(op: op, reason: "the imported-host path needs VK_EXT_external_memory_host, which \(devices.first { !$0.enabled.externalMemoryHost }?.label ?? "a device") does not offer")
        }
        timeline = ParallelTimeline()
        fabric = LocalFabric(devices: devices, clocks: clocks, route: route ?? (mapped ? .hostMapped : importing ? .importedHost : .staged),
                             timeline: timeline)
    }

    /// A group on a new instance (validation per `VKATTN_VALIDATION`).
    /// - Parameters:
    ///   - ranks: The number of ranks; at least 1.
    ///   - route: A transfer route to force; nil decides.
    ///   - log: Where the new instance's validation messages are collected.
    /// - Throws: The errors of `Instance.init(validation:log:)` and
    ///   ``init(ranks:instance:physicalDevices:route:)``.
    public convenience init(ranks: Int, route: TransferRoute? = nil, log: ValidationLog = ValidationLog()) throws {
        try self.init(ranks: ranks, instance: Instance(log: log), route: route)
    }

    /// One communicator per rank, over all ranks of the group.
    /// - Returns: Rank r's communicator at index r.
    /// - Throws: The errors of making the communicators.
    public func communicators() throws -> [LocalCommunicator] {
        try (0..<ranks).map { try LocalCommunicator(fabric: fabric, rank: $0, members: Array(0..<ranks), context: 0) }
    }

    /// Communicators over the first `count` ranks (tests run 1...N ranks on one group).
    /// - Parameter count: The ranks, in 1...ranks.
    /// - Returns: Rank r's communicator at index r, a group of `count` ranks.
    /// - Throws: `VkAttnError.invalidValue(op:operand:reason:)` for a count outside 1...ranks.
    public func communicators(first count: Int) throws -> [LocalCommunicator] {
        guard count >= 1, count <= ranks else {
            throw VkAttnError.invalidValue(op: "DeviceGroup.communicators", operand: "count", reason: "\(count) is outside 1...\(ranks)")
        }
        let id = fabric.context(.init(parent: 0, members: Array(0..<count), ordinal: -1))
        return try (0..<count).map { try LocalCommunicator(fabric: fabric, rank: $0, members: Array(0..<count), context: count == ranks ? 0 : id) }
    }

    /// Bytes and messages per rank since the last reset.
    public var traffic: [RankTraffic] { (0..<ranks).map { fabric.traffic($0) } }

    /// Sets every rank's traffic back to zero.
    public func resetTraffic() { fabric.resetTraffic() }

    /// The error a rank aborted the group with (an aborted group stays aborted).
    public var abortError: (any Error)? { fabric.abortError }
}
