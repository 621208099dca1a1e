import CMPI
import Dispatch
import Foundation
import VkAttn

/// The engine thread's loop and its state (lives on that thread only).
final class EngineLoop {
    let core: EngineCore
    let identity: MPIIdentity
    let world = CommHandle(raw: vkmpi_comm_world())
    private var active: [EngineOp] = []
    /// Per channel: the last message number posted to MPI (sends, collectives) and signaled.
    var posted: [ChannelKey: UInt64] = [:]
    var signaled: [ChannelKey: UInt64] = [:]
    /// Abort notices in flight, with their bytes.
    private var notices: [(MPI_Request?, UnsafeMutableRawPointer)] = []
    private var aborted = false
    var progressed = false
    /// Row datatypes and ops of the affine all-scan, by width.
    var affineOps: [Int: (MPI_Datatype?, MPI_Op?)] = [:]

    init(core: EngineCore, identity: MPIIdentity) {
        self.core = core
        self.identity = identity
    }

    /// MPI_Init_thread on the calling (engine) thread; errors return codes from then on.
    static func initialize(timeout: Double) throws -> MPIIdentity {
        var provided: Int32 = 0
        try mpiCheck(MPI_Init_thread(nil, nil, vkmpi_thread_funneled(), &provided), "MPI_Init_thread")
        guard provided >= vkmpi_thread_funneled() else { throw MPIError.threadLevel(provided: provided) }
        let world = vkmpi_comm_world()
        try mpiCheck(MPI_Comm_set_errhandler(world, vkmpi_errors_return()), "MPI_Comm_set_errhandler")
        var rank: Int32 = 0, size: Int32 = 0
        try mpiCheck(MPI_Comm_rank(world, &rank), "MPI_Comm_rank")
        try mpiCheck(MPI_Comm_size(world, &size), "MPI_Comm_size")
        var value: UnsafeMutableRawPointer?
        var flag: Int32 = 0
        try mpiCheck(MPI_Comm_get_attr(world, vkmpi_tag_ub_key(), &value, &flag), "MPI_Comm_get_attr(MPI_TAG_UB)")
        let tagUB = flag != 0 ? Int(value?.load(as: Int32.self) ?? 32767) : 32767
        var local: Int32 = 0, localSize: Int32 = 1
        var shared: MPI_Comm?
        try mpiCheck(MPI_Comm_split_type(world, vkmpi_comm_type_shared(), rank, vkmpi_info_null(), &shared), "MPI_Comm_split_type")
        if let shared {
            try mpiCheck(MPI_Comm_rank(shared, &local), "MPI_Comm_rank(shared)")
            try mpiCheck(MPI_Comm_size(shared, &localSize), "MPI_Comm_size(shared)")
            var s: MPI_Comm? = shared
            MPI_Comm_free(&s)
        }
        let env = ProcessInfo.processInfo.environment
        let localRank = env["OMPI_COMM_WORLD_LOCAL_RANK"].flatMap(Int.init) ?? Int(local)
        let localRanks = env["OMPI_COMM_WORLD_LOCAL_SIZE"].flatMap(Int.init) ?? Int(localSize)
        return MPIIdentity(worldRank: Int(rank), worldSize: Int(size), localRank: localRank, localSize: localRanks,
                           tagLimit: tagUB, timeoutSeconds: timeout)
    }

    func run() {
        var delay: UInt32 = 20
        while true {
            progressed = false
            let jobs = core.state.withLock { s -> [EngineJob] in
                defer { s.inbox.removeAll() }
                return s.inbox
            }
            for job in jobs {
                switch job {
                case let .op(op):
                    progressed = true
                    active.append(op)
                    if aborted {
                        abortAgain()
                        continue
                    }
                    do { try op.start(self) } catch { abort(error, broadcast: true) }
                case let .call(body):
                    body()
                case let .abort(error):
                    abort(error, broadcast: true)
                case let .shutdown(done):
                    shutdown()
                    done()
                    return
                }
            }
            probeAbortNotice()
            let now = HostClock.nanoseconds()
            var remaining: [EngineOp] = []
            for op in active {
                do {
                    if try op.advance(self) { continue }
                    if now > op.deadline {
                        throw MPIError.timeout(op: op.label, rank: identity.worldRank, seconds: identity.timeoutSeconds)
                    }
                    remaining.append(op)
                } catch {
                    // Fails every operation (finished ones ignore it): a peer may wait on any.
                    abort(error, broadcast: true)
                    break
                }
            }
            active = aborted ? [] : remaining
            if active.isEmpty {
                _ = core.wake.wait(timeout: .now() + .milliseconds(10))
                delay = 20
            } else if progressed {
                delay = 20
            } else {
                usleep(delay)
                delay = min(delay * 2, 500)
            }
        }
    }

