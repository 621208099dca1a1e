import VkAttn
/// All-gather and all-to-all built from sends and receives: every transfer is posted at once
/// (direct exchange), so nothing waits on a peer's order of posts and any rank count works.
/// Each rank sends and receives N - 1 blocks; its own block is a local copy on `stream`.
extension Communicator {
    /// Every rank's `source` lands in `destinations[r]` of every rank (`destinations[rank]`
    /// gets the local copy). Complete the returned requests on the stream that reads them.
    /// - Parameters:
    ///   - source: This rank's block.
    ///   - destinations: One block per rank, each `source`'s size.
    ///   - tag: The tag of the collective's messages.
    ///   - stream: A stream of this rank's device.
    /// - Returns: The requests.
    /// - Throws: `VkAttnError` for a block count other than `size` or a block of another size.
    public func allGather(_ source: BufferSlice, into destinations: [BufferSlice], tag: Int, on stream: Stream) throws -> [Request] {
        let op = "communicator.allGather"
        guard destinations.count == size else {
            throw VkAttnError.invalidValue(op: op, operand: "destinations", reason: "\(destinations.count) blocks for \(size) ranks")
        }
        for (r, d) in destinations.enumerated() where d.byteCount != source.byteCount {
            throw VkAttnError.shapeMismatch(op: op, operand: "destinations[\(r)]", expected: "\(source.byteCount) bytes", actual: "\(d.byteCount) bytes")
        }
        return try allToAll([BufferSlice](repeating: source, count: size), into: destinations, tag: tag, on: stream)
    }

    /// Rank r's `sources[s]` lands in rank s's `destinations[r]` (sizes must agree pairwise).
    /// - Parameters:
    ///   - sources: One block per destination rank.
    ///   - destinations: One block per source rank.
    ///   - tag: The tag of the collective's messages.
    ///   - stream: A stream of this rank's device.
    /// - Returns: The requests; complete them on the stream that reads `destinations`.
    /// - Throws: `VkAttnError` for block counts other than `size` or mismatched local sizes.
    public func allToAll(_ sources: [BufferSlice], into destinations: [BufferSlice], tag: Int, on stream: Stream) throws -> [Request] {
        let op = "communicator.allToAll"
        guard sources.count == size, destinations.count == size else {
            throw VkAttnError.invalidValue(op: op, operand: "blocks", reason: "\(sources.count) sources and \(destinations.count) destinations for \(size) ranks")
        }
        guard sources[rank].byteCount == destinations[rank].byteCount else {
            throw VkAttnError.shapeMismatch(op: op, operand: "destinations[\(rank)]", expected: "\(sources[rank].byteCount) bytes", actual: "\(destinations[rank].byteCount) bytes")
        }
        try stream.barrier()
        try stream.copy(from: sources[rank], to: destinations[rank])
        var requests: [Request] = []
        // Sends first, then receives, each in ring order from the next rank: every rank's
        // first message goes to a different peer.
        for k in 1..<max(size, 1) {
            let peer = (rank + k) % size
            requests.append(try send(sources[peer], to: peer, tag: tag, on: stream))
        }
        for k in 1..<max(size, 1) {
            let peer = (rank - k + size) % size
            requests.append(try receive(into: destinations[peer], from: peer, tag: tag, on: stream))
        }
        return requests
    }

    /// Completes every request on `stream` (see `complete(_:on:)`).
    /// - Parameters:
    ///   - requests: Requests this rank posted.
    ///   - stream: The stream whose later work needs them done.
    /// - Throws: The errors of completing each request.
    public func complete(_ requests: [Request], on stream: Stream) throws {
        for r in requests { try complete(r, on: stream) }
    }

    /// Waits on the host for every request; rethrows the first failure.
    /// - Parameter requests: Requests this rank posted.
    /// - Throws: The first request's error.
    public func wait(_ requests: [Request]) async throws {
        for r in requests { try await r.wait() }
    }
}
