import CMPI
import Synchronization
import VkAttn
import VkAttnParallel

/// The protocol's collectives on MPI's nonblocking collectives (same signatures, checks and
/// results as the point-to-point defaults): all-gather -> MPI_Iallgather, all-to-all ->
/// MPI_Ialltoallv, all-reduce -> MPI_Iallreduce (MPI_MAX / MPI_SUM on fp32), the affine
/// all-scan with `.allGather` (LASP-2) -> MPI_Iexscan with a user-defined, non-commutative op
/// on one row of [a, b...]. `.chain` (LASP / ZeCO's pipelined chain) and scans of other
/// combines stay point-to-point (`collectivePaths` names each choice).
extension MPICommunicator {
    /// Which implementation each collective takes on this backend.
    public static let collectivePaths: [String: String] = [
        "allGather": "MPI_Iallgather",
        "allToAll": "MPI_Ialltoallv",
        "allReduce": "MPI_Iallreduce (MPI_MAX, MPI_SUM)",
        "allScan(AffineScan, .allGather)": "MPI_Iexscan, user-defined affine op",
        "allScan(.chain)": "point-to-point chain (ZeCO: one state per hop, pipelined)",
        "allScan(other combines)": "point-to-point default",
    ]

    private func collective(_ label: String, bytes: Int, ready: Submission?, after: [MPIRequest] = [], sendBytes: Int, receiveBytes: Int,
                            load: @escaping @Sendable (HostBlock) throws -> Void, post: @escaping CollectiveOp.Post,
                            store: @escaping @Sendable (HostBlock) throws -> Void) throws -> MPIRequest {
        let key = ChannelKey(context: context, peer: -1, tag: 0, kind: .collective)
        return try engine.core.post(key, device: device) { semaphore, value in
            CollectiveOp(ready: ready, after: after, sendBytes: sendBytes, receiveBytes: receiveBytes, load: load, post: post, store: store,
                         base: base(.collective, bytes: bytes, peer: -1, tag: 0, semaphore: semaphore, value: value, label: label))
        }.request
    }

    /// All-gather on MPI_Iallgather.
    /// - Parameters:
    ///   - source: This rank's block.
    ///   - destinations: One block per rank, each `source`'s size.
    ///   - tag: Unused: MPI matches collectives by order.
    ///   - stream: A stream of this rank's device.
    /// - Returns: One request for the whole collective.
    /// - Throws: `VkAttnError` for a block count other than `size`, a block of another size or
    ///   device, or more than 2 GiB; ``MPIError`` once the group was aborted.
    public func allGather(_ source: BufferSlice, into destinations: [BufferSlice], tag: Int, on stream: Stream) throws -> [MPIRequest] {
        let op = "communicator.allGather"
        guard destinations.count == size else {
            throw VkAttnError.invalidValue(op: op, operand: "destinations", reason: "\(destinations.count) blocks for \(size) ranks")
        }
        for (r, d) in destinations.enumerated() where d.byteCount != source.byteCount {
            throw VkAttnError.shapeMismatch(op: op, operand: "destinations[\(r)]", expected: "\(source.byteCount) bytes", actual: "\(d.byteCount) bytes")
        }
        try checkLocal(source, stream: stream, op: op, operand: "source")
        for d in destinations { try checkLocal(d, stream: stream, op: op, operand: "destinations") }
        let bytes = source.byteCount, count = try mpiCount(bytes, op: op), comm = self.comm
        let ready = try stream.submit()
        return [try collective("allGather (MPI_Iallgather)", bytes: bytes * size, ready: ready, sendBytes: bytes, receiveBytes: bytes * size,
                               load: { try $0.load([source]) },
                               post: { _, send, receive, handle in
                                   try mpiCheck(MPI_Iallgather(send.pointer, count, vkmpi_byte(), receive.pointer, count, vkmpi_byte(),
                                                                   comm.raw, handle), "MPI_Iallgather")
                                   return []
                               },
                               store: { try $0.store(destinations) })]
    }

