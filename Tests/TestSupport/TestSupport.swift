// Helpers shared by the test targets.
import Testing
@_exported import VkAttnReference
import VkAttn

/// A seed for random test data: `VKATTN_SEED` when set (to replay a failure), else fresh.
/// Tests put it in every failure message.
public func testSeed() -> UInt64 {
    if let text = ProcessEnvironment.value("VKATTN_SEED"), let seed = UInt64(text) { return seed }
    return UInt64.random(in: 0...UInt64.max)
}

/// Runs `body` with a new device on the default (or `VKATTN_DEVICE`) physical device, with
/// validation as `VKATTN_VALIDATION` says, and records a test failure for every validation
/// message, including those about objects still alive when the device and instance are
/// destroyed (the device is released before the log is read), and for a device that outlives
/// the test: some buffer, stream or semaphore made on it was leaked (kept alive past `body`),
/// which keeps the device (and its leak) from ever reaching the validation layer.
@discardableResult
public func withDevice<R>(
    sourceLocation: SourceLocation = #_sourceLocation,
    _ body: (Device) throws -> R
) throws -> R {
    let log = ValidationLog()
    let result: R
    weak var survivor: Device?
    do {
        let device = try Device(log: log)
        survivor = device
        result = try body(device)
    }
    expectReleased([WeakDevice(survivor)], sourceLocation: sourceLocation)
    expectClean(log, sourceLocation: sourceLocation)
    return result
}

/// The objects still alive on a device that `body` made and that should have died with it, or
/// nil when it did die (what `withDevice` checks; tests of the check itself call this).
public func deviceLeaks(_ body: (Device) throws -> Void) throws -> [String: Int]? {
    weak var survivor: Device?
    do {
        let device = try Device(validation: .off)
        survivor = device
        try body(device)
    }
    return survivor?.liveObjects
}

/// The async form of `withDevice`, for tests that use the device from several tasks.
@discardableResult
public func withDevice<R: Sendable>(
    sourceLocation: SourceLocation = #_sourceLocation,
    _ body: (Device) async throws -> R
) async throws -> R {
    let log = ValidationLog()
    let result: R
    weak var survivor: Device?
    do {
        let device = try Device(log: log)
        survivor = device
        result = try await body(device)
    }
    expectReleased([WeakDevice(survivor)], sourceLocation: sourceLocation)
    expectClean(log, sourceLocation: sourceLocation)
    return result
}

/// A device held weakly, to see whether anything keeps it alive.
public struct WeakDevice: @unchecked Sendable {
    // Safe: set once at creation; read on the test's own task only.
    public weak var device: Device?
    public init(_ device: Device?) { self.device = device }
}

/// Fails the current test for each device still alive: some buffer, stream or semaphore made
/// on it was leaked past the test.
public func expectReleased(_ devices: [WeakDevice], sourceLocation: SourceLocation = #_sourceLocation) {
    for device in devices.compactMap(\.device) {
        Issue.record("Vulkan objects outlive the test, keeping \(device.label) alive: \(device.liveObjects)", sourceLocation: sourceLocation)
    }
}

/// Fails the current test for each message in `log`.
public func expectClean(_ log: ValidationLog, sourceLocation: SourceLocation = #_sourceLocation) {
    let messages = log.drain()
    #expect(messages.isEmpty, "validation messages:\n\(messages.map(\.description).joined(separator: "\n"))",
            sourceLocation: sourceLocation)
}

/// Whether this run has the validation layer on (`VKATTN_VALIDATION`).
public var validationEnabled: Bool { ValidationOptions.fromEnvironment().enabled }


enum ProcessEnvironment {
    static func value(_ name: String) -> String? {
        #if canImport(Glibc)
        guard let p = getenv(name) else { return nil }
        return String(cString: p)
        #else
        return nil
        #endif
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// Ends the current test as skipped, saying why, when `device` cannot run cooperative-matrix
/// kernels on `input`. With `VKATTN_REQUIRE_COOPMAT=1` (CI's cooperative-matrix leg) that is a
/// failure instead: a skip there must not read as a pass.
public func requireCooperativeMatrix(_ device: Device, input: DType = .f16,
                                     sourceLocation: SourceLocation = #_sourceLocation) throws {
    guard let reason = CooperativeMatrix.unavailableReason(device: device, input: input) else { return }
    if ProcessEnvironment.value("VKATTN_REQUIRE_COOPMAT") == "1" {
        Issue.record("cooperative matrices required (VKATTN_REQUIRE_COOPMAT=1) but unavailable: \(reason)", sourceLocation: sourceLocation)
        return
    }
    try Test.cancel("skipped: \(reason)", sourceLocation: sourceLocation)
}

/// Ends the current (non-parameterized) test as skipped, saying why, when `device` has no
/// cooperative matrices for `input` — even under `VKATTN_REQUIRE_COOPMAT=1`: for types the CI
/// device is not expected to offer (bf16 on lavapipe).
public func skipUnlessCooperativeMatrix(_ device: Device, input: DType, sourceLocation: SourceLocation = #_sourceLocation) throws {
    guard let reason = CooperativeMatrix.unavailableReason(device: device, input: input) else { return }
    try Test.cancel("skipped: \(reason)", sourceLocation: sourceLocation)
}

/// Whether this machine's default device runs cooperative-matrix kernels, asked once: the
/// condition of the cooperative-matrix suites, which are skipped with the reason where not (and
/// run, to fail in `requireCooperativeMatrix`, when `VKATTN_REQUIRE_COOPMAT=1`).
public enum CooperativeMatrixProbe {
    public static let unavailableReason: String? = {
        guard let device = try? Device(validation: .off) else { return "no Vulkan device" }
        return CooperativeMatrix.unavailableReason(device: device)
    }()
    public static var shouldRun: Bool { unavailableReason == nil || ProcessEnvironment.value("VKATTN_REQUIRE_COOPMAT") == "1" }
    public static var skipComment: Comment { Comment(rawValue: "skipped: \(unavailableReason ?? "")") }
}
