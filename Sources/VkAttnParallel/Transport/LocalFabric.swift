import VkAttn
import Synchronization

/// The shared state of an in-process device group: the channels on which sends meet
/// receives, the timeline semaphores that order GPU work after host copies, the traffic
/// counters, and the abort switch. A matched pair becomes a relay task: it waits until the
/// source is ready and the destination free, copies through host-visible memory, and signals
/// the receiver's (and the sender's) semaphore.
final class LocalFabric: Sendable {
    let devices: [Device]
    let clocks: [GPUClock]
    let route: TransferRoute
    let timeline: ParallelTimeline?

    /// Messages from `source` to `destination` (global ranks) in one communicator context
    /// with one tag: matched in posting order.
    struct ChannelKey: Hashable, Sendable {
        let source: Int
        let destination: Int
        let context: Int
        let tag: Int
    }

    struct SendPost: Sendable {
        let source: BufferSlice
        /// After this submission the bytes may be read (in the staged path: are in staging).
        let ready: Submission
        let after: [LocalRequest]
        let request: LocalRequest
    }

    struct ReceivePost: Sendable {
        let destination: BufferSlice
        /// After this submission the destination may be overwritten (host-mapped path only).
        let free: Submission?
        let after: [LocalRequest]
        let request: LocalRequest
    }

    struct Channel: Sendable {
        var sends: [SendPost] = []
        var receives: [ReceivePost] = []
        var postedSends: UInt64 = 0
        var postedReceives: UInt64 = 0
        /// Signaled with the message number once message k is in the receiver's memory.
        let arrival: TimelineSemaphore
        /// Signaled with the message number once message k's source has been read.
        let sendDone: TimelineSemaphore
        /// Semaphores are signaled in message order: the previous message's turn.
        var lastSignal: HostEvent?
        /// Imported-host path: message k's staging, made by the first of its send and receive
        /// to be posted and taken by the other.
        var imported: [UInt64: ImportedStaging] = [:]
    }

    /// Imported-host path: one host allocation imported into the sender's and the receiver's
    /// device, so the sender's GPU copies into it and the receiver's GPU copies out of it.
    struct ImportedStaging: Sendable {
        let sender: Buffer
        let receiver: Buffer
        let bytes: Int
        let madeBySend: Bool
    }

    struct Match: Sendable {
        let key: ChannelKey
        let send: SendPost
        let receive: ReceivePost
        let previous: HostEvent?
        let signaled: HostEvent
    }

    struct ContextKey: Hashable, Sendable {
        let parent: Int
        let members: [Int]
        let ordinal: Int
    }

    struct State: Sendable {
        var channels: [ChannelKey: Channel] = [:]
        var aborted: (any Error)?
        var traffic: [RankTraffic]
        var contexts: [ContextKey: Int] = [:]
    }

    private let state: Mutex<State>

    init(devices: [Device], clocks: [GPUClock], route: TransferRoute, timeline: ParallelTimeline?) {
        self.devices = devices
        self.clocks = clocks
        self.route = route
        self.timeline = timeline
        self.state = Mutex(State(traffic: [RankTraffic](repeating: RankTraffic(), count: devices.count)))
    }

    // MARK: Posting

    /// Registers a send; `make` builds the request once its message number (and, in the
    /// imported-host path, its staging) is known. It runs under the fabric's lock, so message
    /// numbers follow posting order; when it throws, nothing is posted.
    func postSend(_ key: ChannelKey, bytes: Int, make: (TimelineSemaphore, UInt64, ImportedStaging?) throws -> (SendPost)) throws -> LocalRequest {
        try post(key, bytes: bytes, bySend: true, posted: \.postedSends, queue: \.sends, semaphore: \.sendDone, make: make).request
    }

    func postReceive(_ key: ChannelKey, bytes: Int, make: (TimelineSemaphore, UInt64, ImportedStaging?) throws -> (ReceivePost)) throws -> LocalRequest {
        try post(key, bytes: bytes, bySend: false, posted: \.postedReceives, queue: \.receives, semaphore: \.arrival, make: make).request
    }