    /// All-to-all on MPI_Ialltoallv.
    /// - Parameters:
    ///   - sources: One block per destination rank.
    ///   - destinations: One block per source rank.
    ///   - tag: Unused: MPI matches collectives by order.
    ///   - stream: A stream of this rank's device.
    /// - Returns: One request for the whole collective.
    /// - Throws: `VkAttnError` for block counts other than `size`, mismatched local sizes, a
    ///   block of another device, or more than 2 GiB; ``MPIError`` once the group was aborted.
    public func allToAll(_ sources: [BufferSlice], into destinations: [BufferSlice], tag: Int, on stream: Stream) throws -> [MPIRequest] {
        let op = "communicator.allToAll"
        guard sources.count == size, destinations.count == size else {
            throw VkAttnError.invalidValue(op: op, operand: "blocks", reason: "\(sources.count) sources and \(destinations.count) destinations for \(size) ranks")
        }
        guard sources[rank].byteCount == destinations[rank].byteCount else {
            throw VkAttnError.shapeMismatch(op: op, operand: "destinations[\(rank)]", expected: "\(sources[rank].byteCount) bytes", actual: "\(destinations[rank].byteCount) bytes")
        }
        for s in sources { try checkLocal(s, stream: stream, op: op, operand: "sources") }
        for d in destinations { try checkLocal(d, stream: stream, op: op, operand: "destinations") }
        let sendCounts = try sources.map { try mpiCount($0.byteCount, op: op) }
        let receiveCounts = try destinations.map { try mpiCount($0.byteCount, op: op) }
        let sendBytes = sources.reduce(0) { $0 + $1.byteCount }, receiveBytes = destinations.reduce(0) { $0 + $1.byteCount }
        _ = try mpiCount(sendBytes, op: op)
        _ = try mpiCount(receiveBytes, op: op)
        let comm = self.comm
        let ready = try stream.submit()
        return [try collective("allToAll (MPI_Ialltoallv)", bytes: receiveBytes, ready: ready, sendBytes: sendBytes, receiveBytes: receiveBytes,
                               load: { try $0.load(sources) },
                               post: { _, send, receive, handle in
                                   // Counts and displacements must live until the collective completes: the op keeps them.
                                   let arrays = [sendCounts, displacements(sendCounts), receiveCounts, displacements(receiveCounts)].map(HostBlock.init(int32s:))
                                   try mpiCheck(MPI_Ialltoallv(send.pointer, arrays[0].int32s, arrays[1].int32s, vkmpi_byte(),
                                                               receive.pointer, arrays[2].int32s, arrays[3].int32s, vkmpi_byte(), comm.raw, handle),
                                                "MPI_Ialltoallv")
                                   return arrays
                               },
                               store: { try $0.store(destinations) })]
    }

    /// All-reduce on MPI_Iallreduce; the result is in place for work recorded on `stream` after
    /// the call.
    /// - Parameters:
    ///   - buffer: The values, replaced by the reduction.
    ///   - count: The number of fp32 values.
    ///   - op: Sum or maximum.
    ///   - scratch: Unused by MPI (checked for size, as the default does).
    ///   - tag: Unused: MPI matches collectives by order.
    ///   - stream: A stream of this rank's device.
    /// - Returns: One request for the whole collective.
    /// - Throws: `VkAttnError` for a count that is not positive, buffers too small or of another
    ///   device; ``MPIError`` once the group was aborted.
    public func allReduce(_ buffer: BufferSlice, count: Int, op: ReduceOp, scratch: BufferSlice, tag: Int,
                          on stream: Stream) throws -> [MPIRequest] {
        let name = "communicator.allReduce"
        let bytes = count * 4
        guard count > 0, buffer.byteCount >= bytes, scratch.byteCount >= bytes else {
            throw VkAttnError.invalidValue(op: name, operand: "count", reason: "\(count) values need \(bytes) bytes of buffer and scratch (have \(buffer.byteCount), \(scratch.byteCount))")
        }
        try checkLocal(buffer, stream: stream, op: name, operand: "buffer")
        let data = try buffer.buffer.slice(offset: buffer.offset, byteCount: bytes)
        let n = try mpiCount(count, op: name), comm = self.comm
        let ready = try stream.submit()
        let request = try collective("allReduce \(op) (MPI_Iallreduce)", bytes: bytes, ready: ready, sendBytes: bytes, receiveBytes: bytes,
                                     load: { try $0.load([data]) },
                                     post: { _, send, receive, handle in
                                         try mpiCheck(MPI_Iallreduce(send.pointer, receive.pointer, n, vkmpi_float(),
                                                                     op == .max ? vkmpi_op_max() : vkmpi_op_sum(), comm.raw, handle), "MPI_Iallreduce")
                                         return []
                                     },
                                     store: { try $0.store([data]) })
        try complete(request, on: stream)
        try stream.barrier()
        return [request]
    }

