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
    /// The bytes the transfer moves.
    var bytes: Int { get }
    /// Returns when the transfer is done on the host side (for a receive in the staged and
    /// imported-host paths, the final staging-to-device copy is recorded by `complete(_:on:)`);
    /// rethrows its error.
    /// - Throws: The transfer's error: a size mismatch between the send and the receive, a peer's
    ///   abort, a timeout, a device error.
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
    /// The handle of a posted send or receive.
    associatedtype Request: CommunicationRequest

    /// This rank, in 0..<size.
    var rank: Int { get }
    /// This rank in the whole group (subgroups keep it): how timelines and traffic name it.
    var globalRank: Int { get }
    /// The number of ranks in this communicator.
    var size: Int { get }
    /// This rank's device.
    var device: Device { get }
    /// How this communicator's bytes travel between devices.
    var route: TransferRoute { get }
    /// Maps this device's GPU timestamps to the host clock shared by every rank.
    var clock: GPUClock { get }
    /// Where intervals of compute and copies are recorded (nil: not recorded).
    var timeline: ParallelTimeline? { get }

    /// Posts a send of `source` to rank `peer`; submits `stream`.
    /// - Parameters:
    ///   - source: The bytes to send, on this rank's device; read after the work recorded on
    ///     `stream` so far.
    ///   - peer: The receiving rank, in 0..<size.
    ///   - tag: Matches the send with the peer's receive of the same tag (in posting order).
    ///   - after: Requests the transfer must also follow.
    ///   - stream: A stream of this rank's device.
    /// - Returns: The request; complete it before overwriting `source`.
    /// - Throws: `VkAttnError` for a peer outside the group or a slice of another device; the
    ///   group's abort error once it was aborted.
    func send(_ source: BufferSlice, to peer: Int, tag: Int, after: [Request], on stream: Stream) throws -> Request
    /// Posts a receive into `destination` (as many bytes as the matching send) from `peer`;
    /// submits `stream`.
    /// - Parameters:
    ///   - destination: Where the bytes go, on this rank's device; overwritten only after the
    ///     work recorded on `stream` so far.
    ///   - peer: The sending rank.
    ///   - tag: Matches the receive with the peer's send of the same tag.
    ///   - after: Requests the transfer must also follow.
    ///   - stream: A stream of this rank's device.
    /// - Returns: The request; complete it before reading `destination`.
    /// - Throws: `VkAttnError` for a peer outside the group or a slice of another device; the
    ///   group's abort error once it was aborted.
    func receive(into destination: BufferSlice, from peer: Int, tag: Int, after: [Request], on stream: Stream) throws -> Request
    /// Records on `stream` what makes its later work see `request` done: a receive's bytes in
    /// place, a send's source free to overwrite. Call it right before that work; calling it
    /// again on the same request only repeats the waits.
    /// - Parameters:
    ///   - request: A request this rank posted.
    ///   - stream: The stream whose later work needs the transfer done.
    /// - Throws: The errors of recording the waits (and, in the staged paths, the copy).
    func complete(_ request: Request, on stream: Stream) throws
    /// A communicator over `members` (ranks of this one; rank i of the result is
    /// `members[i]`). Every member calls it, in the same order relative to its other calls.
    /// - Parameter members: Distinct ranks of this communicator, including this rank.
    /// - Returns: The subgroup's communicator for this rank.
    /// - Throws: `VkAttnError.invalidValue(op:operand:reason:)` for members that are out of
    ///   range, repeated or lack this rank.
    func subgroup(_ members: [Int]) throws -> Self
    /// Moves the timestamps this communicator recorded on `stream` (a synchronized stream of
    /// this rank) into the timeline.
    /// - Parameter stream: A synchronized stream of this rank on which transfers were recorded.
    /// - Throws: The errors of reading the timestamps.
    func collectTimestamps(of stream: Stream) throws
    /// Fails every pending and later operation of the whole group with `error` and releases
    /// every GPU wait on them (one rank failed; the others must not hang).
    /// - Parameter error: The error every pending and later operation fails with.
    func abort(_ error: any Error)
    /// Bytes this rank sent and received so far (all communicators of the group share them).
    var traffic: RankTraffic { get }

    // Collectives: the defaults (Collectives.swift, AllReduce.swift, AllScan.swift) build them
    // from send and receive; a backend with collectives of its own (MPI) implements them.
    /// Every rank's `source` lands in `destinations[r]` of every rank.
    /// - Parameters:
    ///   - source: This rank's block.
    ///   - destinations: One block per rank, each `source`'s size.
    ///   - tag: The tag of the collective's messages.
    ///   - stream: A stream of this rank's device.
    /// - Returns: The requests; complete them on the stream that reads `destinations`.
    /// - Throws: `VkAttnError` for a block count other than `size` or a block of another size.
    func allGather(_ source: BufferSlice, into destinations: [BufferSlice], tag: Int, on stream: Stream) throws -> [Request]
    /// Rank r's `sources[s]` lands in rank s's `destinations[r]`.
    /// - Parameters:
    ///   - sources: One block per destination rank.
    ///   - destinations: One block per source rank; sizes agree pairwise with the peers' sources.
    ///   - tag: The tag of the collective's messages.
    ///   - stream: A stream of this rank's device.
    /// - Returns: The requests; complete them on the stream that reads `destinations`.
    /// - Throws: `VkAttnError` for block counts other than `size` or mismatched local sizes.
    func allToAll(_ sources: [BufferSlice], into destinations: [BufferSlice], tag: Int, on stream: Stream) throws -> [Request]
    /// Reduces `count` fp32 values over every rank, in place; every rank ends with the same bits.
    /// - Parameters:
    ///   - buffer: The values, replaced by the reduction.
    ///   - count: The number of fp32 values.
    ///   - op: Sum or maximum.
    ///   - scratch: Room for `count` values.
    ///   - tag: The tag of the collective's messages.
    ///   - stream: A stream of this rank's device; later work on it sees the result.
    /// - Returns: The requests (wait on them to surface transfer errors).
    /// - Throws: `VkAttnError` for a count that is not positive or buffers too small.
    func allReduce(_ buffer: BufferSlice, count: Int, op: ReduceOp, scratch: BufferSlice, tag: Int,
                   on stream: Stream) throws -> [Request]
    /// Exclusive scan of the ranks' values under `combine`: rank r gets the combination of the
    /// values of ranks 0..<r (rank 0 the identity).
    /// - Parameters:
    ///   - value: This rank's value, `combine.byteCount` bytes.
    ///   - result: Receives the exclusive prefix.
    ///   - combine: The associative operator and the value's layout.
    ///   - algorithm: A chain (LASP, ZeCO) or one all-gather (LASP-2).
    ///   - scratch: One value for a chain, `size + 1` values for the all-gather.
    ///   - tag: The first tag of the collective's messages (a chain of k segments uses k tags).
    ///   - stream: A stream of this rank's device; later work on it sees the result.
    /// - Returns: The requests (wait on them to surface transfer errors).
    /// - Throws: `VkAttnError` for buffers too small or a segment count outside 1...rows.
    func allScan<C: ScanCombine>(_ value: BufferSlice, into result: BufferSlice, combine: C, algorithm: AllScanAlgorithm,
                                 scratch: BufferSlice, tag: Int, on stream: Stream) throws -> [Request]
}