    /// One side of a channel (`posted`, `queue`, the semaphore its requests wait on): numbers
    /// the message, takes or creates its imported staging, queues the post and starts the
    /// relay when it completes a pair. A failing `make` leaves the channel as it was.
    private func post<P: Sendable>(_ key: ChannelKey, bytes: Int, bySend: Bool, posted: WritableKeyPath<Channel, UInt64>,
                                   queue: WritableKeyPath<Channel, [P]>, semaphore: KeyPath<Channel, TimelineSemaphore>,
                                   make: (TimelineSemaphore, UInt64, ImportedStaging?) throws -> P) throws -> P {
        let (post, match) = try state.withLock { s -> (P, Match?) in
            if let error = s.aborted { throw error }
            var channel = try s.channels[key] ?? makeChannel(key)
            let number = channel[keyPath: posted] + 1
            let before = channel.imported[number]
            let staging = route == .importedHost ? try importedStaging(&channel, key, number, bytes: bytes, bySend: bySend) : nil
            let post: P
            do {
                post = try make(channel[keyPath: semaphore], number, staging)
            } catch {
                channel.imported[number] = before
                s.channels[key] = channel
                throw error
            }
            channel[keyPath: posted] = number
            channel[keyPath: queue].append(post)
            let match = Self.pop(&channel, key)
            s.channels[key] = channel
            return (post, match)
        }
        if let match { start(match) }
        return post
    }

    private func makeChannel(_ key: ChannelKey) throws -> Channel {
        Channel(arrival: try TimelineSemaphore(device: devices[key.destination]),
                sendDone: try TimelineSemaphore(device: devices[key.source]))
    }

    /// Message `number`'s imported staging: the one its other side made (taken, so the channel
    /// forgets it), else a new one kept for the other side. Sizes that differ get a staging of
    /// their own: the relay then fails both requests for the mismatch.
    private func importedStaging(_ channel: inout Channel, _ key: ChannelKey, _ number: UInt64, bytes: Int,
                                 bySend: Bool) throws -> ImportedStaging {
        if let existing = channel.imported[number], existing.madeBySend != bySend {
            channel.imported[number] = nil
            if existing.bytes == bytes { return existing }
            return try makeImportedStaging(key, bytes: bytes, bySend: bySend)
        }
        let made = try makeImportedStaging(key, bytes: bytes, bySend: bySend)
        channel.imported[number] = made
        return made
    }

    private func makeImportedStaging(_ key: ChannelKey, bytes: Int, bySend: Bool) throws -> ImportedStaging {
        let sender = devices[key.source], receiver = devices[key.destination]
        let allocation = try HostAllocation(byteCount: bytes, importableBy: [sender, receiver])
        return ImportedStaging(sender: try sender.importBuffer(allocation), receiver: try receiver.importBuffer(allocation),
                               bytes: bytes, madeBySend: bySend)
    }

    private static func pop(_ channel: inout Channel, _ key: ChannelKey) -> Match? {
        guard !channel.sends.isEmpty, !channel.receives.isEmpty else { return nil }
        let signaled = HostEvent()
        let match = Match(key: key, send: channel.sends.removeFirst(), receive: channel.receives.removeFirst(),
                          previous: channel.lastSignal, signaled: signaled)
        channel.lastSignal = signaled
        return match
    }

    // MARK: Relays

    /// Relays still running in this process, over every fabric. A relay's task holds the
    /// message's buffers and semaphores (hence their devices) until it ends, which may be a
    /// moment after the ranks saw the message land: `DeviceGroup.waitForTransfers` waits for it.
    static let relaysInFlight = Atomic<Int>(0)

    /// Holds a match until its relay takes it, so that the task's closure keeps nothing alive
    /// once the relay has returned.
    private final class MatchBox: Sendable {
        private let slot: Mutex<Match?>
        init(_ match: Match) { slot = Mutex(match) }
        func take() -> Match? { slot.withLock { value in
            let taken = value
            value = nil
            return taken
        } }
    }

    /// This fabric's relays still running.
    let relays = Atomic<Int>(0)

    private func start(_ match: Match) {
        let box = MatchBox(match)
        Self.relaysInFlight.add(1, ordering: .sequentiallyConsistent)
        relays.add(1, ordering: .sequentiallyConsistent)
        Task.detached { [self] in
            if let m = box.take() { await relay(m) }
            // `m` and everything it referenced are released by now.
            relays.subtract(1, ordering: .sequentiallyConsistent)
            Self.relaysInFlight.subtract(1, ordering: .sequentiallyConsistent)
        }
    }

