import VkAttn
/// How bytes move from one rank's device to another's.
public enum TransferRoute: String, Sendable, Hashable, Codable, CaseIterable {
    /// A host task copies straight from the source's mapped memory into the destination's
    /// (every device's memory is host-visible: lavapipe, integrated GPUs).
    case hostMapped = "host-mapped"
    /// Device -> host-visible staging (a GPU copy, on the transfer queue where the device has
    /// one) -> host copy -> the receiver's staging -> device (a GPU copy on the receiver).
    case staged
    /// Device -> one host allocation imported into both the sender's and the receiver's
    /// device (VK_EXT_external_memory_host; a GPU copy on the sender) -> device (a GPU copy on
    /// the receiver): no host copy, the relay only orders the two.
    case importedHost = "imported-host"
}

/// A posted send or receive.
public protocol CommunicationRequest: Sendable {
    var bytes: Int { get }
    /// Returns when the transfer is done on the host side (for a receive in the staged and
    /// imported-host paths, the final staging-to-device copy is recorded by `complete(_:on:)`);
    /// rethrows its error.
    func wait() async throws
}

/// Point-to-point messages between ranks, each rank a device of its own, behind which an
/// in-process implementation (`LocalCommunicator`: devices of one process) and later a
/// multi-process one can sit (`MPICommunicator` in VkAttnMPI). Collectives (all-gather,
/// all-to-all, all-reduce, all-scan) are requirements with default implementations built on
/// these operations; a backend may implement them on collectives of its own.
///
/// Ordering model: a rank records its work on its own streams. `send` and `receive` are
/// posted at a point of a stream and submit it: the bytes of a send are read after the work
/// recorded so far, and a receive's destination is overwritten only after it; `after` adds
/// requests the transfer must also follow (the receive that filled a send's source, the send
/// that still reads a receive's destination). `complete` then records, on the stream that
/// consumes the data, what orders later work after the transfer (GPU waits on timeline
/// semaphores; in the staged path also the copy out of staging). Posting never blocks, so no
/// order of posts between ranks can deadlock; a rank only waits where it completes a request.
/// Messages between two ranks with the same tag are matched in posting order.
public protocol Communicator: Sendable {
    associatedtype Request: CommunicationRequest

    /// This rank, in 0..<size.
    var rank: Int { get }
    /// This rank in the whole group (subgroups keep it): how timelines and traffic name it.
    var globalRank: Int { get }
    var size: Int { get }
    /// This rank's device.
    var device: Device { get }
    var route: TransferRoute { get }
    /// Maps this device's GPU timestamps to the host clock shared by every rank.
    var clock: GPUClock { get }
    /// Where intervals of compute and copies are recorded (nil: not recorded).
    var timeline: ParallelTimeline? { get }

    /// Posts a send of `source` to rank `peer`; submits `stream`.
    func send(_ source: BufferSlice, to peer: Int, tag: Int, after: [Request], on stream: Stream) throws -> Request
    /// Posts a receive into `destination` (as many bytes as the matching send) from `peer`;
    /// submits `stream`.
    func receive(into destination: BufferSlice, from peer: Int, tag: Int, after: [Request], on stream: Stream) throws -> Request
    /// Records on `stream` what makes its later work see `request` done: a receive's bytes in
    /// place, a send's source free to overwrite. Call it right before that work; calling it
    /// again on the same request only repeats the waits.
    func complete(_ request: Request, on stream: Stream) throws
    /// A communicator over `members` (ranks of this one; rank i of the result is
    /// `members[i]`). Every member calls it, in the same order relative to its other calls.
    func subgroup(_ members: [Int]) throws -> Self
    /// Moves the timestamps this communicator recorded on `stream` (a synchronized stream of
    /// this rank) into the timeline.
    func collectTimestamps(of stream: Stream) throws
    /// Fails every pending and later operation of the whole group with `error` and releases
    /// every GPU wait on them (one rank failed; the others must not hang).
    func abort(_ error: any Error)
    /// Bytes this rank sent and received so far (all communicators of the group share them).
    var traffic: RankTraffic { get }

    // Collectives: the defaults (Collectives.swift, AllReduce.swift, AllScan.swift) build them
    // from send and receive; a backend with collectives of its own (MPI) implements them.
    func allGather(_ source: BufferSlice, into destinations: [BufferSlice], tag: Int, on stream: Stream) throws -> [Request]
    func allToAll(_ sources: [BufferSlice], into destinations: [BufferSlice], tag: Int, on stream: Stream) throws -> [Request]
    func allReduce(_ buffer: BufferSlice, count: Int, op: ReduceOp, scratch: BufferSlice, tag: Int,
                   on stream: Stream) throws -> [Request]
    func allScan<C: ScanCombine>(_ value: BufferSlice, into result: BufferSlice, combine: C, algorithm: AllScanAlgorithm,
                                 scratch: BufferSlice, tag: Int, on stream: Stream) throws -> [Request]
}

/// Bytes and messages of one rank.
public struct RankTraffic: Sendable, Hashable, Codable {
    public var bytesSent = 0
    public var bytesReceived = 0
    public var messagesSent = 0
    public var messagesReceived = 0

    public init() {}
}

extension Communicator {
    public func send(_ source: BufferSlice, to peer: Int, tag: Int, on stream: Stream) throws -> Request {
        try send(source, to: peer, tag: tag, after: [], on: stream)
    }

    public func receive(into destination: BufferSlice, from peer: Int, tag: Int, on stream: Stream) throws -> Request {
        try receive(into: destination, from: peer, tag: tag, after: [], on: stream)
    }

    /// Checks a peer rank.
    func checkPeer(_ peer: Int, op: String) throws {
        guard peer >= 0, peer < size else {
            throw VkAttnError.invalidValue(op: op, operand: "peer", reason: "rank \(peer) is outside 0..<\(size)")
        }
    }
}