    // MARK: Helpers for operations

    /// Whether `submission` is done and every request of `after` succeeded (rethrows a failure).
    func isReady(_ submission: Submission?, after: [MPIRequest]) throws -> Bool {
        if let submission, try !submission.poll() { return false }
        for r in after {
            switch r.event.result {
            case nil: return false
            case .failure(let error)?: throw error
            case .success?: continue
            }
        }
        return true
    }

    /// Whether message `value` of `key` is next to be posted / signaled.
    func isNextPost(_ key: ChannelKey, _ value: UInt64) -> Bool { posted[key, default: 0] == value - 1 }
    func isNextSignal(_ key: ChannelKey, _ value: UInt64) -> Bool { signaled[key, default: 0] == value - 1 }

    func signal(_ op: EngineOp) throws {
        try op.request.semaphore.signal(op.request.value)
        signaled[op.key] = op.request.value
        progressed = true
    }

    func count(sent: Int = 0, received: Int = 0) {
        core.state.withLock { s in
            if sent > 0 { s.traffic.bytesSent += sent; s.traffic.messagesSent += 1 }
            if received > 0 { s.traffic.bytesReceived += received; s.traffic.messagesReceived += 1 }
        }
    }

    // MARK: Abort

    /// Fails every pending operation and releases every GPU wait; with `broadcast`, tells
    /// every other rank first (a message on the reserved tag of MPI_COMM_WORLD).
    private func abort(_ error: any Error, broadcast: Bool) {
        guard !aborted else { return }
        aborted = true
        _ = core.markAborted(error)
        let recorded = core.abortError ?? error
        if broadcast {
            let text = Array("\(recorded)".utf8)
            for peer in 0..<identity.worldSize where peer != identity.worldRank {
                let block = UnsafeMutableRawPointer.allocate(byteCount: max(1, text.count), alignment: 16)
                text.withUnsafeBytes { if let base = $0.baseAddress { block.copyMemory(from: base, byteCount: text.count) } }
                var request: MPI_Request?
                if MPI_Isend(block, Int32(text.count), vkmpi_byte(), Int32(peer), Int32(identity.tagLimit), world.raw, &request) == vkmpi_success() {
                    notices.append((request, block))
                } else {
                    block.deallocate()
                }
            }
        }
        for op in active {
            op.cancel()
            op.request.event.fail(recorded)
        }
        active.removeAll()
        core.state.withLock { s in
            for channel in s.channels.values {
                try? channel.semaphore.signal(max(channel.semaphore.value, channel.posted) + 1)
            }
        }
    }

    /// Fails operations that reached the engine after the abort.
    private func abortAgain() {
        let error = core.abortError ?? MPIError.finalized
        for op in active {
            op.cancel()
            op.request.event.fail(error)
        }
        active.removeAll()
    }

    /// Receives an abort notice from any rank, if one has arrived.
    private func probeAbortNotice() {
        var flag: Int32 = 0
        var status = MPI_Status()
        guard MPI_Iprobe(vkmpi_any_source(), Int32(identity.tagLimit), world.raw, &flag, &status) == vkmpi_success(), flag != 0 else { return }
        var count: Int32 = 0
        MPI_Get_count(&status, vkmpi_byte(), &count)
        var bytes = [UInt8](repeating: 0, count: max(1, Int(count)))
        let source = vkmpi_status_source(&status)
        _ = bytes.withUnsafeMutableBytes { MPI_Recv($0.baseAddress, count, vkmpi_byte(), source, Int32(identity.tagLimit), world.raw, vkmpi_status_ignore()) }
        let cause = String(decoding: bytes.prefix(Int(count)), as: UTF8.self)
        progressed = true
        guard !aborted else { return }
        abort(MPIError.peerFailed(rank: Int(source), cause: cause), broadcast: false)
    }

    // MARK: Shutdown

    private func shutdown() {
        for op in active {
            op.cancel()
            op.request.event.fail(MPIError.finalized)
        }
        active.removeAll()
        // Abort notices are small (sent eagerly); give them a moment, then let them go.
        let deadline = HostClock.nanoseconds() + 2_000_000_000
        for i in notices.indices {
            var flag: Int32 = 0
            while flag == 0 && HostClock.nanoseconds() < deadline {
                if MPI_Test(&notices[i].0, &flag, vkmpi_status_ignore()) != vkmpi_success() { break }
                if flag == 0 { usleep(1000) }
            }
            if flag == 0 { MPI_Request_free(&notices[i].0) }
            notices[i].1.deallocate()
        }
        notices.removeAll()
        // A failed group still finalizes together: an unreceived notice is dropped by MPI.
        MPI_Finalize()
    }
}
