import VkAttn
import Synchronization

/// A one-shot event that tasks await without holding a thread: the host-side completion of a
/// transfer (between devices, or over MPI in VkAttnMPI). Succeeds or fails exactly once; later
/// calls are ignored. Public so that communicators in other modules share it.
public final class HostEvent: Sendable {
    private struct State {
        var result: Result<Void, any Error>?
        var waiters: [CheckedContinuation<Void, any Error>] = []
    }

    private let state = Mutex(State())

    /// A pending event.
    public init() {}

    /// nil while pending; the outcome afterwards.
    public var result: Result<Void, any Error>? { state.withLock { $0.result } }

    /// Whether the event has succeeded or failed.
    public var isDone: Bool { state.withLock { $0.result != nil } }

    /// Marks the event done and resumes its waiters (ignored once done).
    public func succeed() { finish(.success(())) }

    /// Marks the event failed and resumes its waiters with `error` (ignored once done).
    /// - Parameter error: The failure waiters rethrow.
    public func fail(_ error: any Error) { finish(.failure(error)) }

    private func finish(_ result: Result<Void, any Error>) {
        let waiters: [CheckedContinuation<Void, any Error>] = state.withLock { s in
            guard s.result == nil else { return [] }
            s.result = result
            defer { s.waiters.removeAll() }
            return s.waiters
        }
        for waiter in waiters { waiter.resume(with: result) }
    }

    /// Returns when the event has happened; rethrows its failure.
    /// - Throws: The error the event failed with.
    public func wait() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let done: Result<Void, any Error>? = state.withLock { s in
                if let result = s.result { return result }
                s.waiters.append(continuation)
                return nil
            }
            if let done { continuation.resume(with: done) }
        }
    }
}
