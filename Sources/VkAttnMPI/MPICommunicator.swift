import CMPI
import Glibc
import Synchronization
import VkAttn
import VkAttnParallel

/// One rank of a group of processes on Open MPI, each process with its own Vulkan device:
/// the `Communicator` the schedulers run on across processes and hosts.
///
/// Transfers follow the protocol's ordering model. A send submits the stream; the engine
/// thread (see `MPIEngine`) waits for that submission (and `after`), reads the source into a
/// host block, posts MPI_Isend and signals the send's timeline semaphore. A receive posts
/// MPI_Irecv into a host block at once; once the message is in and the destination free, the
/// engine writes it there and signals the receive's semaphore, which `complete` makes the
/// consuming stream wait for. `path`: `host-mapped` reads and writes the buffers' mapped
/// memory (every device memory host-visible: lavapipe, UMA); `staged` goes through a
/// host-visible staging buffer per message, filled by a GPU copy recorded on the sender's
/// stream and emptied by one that `complete` records on the receiver's (the engine thread
/// never records GPU work for point-to-point transfers). Tags are MPI tags of this communicator's
/// own MPI communicator (a subgroup gets one from MPI_Comm_create_group), so messages between
/// two ranks with one tag are matched in posting order by MPI's non-overtaking rule.
public final class MPICommunicator: Communicator {
    /// The process's MPI engine.
    public let engine: MPIEngine
    /// This rank, in 0..<size.
    public let rank: Int
    /// The number of ranks in this communicator.
    public let size: Int
    /// World rank of each member.
    public let members: [Int]
    /// This process's device.
    public let device: Device
    /// How bytes move between the device and MPI's host blocks: host-mapped or staged.
    public let route: TransferRoute
    /// This device's GPU clock.
    public let clock: GPUClock
    /// Where this rank's intervals are recorded (this process's only).
    public let timeline: ParallelTimeline?
    /// How this rank's device was chosen.
    public let deviceChoice: String
    let comm: CommHandle
    let context: Int

    init(engine: MPIEngine, rank: Int, members: [Int], device: Device, route: TransferRoute, clock: GPUClock,
         timeline: ParallelTimeline?, deviceChoice: String, comm: CommHandle, context: Int) {
        self.engine = engine
        self.rank = rank
        self.size = members.count
        self.members = members
        self.device = device
        self.route = route
        self.clock = clock
        self.timeline = timeline
        self.deviceChoice = deviceChoice
        self.comm = comm
        self.context = context
    }

    /// The communicator over every process of the MPI job (starts MPI on first use). The
    /// device: with several usable GPUs on this host (and VKATTN_DEVICE unset), the one at
    /// this process's local rank modulo their count; else the instance's selected device (so
    /// several processes share it as logical devices, as on lavapipe). A failure here (no
    /// device) aborts the group, so the other ranks fail naming this one.
    /// `path` forces a transfer path (default: host-mapped when the device's memory is
    /// host-visible, else staged).
    /// - Parameters:
    ///   - log: Where the new instance's validation messages are collected.
    ///   - timeout: Seconds before a pending operation aborts the group; nil reads
    ///     `VKATTN_MPI_TIMEOUT`.
    ///   - route: A transfer route to force; nil decides as above.
    /// - Returns: This process's communicator over MPI_COMM_WORLD.
    /// - Throws: The errors of ``MPIEngine/start(timeout:)``; `VkAttnError.unsupported` for the
    ///   imported-host path or a host-mapped path without host-visible memory; the errors of
    ///   creating the device (the group is aborted).
    public static func world(log: ValidationLog = ValidationLog(), timeout: Double? = nil, route: TransferRoute? = nil) throws -> MPICommunicator {
        let engine = try MPIEngine.start(timeout: timeout)
        do {
            let instance = try Instance(log: log)
            let gpus = instance.physicalDevices.filter { $0.capabilities.unsupportedReason == nil && $0.capabilities.type != .cpu }
            let physical: PhysicalDevice
            let choice: String
            if gpus.count > 1 && getenv(EnvironmentKey.device) == nil {
                physical = gpus[engine.localRank % gpus.count]
                choice = "GPU \(engine.localRank % gpus.count) of \(gpus.count) on this host (local rank \(engine.localRank))"
            } else {
                physical = try instance.selectDevice()
                choice = "the selected device, shared by this host's \(engine.localSize) ranks (local rank \(engine.localRank))"
            }
            let device = try Device(physicalDevice: physical)
            let mapped = try device.makeBuffer(byteCount: 16).isHostVisible
            if route == .importedHost {
                // One process's host allocation cannot be imported by another process's device.
                throw VkAttnError.unsupported(op: "MPICommunicator", reason: "the imported-host path moves bytes between devices of one process; use host-mapped or staged")
            }
            if route == .hostMapped && !mapped {
                throw VkAttnError.unsupported(op: "MPICommunicator", reason: "the host-mapped path needs host-visible device memory, which \(device.label) lacks")
            }
            let all = Array(0..<engine.worldSize)
            return MPICommunicator(engine: engine, rank: engine.worldRank, members: all, device: device,
                                   route: route ?? (mapped ? .hostMapped : .staged), clock: try GPUClock.calibrate(device),
                                   timeline: ParallelTimeline(), deviceChoice: choice, comm: CommHandle(raw: vkmpi_comm_world()), context: 0)
        } catch {
            engine.abort(error)
            throw error
        }
    }