    private func relay(_ m: Match) async {
        let stop: @Sendable () throws -> Void = { [self] in
            if let error = state.withLock({ $0.aborted }) { throw error }
        }
        let sendRequest = m.send.request, receiveRequest = m.receive.request
        do {
            guard sendRequest.bytes == receiveRequest.bytes else {
                throw VkAttnError.invalidValue(op: "communicator", operand: "message",
                                               reason: "a send of \(sendRequest.bytes) bytes (rank \(m.key.source) -> \(m.key.destination), tag \(m.key.tag)) met a receive of \(receiveRequest.bytes) bytes")
            }
            try await m.send.ready.completion(check: stop)
            for r in m.send.after { try await r.event.wait() }
            if let free = m.receive.free { try await free.completion(check: stop) }
            for r in m.receive.after { try await r.event.wait() }
            try stop()
            let start = HostClock.nanoseconds()
            switch route {
            case .hostMapped:
                try Buffer.hostCopy(from: m.send.source, to: m.receive.destination)
            case .staged:
                guard let from = sendRequest.staging, let to = receiveRequest.staging else {
                    throw VkAttnError.unsupported(op: "communicator", reason: "staged transfer without staging buffers")
                }
                try Buffer.hostCopy(from: try from.slice(offset: 0, byteCount: sendRequest.bytes),
                                    to: try to.slice(offset: 0, byteCount: receiveRequest.bytes))
            case .importedHost:
                // The sender's GPU copy has put the bytes into memory the receiver's device
                // imports too: the relay only orders the receiver's copy out after it.
                break
            }
            let end = HostClock.nanoseconds()
            record(m, start: start, end: end)
            try? await m.previous?.wait()
            signal(m)
            sendRequest.event.succeed()
            receiveRequest.event.succeed()
        } catch {
            try? await m.previous?.wait()
            signal(m)
            sendRequest.event.fail(error)
            receiveRequest.event.fail(error)
        }
        m.signaled.succeed()
    }

    private func record(_ m: Match, start: UInt64, end: UInt64) {
        let bytes = m.send.request.bytes
        state.withLock { s in
            s.traffic[m.key.source].bytesSent += bytes
            s.traffic[m.key.source].messagesSent += 1
            s.traffic[m.key.destination].bytesReceived += bytes
            s.traffic[m.key.destination].messagesReceived += 1
        }
        guard let timeline, route != .importedHost else { return }
        let what = route == .staged ? "host copy (staged)" : "host copy"
        timeline.record(.init(rank: m.key.source, kind: .copy, label: "send \(m.key.tag) -> \(m.key.destination), \(what)",
                              startNs: Double(start), endNs: Double(end), bytes: bytes))
        timeline.record(.init(rank: m.key.destination, kind: .copy, label: "recv \(m.key.tag) <- \(m.key.source), \(what)",
                              startNs: Double(start), endNs: Double(end), bytes: bytes))
    }

    /// Signals message k on both semaphores (under the lock, so that an abort, which
    /// signals past every posted message, never races with it).
    private func signal(_ m: Match) {
        state.withLock { s in
            guard s.aborted == nil else { return }
            try? m.receive.request.semaphore.signal(m.receive.request.value)
            try? m.send.request.semaphore.signal(m.send.request.value)
        }
    }

    // MARK: Abort, traffic, contexts

    func abort(_ error: any Error) {
        let failed: [LocalRequest] = state.withLock { s in
            guard s.aborted == nil else { return [] }
            s.aborted = error
            var failed: [LocalRequest] = []
            for (key, channel) in s.channels {
                for (semaphore, posted) in [(channel.arrival, channel.postedReceives), (channel.sendDone, channel.postedSends)] {
                    try? semaphore.signal(max(semaphore.value, posted) + 1)
                }
                failed += channel.sends.map(\.request) + channel.receives.map(\.request)
                s.channels[key]?.sends.removeAll()
                s.channels[key]?.receives.removeAll()
            }
            return failed
        }
        for request in failed { request.event.fail(error) }
    }

    var abortError: (any Error)? { state.withLock { $0.aborted } }

    func traffic(_ rank: Int) -> RankTraffic { state.withLock { $0.traffic[rank] } }

    func resetTraffic() {
        state.withLock { s in s.traffic = [RankTraffic](repeating: RankTraffic(), count: devices.count) }
    }

    /// The context id of a subgroup: the same on every member that asks with the same key.
    func context(_ key: ContextKey) -> Int {
        state.withLock { s in
            if let id = s.contexts[key] { return id }
            let id = s.contexts.count + 1
            s.contexts[key] = id
            return id
        }
    }
}
