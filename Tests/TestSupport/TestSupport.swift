// Helpers shared by the test targets.
import Testing
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
/// destroyed (the device is released before the log is read).
public func withDevice<R>(
    sourceLocation: SourceLocation = #_sourceLocation,
    _ body: (Device) throws -> R
) throws -> R {
    let log = ValidationLog()
    let result: R
    do {
        let device = try Device(log: log)
        result = try body(device)
    }
    expectClean(log, sourceLocation: sourceLocation)
    return result
}

/// The async form of `withDevice`, for tests that use the device from several tasks.
public func withDevice<R: Sendable>(
    sourceLocation: SourceLocation = #_sourceLocation,
    _ body: (Device) async throws -> R
) async throws -> R {
    let log = ValidationLog()
    let result: R
    do {
        let device = try Device(log: log)
        result = try await body(device)
    }
    expectClean(log, sourceLocation: sourceLocation)
    return result
}

/// Fails the current test for each message in `log`.
public func expectClean(_ log: ValidationLog, sourceLocation: SourceLocation = #_sourceLocation) {
    let messages = log.drain()
    #expect(messages.isEmpty, "validation messages:\n\(messages.map(\.description).joined(separator: "\n"))",
            sourceLocation: sourceLocation)
}

/// Whether this run has the validation layer on (`VKATTN_VALIDATION`).
public var validationEnabled: Bool { ValidationOptions.fromEnvironment().enabled }

/// Largest |a - b| / max(|b|, floor) over two arrays, NaN-aware (a NaN anywhere is infinite error).
public func maxRelativeError(_ a: [Float], _ b: [Float], floor: Float = 1e-6) -> Float {
    precondition(a.count == b.count)
    var worst: Float = 0
    for (x, y) in zip(a, b) {
        if x.isNaN || y.isNaN { return .infinity }
        worst = max(worst, abs(x - y) / max(abs(y), floor))
    }
    return worst
}

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
