import CMPI
import Dispatch
import Foundation
import Synchronization
import VkAttn
import VkAttnParallel

/// An MPI communicator handle. @unchecked Sendable: an immutable handle value that only the
/// engine thread passes to MPI.
struct CommHandle: @unchecked Sendable {
    let raw: MPI_Comm
}

/// Messages of one kind between this rank and one peer, in one communicator, with one tag
/// (collectives: peer -1, tag 0): their semaphore is signaled in posting order.
struct ChannelKey: Hashable, Sendable {
    enum Kind: Hashable, Sendable { case send, receive, collective }
    let context: Int
    let peer: Int
    let tag: Int
    let kind: Kind
}

/// Who this process is, learned by MPI_Init on the engine thread.
struct MPIIdentity: Sendable {
    let worldRank: Int
    let worldSize: Int
    /// Rank among the processes of this host (OMPI_COMM_WORLD_LOCAL_RANK, else from
    /// MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)).
    let localRank: Int
    let localSize: Int
    /// MPI_TAG_UB: user tags are 0..<tagLimit; tagLimit itself carries abort notices.
    let tagLimit: Int
    /// Seconds a posted operation may stay pending before the group is aborted.
    let timeoutSeconds: Double
}

/// Work handed to the engine thread.
enum EngineJob: Sendable {
    case op(EngineOp)
    /// Runs on the engine thread (creating communicators, finalizing).
    case call(@Sendable () -> Void)
    case abort(any Error)
    case shutdown(@Sendable () -> Void)
}

/// The state shared between posting threads and the engine thread, under one lock.
final class EngineCore: Sendable {
    struct Channel {
        let semaphore: TimelineSemaphore
        var posted: UInt64 = 0
    }

    struct State {
        var inbox: [EngineJob] = []
        var aborted: (any Error)?
        var finalized = false
        var channels: [ChannelKey: Channel] = [:]
        var traffic = RankTraffic()
        var contexts = 1
        var subgroups: [[Int]: Int] = [:]
        /// MPI communicators of subgroups, by context.
        var comms: [Int: CommHandle] = [:]
    }

    let state = Mutex(State())
    let wake = DispatchSemaphore(value: 0)

    /// Assigns the next message number of `key`, builds the operation and queues it, all
    /// under the lock (so the engine sees each channel's operations in posting order).
    func post(_ key: ChannelKey, device: Device, make: (TimelineSemaphore, UInt64) throws -> EngineOp) throws -> EngineOp {
        let op = try state.withLock { s -> EngineOp in
            if let error = s.aborted { throw error }
            if s.finalized { throw MPIError.finalized }
            var channel = try s.channels[key] ?? Channel(semaphore: TimelineSemaphore(device: device))
            channel.posted += 1
            let op = try make(channel.semaphore, channel.posted)
            s.channels[key] = channel
            s.inbox.append(.op(op))
            return op
        }
        wake.signal()
        return op
    }

    func enqueue(_ job: EngineJob) {
        state.withLock { $0.inbox.append(job) }
        wake.signal()
    }

    /// Marks the group aborted (first error wins); true when this call did it.
    func markAborted(_ error: any Error) -> Bool {
        state.withLock { s in
            guard s.aborted == nil else { return false }
            s.aborted = error
            return true
        }
    }

    var abortError: (any Error)? { state.withLock { $0.aborted } }
}

/// The process's MPI engine: one dedicated thread calls MPI_Init_thread and then makes every
/// MPI call of the process (MPI_THREAD_FUNNELED is enough, and no MPI call ever blocks a
/// thread of Swift's cooperative pool). It takes posted operations from an inbox, waits for
/// their GPU work by polling submissions, moves bytes between device memory and host blocks,
/// posts nonblocking MPI operations, polls them with MPI_Test, signals the device's timeline
/// semaphores in each channel's posting order, probes for abort notices from other ranks,
/// and fails operations that stay pending past the timeout.
public final class MPIEngine: Sendable {
    let core: EngineCore
    let identity: MPIIdentity

    static let current = Mutex<MPIEngine?>(nil)

    private init(core: EngineCore, identity: MPIIdentity) {
        self.core = core
        self.identity = identity
    }

