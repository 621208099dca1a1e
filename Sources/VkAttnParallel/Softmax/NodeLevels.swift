import VkAttn
/// Ranks in two levels: nodes of `ranksPerNode` consecutive ranks, each node's position 0 its
/// leader. An all-reduce runs inside the node, then between the leaders, then each leader
/// sends the result to the rest of its node, so only leaders cross between nodes. Subgroups
/// are formed alike on every rank (the node, then the ranks at this rank's position).
struct NodeLevels<C: Communicator>: CustomStringConvertible {
    let m: Int
    let nodes: Int
    let position: Int
    /// The rank's node (nil when a node is one rank).
    let node: C?
    /// The ranks at this rank's position of every node (nil for one node); only the leaders'
    /// carries traffic.
    let across: C?

    init(comm: C, ranksPerNode m: Int) throws {
        let g = comm.rank / m
        self.m = m
        nodes = comm.size / m
        position = comm.rank % m
        node = m > 1 ? try comm.subgroup(Array(g * m..<(g + 1) * m)) : nil
        across = nodes > 1 ? try comm.subgroup((0..<nodes).map { $0 * m + comm.rank % m }) : nil
    }

    var description: String { "\(nodes) nodes x \(m) ranks" }

    /// Reduces `count` fp32 values of `buffer` over every rank, in place; every rank ends with
    /// the leaders' bits. Tags `tag`, `tag + 1`, `tag + 2`.
    func allReduce(_ buffer: BufferSlice, count: Int, op: ReduceOp, scratch: BufferSlice, tag: Int, on stream: Stream) throws -> [C.Request] {
        var requests: [C.Request] = []
        if let node { requests += try node.allReduce(buffer, count: count, op: op, scratch: scratch, tag: tag, on: stream) }
        guard position == 0 else {
            guard let node else { return requests }
            let r = try node.receive(into: buffer, from: 0, tag: tag + 2, on: stream)
            try node.complete(r, on: stream)
            try stream.barrier()
            return requests + [r]
        }
        if let across { requests += try across.allReduce(buffer, count: count, op: op, scratch: scratch, tag: tag + 1, on: stream) }
        if let node {
            for peer in 1..<m { requests.append(try node.send(buffer, to: peer, tag: tag + 2, on: stream)) }
        }
        return requests
    }
}