    /// All-scan: MPI_Iexscan with the affine op for an `AffineScan` with `.allGather`; the
    /// point-to-point default otherwise.
    /// - Parameters:
    ///   - value: This rank's value.
    ///   - result: Receives the exclusive prefix.
    ///   - combine: The operator and the value's layout.
    ///   - algorithm: `.allGather` takes MPI's scan; `.chain` the point-to-point chain.
    ///   - scratch: Scratch for the point-to-point paths.
    ///   - tag: The first tag of the point-to-point paths.
    ///   - stream: A stream of this rank's device.
    /// - Returns: The requests.
    /// - Throws: `VkAttnError` for buffers too small or of another device; ``MPIError`` once the
    ///   group was aborted.
    public func allScan<C: ScanCombine>(_ value: BufferSlice, into result: BufferSlice, combine: C, algorithm: AllScanAlgorithm,
                                        scratch: BufferSlice, tag: Int, on stream: Stream) throws -> [MPIRequest] {
        guard let affine = combine as? AffineScan, case .allGather = algorithm else {
            return try PointToPoint(self).allScan(value, into: result, combine: combine, algorithm: algorithm, scratch: scratch, tag: tag, on: stream)
        }
        let op = "communicator.allScan"
        let bytes = combine.byteCount
        guard bytes > 0, value.byteCount >= bytes, result.byteCount >= bytes else {
            throw VkAttnError.invalidValue(op: op, operand: "value", reason: "needs \(bytes) bytes (value \(value.byteCount), result \(result.byteCount))")
        }
        // The same scratch contract as the point-to-point default, so callers size it once.
        guard scratch.byteCount >= (size + 1) * bytes else {
            throw VkAttnError.invalidValue(op: op, operand: "scratch", reason: "\(scratch.byteCount) bytes, needs \((size + 1) * bytes)")
        }
        try checkLocal(value, stream: stream, op: op, operand: "value")
        try checkLocal(result, stream: stream, op: op, operand: "result")
        let v = try value.buffer.slice(offset: value.offset, byteCount: bytes)
        let out = try result.buffer.slice(offset: result.offset, byteCount: bytes)
        let rows = try mpiCount(affine.rows, op: op), width = affine.width, comm = self.comm, first = rank == 0
        let ready = try stream.submit()
        let request = try collective("allScan affine (MPI_Iexscan)", bytes: bytes, ready: ready, sendBytes: bytes, receiveBytes: bytes,
                                     load: { try $0.load([v]) },
                                     post: { loop, send, receive, handle in
                                         let (row, combineOp) = try loop.affineOp(width: width)
                                         try mpiCheck(MPI_Iexscan(send.pointer, receive.pointer, rows, row, combineOp, comm.raw, handle), "MPI_Iexscan")
                                         return []
                                     },
                                     store: { block in
                                         // MPI leaves rank 0's exclusive prefix undefined: the identity (a = 1, B = 0).
                                         if first {
                                             let f = block.pointer.bindMemory(to: Float.self, capacity: Int(rows) * (width + 1))
                                             for i in 0..<Int(rows) * (width + 1) { f[i] = i % (width + 1) == 0 ? 1 : 0 }
                                         }
                                         try block.store([out])
                                     })
        try complete(request, on: stream)
        try stream.barrier()
        return [request]
    }

    // MARK: Host-side collectives (tests, bench reports)

