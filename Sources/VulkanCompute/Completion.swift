import CVulkan

// Waiting for the GPU from async code.
//
// A task must not block a thread of the cooperative pool for the GPU's duration: the pool has
// one thread per core, so on a two-core machine two blocked waits stall every other task
// (including a host copy the GPU work may itself be waiting on: a deadlock). The wait therefore
// polls the queue's timeline counter (vkGetSemaphoreCounterValue, a cheap read that never
// blocks) and sleeps between polls with Task.sleep, which frees the thread.
//
// Why not a dedicated waiter thread in vkWaitSemaphores: one thread per wait does not scale to
// many concurrent waits, and one shared thread per device would need a host-signaled semaphore
// to wake it whenever a wait is added or cancelled, plus bookkeeping to resume the right
// continuations; cancellation would have to reach into it. Polling keeps cancellation and
// timeouts trivial (Task.sleep throws CancellationError; the deadline is checked between
// polls) at the cost of at most `Submission.maxPollNanoseconds` of latency after the GPU
// finishes and a few thousand cheap wake-ups per second during long waits.

extension Submission {
    /// The first sleep between polls; it doubles up to `maxPollNanoseconds`.
    static let firstPollNanoseconds: UInt64 = 5_000
    /// The longest sleep between polls: the most a finished submission waits to be noticed
    /// (short enough for the multi-device pipelines, whose steps last milliseconds).
    static let maxPollNanoseconds: UInt64 = 200_000

    /// Waits until the GPU has finished this submission, suspending the task instead of
    /// blocking its thread (see the note at the top of Completion.swift).
    ///
    /// Cancellation ends the wait, not the GPU work: the work still runs to completion, and
    /// whatever it uses stays alive, held by the stream that recorded it until that stream
    /// synchronizes (or, if it is released first, until its deinit has waited for the GPU).
    /// A cancelled wait can be repeated, or replaced by `Stream.synchronize()`.
    ///
    /// - Parameters:
    ///   - timeoutNanoseconds: how long to wait at most (`.max`: no limit).
    ///   - check: called between polls; an error it throws ends the wait with that error (how
    ///     a transport abandons waits when a peer failed).
    ///   - isolation: the caller's actor; the wait runs there, so non-Sendable state captured
    ///     by `check` never crosses an isolation boundary.
    /// - Throws: `CancellationError` when the task is cancelled before the GPU finished,
    ///   `VulkanError.timeout` when `timeoutNanoseconds` passed first, `VulkanError.call` when
    ///   the counter cannot be read (`isDeviceLost` after a device loss), or `check`'s error.
    public func completion(timeoutNanoseconds: UInt64 = .max, check: () throws -> Void = {},
                           isolation: isolated (any Actor)? = #isolation) async throws {
        let clock = ContinuousClock()
        let deadline = timeoutNanoseconds == .max
            ? nil : clock.now.advanced(by: .nanoseconds(Int64(clamping: timeoutNanoseconds)))
        var delay = Submission.firstPollNanoseconds
        while try !poll() {
            try check()
            var sleep = delay
            if let deadline {
                let left = clock.now.duration(to: deadline)
                guard left > .zero else {
                    throw VulkanError.timeout("\(queue.kind) submission \(value) on \(device.label)")
                }
                let (seconds, attoseconds) = left.components
                let leftNanoseconds = UInt64(seconds) &* 1_000_000_000 &+ UInt64(attoseconds / 1_000_000_000)
                sleep = min(sleep, max(leftNanoseconds, 1_000))
            }
            try await Task.sleep(nanoseconds: sleep)
            delay = min(delay * 2, Submission.maxPollNanoseconds)
        }
    }
}

extension VulkanError {
    /// Whether this error reports VK_ERROR_DEVICE_LOST: the device's work and memory are gone,
    /// every later call on it fails, and only releasing it (and making a new one) helps.
    public var isDeviceLost: Bool {
        if case let .call(_, result) = self { return result == VK_ERROR_DEVICE_LOST.rawValue }
        return false
    }
}
