import ArgumentParser
import Foundation
import Synchronization
import VkAttn
import VkAttnParallel

/// What a run leaves behind, checked after the command returned and every device it made was
/// released: validation messages raised while devices and instances were destroyed (reports
/// drain the logs earlier, before that teardown) and devices still alive because some buffer,
/// stream or semaphore was leaked. Either one fails the run (exit status 1).
enum BenchTeardown {
    private struct WeakDevice: @unchecked Sendable {
        // Safe: a weak reference read and written only under `state`'s lock.
        weak var device: Device?
    }
    private static let state = Mutex<(logs: [ValidationLog], devices: [WeakDevice])>(([], []))

    /// A validation log whose late messages are checked at the end of the run.
    static func log() -> ValidationLog {
        let log = ValidationLog()
        state.withLock { $0.logs.append(log) }
        return log
    }

    /// Devices that must be gone by the end of the run.
    static func watch(_ devices: [Device]) {
        state.withLock { $0.devices += devices.map { WeakDevice(device: $0) } }
    }

    /// Prints what the teardown found; false when anything was found.
    static func finish() -> Bool {
        // In-process transfers end on their own tasks a moment after the ranks saw them land;
        // until then they hold the message's buffers (and devices).
        if !DeviceGroup.waitForTransfers() {
            FileHandle.standardError.write(Data("error: \(DeviceGroup.transfersInFlight) host transfers still running at the end of the run\n".utf8))
            return false
        }
        // The tasks that ran a command (`blocking`) signal their result before they end, and
        // release what their closures captured only as they end: give them a moment (under
        // load, seconds) before calling a live device a leak. A real leak outlives the wait.
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline, state.withLock({ $0.devices.contains { $0.device != nil } }) {
            Thread.sleep(forTimeInterval: 0.01)
        }
        let (logs, devices) = state.withLock { ($0.logs, $0.devices) }
        var clean = true
        for message in logs.flatMap({ $0.drain() }) {
            FileHandle.standardError.write(Data("validation (teardown): \(message)\n".utf8))
            clean = false
        }
        for device in devices.compactMap(\.device) {
            FileHandle.standardError.write(Data("error: \(device.label) outlives the run, kept alive by \(device.liveObjects)\n".utf8))
            clean = false
        }
        return clean
    }
}