    /// Every rank's `bytes` (any lengths), on every rank, in rank order.
    /// - Parameter bytes: This rank's bytes.
    /// - Returns: Every rank's bytes, in rank order.
    /// - Throws: ``MPIError`` when MPI fails or the group was aborted.
    public func hostAllGather(_ bytes: [UInt8]) async throws -> [[UInt8]] {
        let lengths = try await gatherFixed(withUnsafeBytes(of: Int64(bytes.count).littleEndian) { Array($0) })
            .map { Int(Int64(littleEndian: $0.withUnsafeBytes { $0.loadUnaligned(as: Int64.self) })) }
        let width = max(1, lengths.max() ?? 1)
        let padded = try await gatherFixed(bytes + [UInt8](repeating: 0, count: width - bytes.count))
        return zip(padded, lengths).map { Array($0.prefix($1)) }
    }

    /// Waits until every rank got here (and surfaces an abort).
    /// - Throws: ``MPIError`` when MPI fails or the group was aborted.
    public func barrier() async throws { _ = try await gatherFixed([0]) }

    private func gatherFixed(_ bytes: [UInt8]) async throws -> [[UInt8]] {
        let n = bytes.count, count = try mpiCount(n, op: "hostAllGather"), comm = self.comm, ranks = size
        let box = Mutex<[UInt8]>([])
        let request = try collective("host all-gather", bytes: n * ranks, ready: nil, sendBytes: n, receiveBytes: n * ranks,
                                     load: { block in bytes.withUnsafeBytes { if let b = $0.baseAddress { block.pointer.copyMemory(from: b, byteCount: n) } } },
                                     post: { _, send, receive, handle in
                                         try mpiCheck(MPI_Iallgather(send.pointer, count, vkmpi_byte(), receive.pointer, count, vkmpi_byte(),
                                                                     comm.raw, handle), "MPI_Iallgather")
                                         return []
                                     },
                                     store: { block in box.withLock { $0 = Array(UnsafeRawBufferPointer(start: block.pointer, count: n * ranks)) } })
        try await request.wait()
        let all = box.withLock { $0 }
        return (0..<ranks).map { Array(all[$0 * n..<($0 + 1) * n]) }
    }
}

/// Exclusive prefix sums of MPI counts (displacements).
func displacements(_ counts: [Int32]) -> [Int32] {
    var offsets: [Int32] = []
    var total: Int32 = 0
    for c in counts {
        offsets.append(total)
        total += c
    }
    return offsets
}

/// MPI's user function for the affine combine: `inout` = `in` (the earlier ranks) followed by
/// `inout`, row by row; a row is one element of the datatype, [a, b_0 ... b_{w-1}] fp32.
func affineCombine(_ earlier: UnsafeMutableRawPointer?, _ later: UnsafeMutableRawPointer?, _ length: UnsafeMutablePointer<Int32>?,
                   _ type: UnsafeMutablePointer<MPI_Datatype?>?) {
    guard let earlier, let later, let length, let type else { return }
    var size: Int32 = 0
    MPI_Type_size(type.pointee, &size)
    let stride = Int(size) / 4
    let e = earlier.assumingMemoryBound(to: Float.self), l = later.assumingMemoryBound(to: Float.self)
    for r in 0..<Int(length.pointee) {
        let row = r * stride
        let a2 = l[row]
        for c in 1..<stride { l[row + c] = a2 * e[row + c] + l[row + c] }
        l[row] = a2 * e[row]
    }
}

extension EngineLoop {
    /// The row datatype and affine op for rows of `width` + 1 floats (made once, engine thread).
    func affineOp(width: Int) throws -> (MPI_Datatype?, MPI_Op?) {
        if let made = affineOps[width] { return made }
        var row: MPI_Datatype?, op: MPI_Op?
        try mpiCheck(MPI_Type_contiguous(Int32(width + 1), vkmpi_float(), &row), "MPI_Type_contiguous")
        try mpiCheck(MPI_Type_commit(&row), "MPI_Type_commit")
        try mpiCheck(MPI_Op_create(affineCombine, 0, &op), "MPI_Op_create")
        affineOps[width] = (row, op)
        return (row, op)
    }
}

extension HostBlock {
    convenience init(int32s values: [Int32]) {
        self.init(bytes: max(1, values.count) * 4)
        values.withUnsafeBytes { if let b = $0.baseAddress { pointer.copyMemory(from: b, byteCount: values.count * 4) } }
    }

    var int32s: UnsafeMutablePointer<Int32> { pointer.assumingMemoryBound(to: Int32.self) }
}
