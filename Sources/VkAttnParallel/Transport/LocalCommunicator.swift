import VkAttn
import Synchronization

/// A posted send or receive of a `LocalCommunicator`.
public final class LocalRequest: CommunicationRequest {
    /// Which side of a transfer a request is.
    public enum Kind: String, Sendable { case send, receive }

    /// Send or receive.
    public let kind: Kind
    /// The bytes the transfer moves.
    public let bytes: Int
    /// The other rank (global index in the device group).
    public let peer: Int
    /// Receive: arrival on the receiver's device; send: source read, on the sender's device.
    let semaphore: TimelineSemaphore
    let value: UInt64
    let event = HostEvent()
    /// Staged path: the host-visible buffer on this rank's device.
    let staging: Buffer?
    /// Receive: where the bytes go.
    let destination: BufferSlice?
    /// Staged send: the submission holding the copy into staging.
    let stagedCopy: Submission?
    /// Staged receive: whether the copy out of staging has been recorded, and the transfer
    /// lane's submission holding it (nil when it went onto the caller's stream).
    let copiedOut = Mutex<(done: Bool, lane: Submission?)>((false, nil))

    init(kind: Kind, bytes: Int, peer: Int, semaphore: TimelineSemaphore, value: UInt64, staging: Buffer?,
         destination: BufferSlice?, stagedCopy: Submission?) {
        self.kind = kind
        self.bytes = bytes
        self.peer = peer
        self.semaphore = semaphore
        self.value = value
        self.staging = staging
        self.destination = destination
        self.stagedCopy = stagedCopy
    }

    /// Returns when the relay has moved (or ordered) the bytes.
    /// - Throws: The transfer's error: a size mismatch, the group's abort error.
    public func wait() async throws { try await event.wait() }

    /// Whether the relay has finished (successfully or not).
    public var isDone: Bool { event.isDone }
}

/// One rank's endpoint of an in-process `DeviceGroup`: messages move between the ranks'
/// devices through host-visible memory (see `TransferRoute`), host copies run on relay tasks,
/// and timeline semaphores signaled by the host order each device's GPU work after them.
///
/// In the staged and imported-host paths, the GPU copies to and from staging go to the
/// device's dedicated transfer queue when it has one (the communicator's own stream there,
/// ordered against the rank's stream by timeline semaphores), else onto the caller's stream.
/// In the imported-host path a message's staging is one host allocation that the sender's and
/// the receiver's devices both import (made by whichever side posts first, `LocalFabric`).
public final class LocalCommunicator: Communicator {
    let fabric: LocalFabric
    /// This rank, in 0..<size.
    public let rank: Int
    /// The number of ranks in this communicator.
    public let size: Int
    /// Global rank (device index in the group) of each member.
    public let members: [Int]
    let context: Int
    private let lane: TransferLane?
    private let pending = Mutex<[ObjectIdentifier: [PendingCopy]]>([:])
    private let subgroups = Mutex<[[Int]: Int]>([:])

    /// A stream on the device's dedicated transfer queue, used by one caller at a time.
    final class TransferLane: Sendable {
        let stream: Mutex<Stream>
        init(device: Device) throws {
            let stream = try device.makeStream(queue: .transfer)
            self.stream = Mutex(stream)
        }
    }

    struct PendingCopy: Sendable {
        let start: Timestamp
        let end: Timestamp
        let label: String
        let bytes: Int
    }

    init(fabric: LocalFabric, rank: Int, members: [Int], context: Int) throws {
        self.fabric = fabric
        self.rank = rank
        self.size = members.count
        self.members = members
        self.context = context
        let device = fabric.devices[members[rank]]
        lane = fabric.route != .hostMapped && device.hasDedicatedTransferQueue
            ? try TransferLane(device: device) : nil
    }

    /// This rank's device index in the group.
    public var globalRank: Int { members[rank] }
    /// This rank's device.
    public var device: Device { fabric.devices[globalRank] }
    /// The group's transfer path.
    public var route: TransferRoute { fabric.route }
    /// This device's GPU clock.
    public var clock: GPUClock { fabric.clocks[globalRank] }
    /// The group's timeline.
    public var timeline: ParallelTimeline? { fabric.timeline }
    /// This rank's bytes and messages so far.
    public var traffic: RankTraffic { fabric.traffic(globalRank) }

    // MARK: Point to point