    /// This process's world rank.
    public var globalRank: Int { members[rank] }
    /// This process's bytes and messages so far.
    public var traffic: RankTraffic { engine.traffic }

    // MARK: Point to point

    func base(_ kind: MPIRequest.Kind, bytes: Int, peer: Int, tag: Int, semaphore: TimelineSemaphore, value: UInt64,
              label: String) -> EngineOp.Base {
        let keyKind: ChannelKey.Kind = kind == .send ? .send : kind == .receive ? .receive : .collective
        return EngineOp.Base(request: MPIRequest(kind: kind, bytes: bytes, peer: peer, semaphore: semaphore, value: value),
                             key: ChannelKey(context: context, peer: peer, tag: tag, kind: keyKind), comm: comm, label: label,
                             timeout: engine.timeoutSeconds, timeline: timeline, globalRank: globalRank)
    }

    /// Posts a send; see `Communicator.send(_:to:tag:after:on:)`.
    /// - Parameters:
    ///   - source: The bytes to send, on this rank's device.
    ///   - peer: The receiving rank.
    ///   - tag: The message's tag, below MPI_TAG_UB.
    ///   - after: Requests the transfer must also follow.
    ///   - stream: A stream of this rank's device; submitted.
    /// - Returns: The request.
    /// - Throws: `VkAttnError` for a peer or tag out of range or a slice of another device;
    ///   ``MPIError`` once the group was aborted or MPI finalized.
    public func send(_ source: BufferSlice, to peer: Int, tag: Int, after: [MPIRequest], on stream: Stream) throws -> MPIRequest {
        let op = "communicator.send"
        try check(peer: peer, tag: tag, op: op)
        try checkLocal(source, stream: stream, op: op, operand: "source")
        var from = source
        if route == .staged {
            let staging = try device.makeBuffer(byteCount: source.byteCount, location: .host)
            try stream.barrier()
            try stream.copy(from: source, to: staging.whole)
            try stream.barrier()
            from = staging.whole
        }
        let ready = try stream.submit()
        let key = ChannelKey(context: context, peer: peer, tag: tag, kind: .send)
        let posted = try engine.core.post(key, device: device) { [from] semaphore, value in
            SendOp(source: from, ready: ready, after: after, peer: peer, tag: tag,
                   base: base(.send, bytes: source.byteCount, peer: peer, tag: tag, semaphore: semaphore, value: value,
                              label: "send \(tag) -> \(members[peer]) (MPI)"))
        }
        return posted.request
    }

    /// Posts a receive; see `Communicator.receive(into:from:tag:after:on:)`.
    /// - Parameters:
    ///   - destination: Where the bytes go, on this rank's device.
    ///   - peer: The sending rank.
    ///   - tag: The message's tag, below MPI_TAG_UB.
    ///   - after: Requests the transfer must also follow.
    ///   - stream: A stream of this rank's device; submitted.
    /// - Returns: The request.
    /// - Throws: `VkAttnError` for a peer or tag out of range or a slice of another device;
    ///   ``MPIError`` once the group was aborted or MPI finalized.
    public func receive(into destination: BufferSlice, from peer: Int, tag: Int, after: [MPIRequest], on stream: Stream) throws -> MPIRequest {
        let op = "communicator.receive"
        try check(peer: peer, tag: tag, op: op)
        try checkLocal(destination, stream: stream, op: op, operand: "destination")
        let staging = route == .staged ? try device.makeBuffer(byteCount: destination.byteCount, location: .host) : nil
        // A fresh submission after everything submitted to the queue so far (an empty
        // submit() hands back the stream's previous one; see LocalCommunicator.receive).
        try stream.barrier()
        let free = try stream.submit()
        let key = ChannelKey(context: context, peer: peer, tag: tag, kind: .receive)
        let posted = try engine.core.post(key, device: device) { semaphore, value in
            var b = base(.receive, bytes: destination.byteCount, peer: peer, tag: tag, semaphore: semaphore, value: value,
                         label: "recv \(tag) <- \(members[peer]) (MPI)")
            b.request = MPIRequest(kind: .receive, bytes: destination.byteCount, peer: peer, semaphore: semaphore, value: value,
                                   staging: staging, destination: destination)
            return ReceiveOp(destination: staging?.whole ?? destination, free: staging == nil ? free : nil, after: after, peer: peer, tag: tag,
                             base: b)
        }
        return posted.request
    }

