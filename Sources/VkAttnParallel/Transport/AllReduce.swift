import VkAttn
extension Communicator {
    /// Reduces `count` fp32 values at `buffer` over every rank with `op`, in place; every rank
    /// ends with identical values (each step adds the same two operands, in either order).
    ///
    /// Recursive doubling: log2(P) exchange steps among the largest power of two P <= N; each
    /// of the N - P other ranks first folds its values into rank r - P and receives the result
    /// back at the end (two more steps). `scratch` holds `count` values. Everything is posted
    /// and recorded at once (the GPU and the relays do the waiting); the result is in `buffer`
    /// for work recorded on `stream` after this call. Returns the requests (await them to
    /// surface transfer errors).
    /// - Parameters:
    ///   - buffer: The values, replaced by the reduction.
    ///   - count: The number of fp32 values.
    ///   - op: Sum or maximum.
    ///   - scratch: Room for `count` values.
    ///   - tag: The tag of the collective's messages.
    ///   - stream: A stream of this rank's device.
    /// - Returns: The requests.
    /// - Throws: `VkAttnError.invalidValue(op:operand:reason:)` for a count that is not positive
    ///   or buffers too small.
    public func allReduce(_ buffer: BufferSlice, count: Int, op: ReduceOp, scratch: BufferSlice, tag: Int,
                          on stream: Stream) throws -> [Request] {
        let name = "communicator.allReduce"
        let bytes = count * 4
        guard count > 0, buffer.byteCount >= bytes, scratch.byteCount >= bytes else {
            throw VkAttnError.invalidValue(op: name, operand: "count", reason: "\(count) values need \(bytes) bytes of buffer and scratch (have \(buffer.byteCount), \(scratch.byteCount))")
        }
        let data = try buffer.buffer.slice(offset: buffer.offset, byteCount: bytes)
        let spare = try scratch.buffer.slice(offset: scratch.offset, byteCount: bytes)
        var requests: [Request] = []
        var p = 1
        while p * 2 <= size { p *= 2 }

        func exchange(with peer: Int, combine: Bool, sendOnly: Bool = false, receiveOnly: Bool = false) throws {
            var sent: Request?
            if !receiveOnly { sent = try send(data, to: peer, tag: tag, on: stream) }
            if !sendOnly {
                let received = try receive(into: combine ? spare : data, from: peer, tag: tag, on: stream)
                try complete(received, on: stream)
                requests.append(received)
            }
            if let sent {
                try complete(sent, on: stream)
                requests.append(sent)
            }
            if combine && !sendOnly {
                try stream.barrier()
                try ParallelKernels.elementwise(x: spare, y: data, count: count, op: op, on: stream)
                try stream.barrier()
            }
        }

        if rank >= p {
            try exchange(with: rank - p, combine: false, sendOnly: true)
            try exchange(with: rank - p, combine: false, receiveOnly: true)
            return requests
        }
        if rank + p < size { try exchange(with: rank + p, combine: true, receiveOnly: true) }
        var distance = 1
        while distance < p {
            try exchange(with: rank ^ distance, combine: true)
            distance *= 2
        }
        if rank + p < size { try exchange(with: rank + p, combine: false, sendOnly: true) }
        return requests
    }
}