    /// Posts a send; see ``Communicator/send(_:to:tag:after:on:)``.
    /// - Parameters:
    ///   - source: The bytes to send, on this rank's device.
    ///   - peer: The receiving rank.
    ///   - tag: The message's tag.
    ///   - after: Requests the transfer must also follow.
    ///   - stream: A stream of this rank's device; submitted.
    /// - Returns: The request.
    /// - Throws: `VkAttnError` for a peer outside the group, a slice of another device, or (the
    ///   host-mapped path) a buffer that is not host-visible; the group's abort error.
    public func send(_ source: BufferSlice, to peer: Int, tag: Int, after: [LocalRequest], on stream: Stream) throws -> LocalRequest {
        let op = "communicator.send"
        try checkPeer(peer, op: op)
        try checkLocal(source, stream: stream, op: op, operand: "source")
        let key = LocalFabric.ChannelKey(source: globalRank, destination: members[peer], context: context, tag: tag)
        let label = "send \(tag) -> \(members[peer]), to staging"
        // Staged: the copy into staging of this rank's own; imported-host: into the message's
        // staging, known once the fabric numbers the message (`toStaging` then runs under its lock).
        let toStaging = { (buffer: Buffer) throws -> Submission in
            let target = try buffer.slice(offset: 0, byteCount: source.byteCount)
            guard let lane = self.lane else {
                try self.recordCopy(from: source, to: target, on: stream, label: label)
                return try stream.submit()
            }
            let callerWork = try stream.submit()
            return try lane.stream.withLock { t in
                try t.wait(for: callerWork)
                try self.recordCopy(from: source, to: target, on: t, label: label)
                return try t.submit()
            }
        }
        var staging: Buffer?
        var ready: Submission?
        switch route {
        case .hostMapped:
            ready = try stream.submit()
        case .staged:
            let buffer = try device.makeBuffer(byteCount: source.byteCount, location: .host)
            staging = buffer
            ready = try toStaging(buffer)
        case .importedHost:
            break
        }
        return try fabric.postSend(key, bytes: source.byteCount) { semaphore, value, imported in
            var buffer = staging
            var submitted = ready
            if let imported {
                buffer = imported.sender
                submitted = try toStaging(imported.sender)
            }
            guard let submitted else {
                throw VkAttnError.unsupported(op: op, reason: "an imported-host send without its imported staging")
            }
            return LocalFabric.SendPost(source: source, ready: submitted, after: after, request: LocalRequest(
                kind: .send, bytes: source.byteCount, peer: members[peer], semaphore: semaphore, value: value,
                staging: buffer, destination: nil, stagedCopy: route == .hostMapped ? nil : submitted))
        }
    }

    /// Posts a receive; see ``Communicator/receive(into:from:tag:after:on:)``.
    /// - Parameters:
    ///   - destination: Where the bytes go, on this rank's device.
    ///   - peer: The sending rank.
    ///   - tag: The message's tag.
    ///   - after: Requests the transfer must also follow.
    ///   - stream: A stream of this rank's device; submitted.
    /// - Returns: The request.
    /// - Throws: `VkAttnError` for a peer outside the group, a slice of another device, or (the
    ///   host-mapped path) a buffer that is not host-visible; the group's abort error.
    public func receive(into destination: BufferSlice, from peer: Int, tag: Int, after: [LocalRequest], on stream: Stream) throws -> LocalRequest {
        let op = "communicator.receive"
        try checkPeer(peer, op: op)
        try checkLocal(destination, stream: stream, op: op, operand: "destination")
        let key = LocalFabric.ChannelKey(source: members[peer], destination: globalRank, context: context, tag: tag)
        // With nothing recorded, submit() hands back the stream's previous submission, which
        // may predate work another stream of the same queue submitted since (a ring step's
        // compute still reading the slot): a barrier makes the free point a new submission,
        // after everything submitted to the queue so far.
        try stream.barrier()
        let free = try stream.submit()
        let staging = route == .staged ? try device.makeBuffer(byteCount: destination.byteCount, location: .host) : nil
        return try fabric.postReceive(key, bytes: destination.byteCount) { semaphore, value, imported in
            LocalFabric.ReceivePost(destination: destination, free: route == .hostMapped ? free : nil, after: after, request: LocalRequest(
                kind: .receive, bytes: destination.byteCount, peer: members[peer], semaphore: semaphore, value: value,
                staging: imported?.receiver ?? staging, destination: destination, stagedCopy: nil))
        }
    }

    /// Records the waits (and, staged, the copy out of staging) that order `stream`'s later work
    /// after the transfer.
    /// - Parameters:
    ///   - request: A request of this rank.
    ///   - stream: A stream of this rank's device.
    /// - Throws: `VkAttnError.deviceMismatch(op:operand:)` for a stream or request of another
    ///   device; the errors of recording.
    public func complete(_ request: LocalRequest, on stream: Stream) throws {
        guard stream.device === device, request.semaphore.device === device else {
            throw VkAttnError.deviceMismatch(op: "communicator.complete", operand: "stream")
        }
        switch (request.kind, route) {
        case (.receive, .hostMapped), (.send, .hostMapped):
            try stream.wait(for: request.semaphore, value: request.value)
        case (.send, .staged), (.send, .importedHost):
            if let copy = request.stagedCopy { try stream.wait(for: copy) }
            try stream.barrier()
        case (.receive, .staged), (.receive, .importedHost):
            let earlier = request.copiedOut.withLock { state -> (done: Bool, lane: Submission?) in
                defer { state.done = true }
                return state
            }
            if earlier.done {
                if let copied = earlier.lane { try stream.wait(for: copied) } else { try stream.wait(for: request.semaphore, value: request.value) }
                return
            }
            guard let staging = request.staging, let destination = request.destination else { return }
            let source = try staging.slice(offset: 0, byteCount: request.bytes)
            let label = "recv <- \(request.peer), from staging"
            if let lane {
                let copied = try lane.stream.withLock { t in
                    try t.wait(for: request.semaphore, value: request.value)
                    try recordCopy(from: source, to: destination, on: t, label: label)
                    return try t.submit()
                }
                request.copiedOut.withLock { $0.lane = copied }
                try stream.wait(for: copied)
                try stream.barrier()
            } else {
                try stream.wait(for: request.semaphore, value: request.value)
                try recordCopy(from: source, to: destination, on: stream, label: label)
            }
        }
    }

