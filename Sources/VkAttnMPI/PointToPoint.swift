import VkAttn
import VkAttnParallel

/// A communicator's point-to-point operations without its own collectives: the protocol's
/// default collectives (built on send and receive) run on it. `MPICommunicator` uses it for
/// what MPI has no collective for (ZeCO's pipelined chain, scans of other combines); tests
/// use it to compare both implementations.
public struct PointToPoint<Base: Communicator>: Communicator {
    public let base: Base

    public init(_ base: Base) { self.base = base }

    public var rank: Int { base.rank }
    public var globalRank: Int { base.globalRank }
    public var size: Int { base.size }
    public var device: Device { base.device }
    public var route: TransferRoute { base.route }
    public var clock: GPUClock { base.clock }
    public var timeline: ParallelTimeline? { base.timeline }
    public var traffic: RankTraffic { base.traffic }

    public func send(_ source: BufferSlice, to peer: Int, tag: Int, after: [Base.Request], on stream: Stream) throws -> Base.Request {
        try base.send(source, to: peer, tag: tag, after: after, on: stream)
    }

    public func receive(into destination: BufferSlice, from peer: Int, tag: Int, after: [Base.Request], on stream: Stream) throws -> Base.Request {
        try base.receive(into: destination, from: peer, tag: tag, after: after, on: stream)
    }

    public func complete(_ request: Base.Request, on stream: Stream) throws { try base.complete(request, on: stream) }

    public func subgroup(_ members: [Int]) throws -> PointToPoint<Base> { PointToPoint(try base.subgroup(members)) }

    public func collectTimestamps(of stream: Stream) throws { try base.collectTimestamps(of: stream) }

    public func abort(_ error: any Error) { base.abort(error) }
}
