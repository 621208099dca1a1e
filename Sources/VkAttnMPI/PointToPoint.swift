import VkAttn
import VkAttnParallel

/// A communicator's point-to-point operations without its own collectives: the protocol's
/// default collectives (built on send and receive) run on it. `MPICommunicator` uses it for
/// what MPI has no collective for (ZeCO's pipelined chain, scans of other combines); tests
/// use it to compare both implementations.
public struct PointToPoint<Base: Communicator>: Communicator {
    /// The wrapped communicator, which does the sends and receives.
    public let base: Base

    /// - Parameter base: The communicator whose point-to-point operations to use.
    public init(_ base: Base) { self.base = base }

    /// The base's rank.
    public var rank: Int { base.rank }
    /// The base's global rank.
    public var globalRank: Int { base.globalRank }
    /// The base's size.
    public var size: Int { base.size }
    /// The base's device.
    public var device: Device { base.device }
    /// The base's transfer path.
    public var route: TransferRoute { base.route }
    /// The base's GPU clock.
    public var clock: GPUClock { base.clock }
    /// The base's timeline.
    public var timeline: ParallelTimeline? { base.timeline }
    /// The base's traffic.
    public var traffic: RankTraffic { base.traffic }

    /// Posts a send on the base.
    /// - Parameters:
    ///   - source: The bytes to send.
    ///   - peer: The receiving rank.
    ///   - tag: The message's tag.
    ///   - after: Requests the transfer must also follow.
    ///   - stream: A stream of this rank's device.
    /// - Returns: The base's request.
    /// - Throws: The base's errors.
    public func send(_ source: BufferSlice, to peer: Int, tag: Int, after: [Base.Request], on stream: Stream) throws -> Base.Request {
        try base.send(source, to: peer, tag: tag, after: after, on: stream)
    }

    /// Posts a receive on the base.
    /// - Parameters:
    ///   - destination: Where the bytes go.
    ///   - peer: The sending rank.
    ///   - tag: The message's tag.
    ///   - after: Requests the transfer must also follow.
    ///   - stream: A stream of this rank's device.
    /// - Returns: The base's request.
    /// - Throws: The base's errors.
    public func receive(into destination: BufferSlice, from peer: Int, tag: Int, after: [Base.Request], on stream: Stream) throws -> Base.Request {
        try base.receive(into: destination, from: peer, tag: tag, after: after, on: stream)
    }

    /// Completes a request on the base.
    /// - Parameters:
    ///   - request: A request of this rank.
    ///   - stream: The stream whose later work needs it done.
    /// - Throws: The base's errors.
    public func complete(_ request: Base.Request, on stream: Stream) throws { try base.complete(request, on: stream) }

    /// The base's subgroup, wrapped.
    /// - Parameter members: Ranks of this communicator, including this rank.
    /// - Returns: The wrapped subgroup communicator.
    /// - Throws: The base's errors.
    public func subgroup(_ members: [Int]) throws -> PointToPoint<Base> { PointToPoint(try base.subgroup(members)) }

    /// Collects the base's copy intervals.
    /// - Parameter stream: A synchronized stream of this rank.
    /// - Throws: The base's errors.
    public func collectTimestamps(of stream: Stream) throws { try base.collectTimestamps(of: stream) }

    /// Aborts the base's group.
    /// - Parameter error: The error pending operations fail with.
    public func abort(_ error: any Error) { base.abort(error) }
}