    /// The process's engine, starting MPI on first use (MPI initializes once per process).
    /// - Parameter timeout: Seconds before a pending operation aborts the group; nil reads
    ///   `VKATTN_MPI_TIMEOUT` (default 120).
    /// - Returns: The process's engine (the same one on later calls).
    /// - Throws: ``MPIError/threadLevel(provided:)`` when MPI lacks MPI_THREAD_FUNNELED,
    ///   ``MPIError/call(_:code:message:)`` when MPI fails to start, ``MPIError/finalized`` after
    ///   MPI was finalized; `VkAttnError.invalidValue` for a timeout that is not positive.
    public static func start(timeout: Double? = nil) throws -> MPIEngine {
        try current.withLock { engine in
            if let engine {
                if engine.core.state.withLock({ $0.finalized }) { throw MPIError.finalized }
                return engine
            }
            let seconds = timeout ?? ProcessInfo.processInfo.environment["VKATTN_MPI_TIMEOUT"].flatMap(Double.init) ?? 120
            guard seconds > 0 else {
                throw VkAttnError.invalidValue(op: "MPIEngine", operand: "timeout", reason: "\(seconds) s must be positive")
            }
            let core = EngineCore()
            let started = Mutex<Result<MPIIdentity, any Error>?>(nil)
            let ready = DispatchSemaphore(value: 0)
            let thread = Thread {
                let identity: MPIIdentity
                do {
                    identity = try EngineLoop.initialize(timeout: seconds)
                    started.withLock { $0 = .success(identity) }
                    ready.signal()
                } catch {
                    started.withLock { $0 = .failure(error) }
                    ready.signal()
                    return
                }
                EngineLoop(core: core, identity: identity).run()
            }
            thread.name = "vkattn-mpi-engine"
            thread.start()
            ready.wait()
            guard let outcome = started.withLock({ $0 }) else { throw MPIError.finalized }
            let identity = try outcome.get()
            let made = MPIEngine(core: core, identity: identity)
            engine = made
            return made
        }
    }

    /// This process's rank in MPI_COMM_WORLD.
    public var worldRank: Int { identity.worldRank }
    /// The number of processes in MPI_COMM_WORLD.
    public var worldSize: Int { identity.worldSize }
    /// This process's rank among the processes of its host.
    public var localRank: Int { identity.localRank }
    /// The number of processes on this host.
    public var localSize: Int { identity.localSize }
    /// Seconds a posted operation may stay pending before the group is aborted.
    public var timeoutSeconds: Double { identity.timeoutSeconds }

    /// Runs `body` on the engine thread and returns its result (blocks the caller: for setup
    /// such as creating communicators, not for transfers).
    func call<R: Sendable>(_ body: @escaping @Sendable () throws -> R) throws -> R {
        let result = Mutex<Result<R, any Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        if core.state.withLock({ $0.finalized }) { throw MPIError.finalized }
        core.enqueue(.call {
            let r = Result { try body() }
            result.withLock { $0 = r }
            done.signal()
        })
        done.wait()
        guard let outcome = result.withLock({ $0 }) else { throw MPIError.finalized }
        return try outcome.get()
    }

    /// Aborts the whole group: every rank's pending and later operations fail with an error
    /// naming this rank and `error` (the first abort wins), and every GPU wait on them is
    /// released.
    /// - Parameter error: This rank's failure, which the other ranks receive as
    ///   ``MPIError/peerFailed(rank:cause:)``.
    public func abort(_ error: any Error) {
        if core.markAborted(error) { core.enqueue(.abort(error)) }
    }

    /// The error the group was aborted with (this rank's or a peer's), if any.
    public var abortError: (any Error)? { core.abortError }

    /// Bytes and messages this process sent and received since the last reset.
    public var traffic: RankTraffic { core.state.withLock { $0.traffic } }

    /// Sets this process's traffic back to zero.
    public func resetTraffic() { core.state.withLock { $0.traffic = RankTraffic() } }

    /// Ends MPI for this process: fails what is still pending, lets abort notices leave, and
    /// calls MPI_Finalize (every rank must call it, also after a failure). Later calls return.
    public func finalize() {
        let first = core.state.withLock { s -> Bool in
            defer { s.finalized = true }
            return !s.finalized
        }
        guard first else { return }
        let done = DispatchSemaphore(value: 0)
        core.enqueue(.shutdown { done.signal() })
        done.wait()
    }
}

extension MPIEngine {
    /// This process's world rank, once MPI is started.
    public static var startedWorldRank: Int? { current.withLock { $0 }?.worldRank }

    /// Finalizes MPI if this process started it (for exits on error paths).
    public static func finalizeIfStarted() {
        current.withLock { $0 }?.finalize()
    }
}