    /// Records the wait on the request's semaphore (and, staged, the copy out of staging) on
    /// `stream`.
    /// - Parameters:
    ///   - request: A request of this rank.
    ///   - stream: A stream of this rank's device.
    /// - Throws: `VkAttnError.deviceMismatch` for a stream of another device; the errors of
    ///   recording.
    public func complete(_ request: MPIRequest, on stream: Stream) throws {
        guard stream.device === device, request.semaphore.device === device else {
            throw VkAttnError.deviceMismatch(op: "communicator.complete", operand: "stream")
        }
        try stream.wait(for: request.semaphore, value: request.value)
        // Staged receive: the first completion copies staging into the destination.
        guard let staging = request.staging, let destination = request.destination,
              request.copiedOut.withLock({ done in defer { done = true }; return !done }) else { return }
        try stream.barrier()
        try stream.copy(from: try staging.slice(offset: 0, byteCount: request.bytes), to: destination)
        try stream.barrier()
    }

    private func check(peer: Int, tag: Int, op: String) throws {
        guard peer >= 0, peer < size else {
            throw VkAttnError.invalidValue(op: op, operand: "peer", reason: "rank \(peer) is outside 0..<\(size)")
        }
        guard tag >= 0, tag < engine.identity.tagLimit else {
            throw VkAttnError.invalidValue(op: op, operand: "tag", reason: "\(tag) is outside 0..<\(engine.identity.tagLimit) (MPI_TAG_UB)")
        }
    }

    func checkLocal(_ slice: BufferSlice, stream: Stream, op: String, operand: String) throws {
        guard slice.buffer.device === device else { throw VkAttnError.deviceMismatch(op: op, operand: operand) }
        guard stream.device === device else { throw VkAttnError.deviceMismatch(op: op, operand: "stream") }
    }

    // MARK: Groups, timestamps, abort

    /// MPI_Comm_create_group over `members` (collective over the members only, as the
    /// protocol asks). Blocks until every member has called it; the communicator is cached
    /// per member list, so repeated scheduler calls reuse it.
    /// - Parameter members: Distinct ranks of this communicator, including this rank.
    /// - Returns: This rank's communicator in the subgroup.
    /// - Throws: `VkAttnError.invalidValue` for members out of range, repeated, or without this
    ///   rank; ``MPIError`` when MPI fails to make the communicator.
    public func subgroup(_ members: [Int]) throws -> MPICommunicator {
        let op = "communicator.subgroup"
        guard !members.isEmpty, Set(members).count == members.count, members.allSatisfy({ $0 >= 0 && $0 < size }) else {
            throw VkAttnError.invalidValue(op: op, operand: "members", reason: "\(members) must be distinct ranks in 0..<\(size)")
        }
        guard let mine = members.firstIndex(of: rank) else {
            throw VkAttnError.invalidValue(op: op, operand: "members", reason: "\(members) does not contain this rank (\(rank))")
        }
        let global = members.map { self.members[$0] }
        let key = [context, -1] + members
        let parent = comm
        let (context, handle) = try engine.call { [engine] () throws -> (Int, CommHandle) in
            let core = engine.core
            if let known = core.state.withLock({ s in s.subgroups[key].flatMap { id in s.comms[id].map { (id, $0) } } }) {
                return known
            }
            var group: MPI_Group?, sub: MPI_Group?, made: MPI_Comm?
            try mpiCheck(MPI_Comm_group(parent.raw, &group), "MPI_Comm_group")
            var ranks = members.map(Int32.init)
            try mpiCheck(MPI_Group_incl(group, Int32(ranks.count), &ranks, &sub), "MPI_Group_incl")
            try mpiCheck(MPI_Comm_create_group(parent.raw, sub, 1, &made), "MPI_Comm_create_group")
            MPI_Group_free(&group)
            MPI_Group_free(&sub)
            guard let made else { throw MPIError.call("MPI_Comm_create_group", code: -1, message: "no communicator for \(members)") }
            try mpiCheck(MPI_Comm_set_errhandler(made, vkmpi_errors_return()), "MPI_Comm_set_errhandler")
            let h = CommHandle(raw: made)
            let id = core.state.withLock { s -> Int in
                defer { s.contexts += 1 }
                s.subgroups[key] = s.contexts
                s.comms[s.contexts] = h
                return s.contexts
            }
            return (id, h)
        }
        return MPICommunicator(engine: engine, rank: mine, members: global, device: device, route: route, clock: clock,
                               timeline: timeline, deviceChoice: deviceChoice, comm: handle, context: context)
    }

    /// The engine records host intervals directly; GPU copies of the staged path happen inside
    /// Buffer.read/write on the engine thread and are part of those intervals.
    /// - Parameter stream: Ignored.
    /// - Throws: Nothing; the protocol's signature throws.
    public func collectTimestamps(of stream: Stream) throws {}

    /// Aborts the whole MPI group; see ``MPIEngine/abort(_:)``.
    /// - Parameter error: This rank's failure.
    public func abort(_ error: any Error) { engine.abort(error) }

    /// Ends MPI for this process (see `MPIEngine.finalize`).
    public func finalize() { engine.finalize() }
}
