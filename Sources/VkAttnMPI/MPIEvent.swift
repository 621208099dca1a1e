import Synchronization

/// A one-shot event that tasks await without holding a thread: the host-side completion of an
/// MPI transfer, set by the engine thread. Succeeds or fails exactly once.
final class MPIEvent: Sendable {
    private struct State {
        var result: Result<Void, any Error>?
        var waiters: [CheckedContinuation<Void, any Error>] = []
    }

    private let state = Mutex(State())

    /// nil while pending; the outcome afterwards.
    var result: Result<Void, any Error>? { state.withLock { $0.result } }

    func succeed() { finish(.success(())) }

    func fail(_ error: any Error) { finish(.failure(error)) }

    private func finish(_ result: Result<Void, any Error>) {
        let waiters: [CheckedContinuation<Void, any Error>] = state.withLock { s in
            guard s.result == nil else { return [] }
            s.result = result
            defer { s.waiters.removeAll() }
            return s.waiters
        }
        for waiter in waiters { waiter.resume(with: result) }
    }

    func wait() async throws {
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