/// Bytes and messages of one rank.
public struct RankTraffic: Sendable, Hashable, Codable {
    /// Bytes this rank sent.
    public var bytesSent = 0
    /// Bytes this rank received.
    public var bytesReceived = 0
    /// Messages this rank sent.
    public var messagesSent = 0
    /// Messages this rank received.
    public var messagesReceived = 0

    /// No traffic yet.
    public init() {}
}

extension Communicator {
    /// A send that follows only the work recorded on `stream`.
    /// - Parameters:
    ///   - source: The bytes to send.
    ///   - peer: The receiving rank.
    ///   - tag: The message's tag.
    ///   - stream: A stream of this rank's device.
    /// - Returns: The request.
    /// - Throws: As ``send(_:to:tag:after:on:)``.
    public func send(_ source: BufferSlice, to peer: Int, tag: Int, on stream: Stream) throws -> Request {
        try send(source, to: peer, tag: tag, after: [], on: stream)
    }

    /// A receive that follows only the work recorded on `stream`.
    /// - Parameters:
    ///   - destination: Where the bytes go.
    ///   - peer: The sending rank.
    ///   - tag: The message's tag.
    ///   - stream: A stream of this rank's device.
    /// - Returns: The request.
    /// - Throws: As ``receive(into:from:tag:after:on:)``.
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