    /// Records a GPU copy of the staged path on `stream`, between barriers, with timestamps
    /// around it when a timeline is recording.
    private func recordCopy(from source: BufferSlice, to destination: BufferSlice, on stream: Stream, label: String) throws {
        try stream.barrier()
        let stamps = timeline?.isRecording == true && hasTimestamps(stream)
        let start = stamps ? try stream.timestamp() : nil
        try stream.copy(from: source, to: destination)
        try stream.barrier()
        if let start {
            let end = try stream.timestamp()
            pending.withLock {
                $0[ObjectIdentifier(stream), default: []].append(PendingCopy(start: start, end: end, label: label, bytes: source.byteCount))
            }
        }
    }

    /// Whether the queue family behind `stream` writes timestamps (the device layer picks one
    /// that does where it can).
    private func hasTimestamps(_ stream: Stream) -> Bool {
        let families = device.capabilities.queueFamilies
        if stream.queueKind == .transfer && device.hasDedicatedTransferQueue {
            return families.contains { $0.isTransferOnly && $0.timestampValidBits > 0 }
        }
        return families.contains { $0.compute && $0.timestampValidBits > 0 }
    }

    private func checkLocal(_ slice: BufferSlice, stream: Stream, op: String, operand: String) throws {
        guard slice.buffer.device === device else { throw VkAttnError.deviceMismatch(op: op, operand: operand) }
        guard stream.device === device else { throw VkAttnError.deviceMismatch(op: op, operand: "stream") }
        if route == .hostMapped && !slice.buffer.isHostVisible {
            throw VkAttnError.unsupported(op: op, reason: "the host-mapped path needs host-visible buffers; \(operand) is not (use the staged path)")
        }
    }

    // MARK: Groups, timestamps, abort

    /// A communicator over some of this one's ranks; see ``Communicator/subgroup(_:)``.
    /// - Parameter members: Distinct ranks of this communicator, including this rank.
    /// - Returns: This rank's communicator in the subgroup.
    /// - Throws: `VkAttnError.invalidValue(op:operand:reason:)` for members out of range,
    ///   repeated, or without this rank.
    public func subgroup(_ members: [Int]) throws -> LocalCommunicator {
        let op = "communicator.subgroup"
        guard !members.isEmpty, Set(members).count == members.count, members.allSatisfy({ $0 >= 0 && $0 < size }) else {
            throw VkAttnError.invalidValue(op: op, operand: "members", reason: "\(members) must be distinct ranks in 0..<\(size)")
        }
        guard let mine = members.firstIndex(of: rank) else {
            throw VkAttnError.invalidValue(op: op, operand: "members", reason: "\(members) does not contain this rank (\(rank))")
        }
        let ordinal = subgroups.withLock { counts in
            defer { counts[members, default: 0] += 1 }
            return counts[members, default: 0]
        }
        let global = members.map { self.members[$0] }
        let id = fabric.context(.init(parent: context, members: global, ordinal: ordinal))
        return try LocalCommunicator(fabric: fabric, rank: mine, members: global, context: id)
    }

    /// Moves the copy intervals recorded on `stream` (and on the transfer lane) into the timeline.
    /// - Parameter stream: A synchronized stream of this rank.
    /// - Throws: The errors of synchronizing the transfer lane.
    public func collectTimestamps(of stream: Stream) throws {
        try resolve(stream)
        if let lane {
            try lane.stream.withLock { t in
                try t.synchronize()
                try resolve(t)
            }
        }
    }

    private func resolve(_ stream: Stream) throws {
        let copies = pending.withLock { $0.removeValue(forKey: ObjectIdentifier(stream)) ?? [] }
        guard let timeline else { return }
        for copy in copies {
            // Entries of an earlier batch (a stream synchronized without collecting, or a
            // dead stream whose identity was reused) have no ticks any more: not this batch's.
            guard let startTicks = try? stream.ticks(of: copy.start), let endTicks = try? stream.ticks(of: copy.end) else { continue }
            timeline.record(.init(rank: globalRank, kind: .copy, label: copy.label, startNs: clock.hostNanoseconds(ticks: startTicks),
                                  endNs: clock.hostNanoseconds(ticks: endTicks), bytes: copy.bytes))
        }
    }

    /// Fails every pending and later operation of the group; see ``Communicator/abort(_:)``.
    /// - Parameter error: The error they fail with.
    public func abort(_ error: any Error) { fabric.abort(error) }
}
