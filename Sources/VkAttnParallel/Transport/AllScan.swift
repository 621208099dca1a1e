import VkAttn
/// An associative combine for `allScan`: values are `rows` rows of `rowBytes` bytes, combined
/// row by row (so a value can be pipelined in row segments).
public protocol ScanCombine: Sendable {
    /// Rows of a value.
    var rows: Int { get }
    /// Bytes of one row.
    var rowBytes: Int { get }
    /// Records result = the identity (rows `range`).
    /// - Parameters:
    ///   - stream: The stream to record into.
    ///   - result: A value's bytes, from row 0.
    ///   - range: The rows to write.
    /// - Throws: The errors of recording the kernel.
    func encodeIdentity(into result: BufferSlice, rows range: Range<Int>, on stream: Stream) throws
    /// Records result = `later` applied after `earlier` (rows `range` of each slice, which
    /// start at row 0 of their value); the result never aliases an input.
    /// - Parameters:
    ///   - stream: The stream to record into.
    ///   - earlier: The value applied first.
    ///   - later: The value applied second.
    ///   - result: Receives the combination.
    ///   - range: The rows to combine.
    /// - Throws: The errors of recording the kernel.
    func encode(earlier: BufferSlice, later: BufferSlice, into result: BufferSlice, rows range: Range<Int>, on stream: Stream) throws
}

extension ScanCombine {
    /// Bytes of a whole value.
    public var byteCount: Int { rows * rowBytes }
}

/// Affine maps S -> a * S + B acting row by row on a state (a diagonal decay per row): the
/// combine of linear attention across ranks (LASP, LASP-2, ZeCO). A value is `rows` rows of
/// [a, b_0 ... b_{width-1}] fp32; applying (a1, B1) then (a2, B2) gives (a2 a1, a2 B1 + B2).
public struct AffineScan: ScanCombine {
    /// Rows of the state (e.g. B x H x Dk for linear attention).
    public let rows: Int
    /// Columns of B per row (Dv for linear attention).
    public let width: Int

    /// - Parameters:
    ///   - rows: Rows of the state.
    ///   - width: Columns of B per row.
    public init(rows: Int, width: Int) {
        self.rows = rows
        self.width = width
    }

    /// (width + 1) fp32 words: a, then B's row.
    public var rowBytes: Int { (width + 1) * 4 }

    /// Records a = 1, B = 0 for rows `range`.
    /// - Parameters:
    ///   - stream: The stream to record into.
    ///   - result: A value's bytes, from row 0.
    ///   - range: The rows to write.
    /// - Throws: The errors of recording the kernel.
    public func encodeIdentity(into result: BufferSlice, rows range: Range<Int>, on stream: Stream) throws {
        try ParallelKernels.affine(stream, earlier: nil, later: nil, result: rowsOf(result, range), rows: range.count, width: width)
    }

    /// Records (a_l a_e, a_l B_e + B_l) for rows `range`.
    /// - Parameters:
    ///   - stream: The stream to record into.
    ///   - earlier: The map applied first.
    ///   - later: The map applied second.
    ///   - result: Receives the composition; never aliases an input.
    ///   - range: The rows to combine.
    /// - Throws: The errors of recording the kernel.
    public func encode(earlier: BufferSlice, later: BufferSlice, into result: BufferSlice, rows range: Range<Int>, on stream: Stream) throws {
        try ParallelKernels.affine(stream, earlier: rowsOf(earlier, range), later: rowsOf(later, range),
                                   result: rowsOf(result, range), rows: range.count, width: width)
    }

    func rowsOf(_ slice: BufferSlice, _ range: Range<Int>) throws -> BufferSlice {
        try slice.buffer.slice(offset: slice.offset + range.lowerBound * rowBytes, byteCount: range.count * rowBytes)
    }

    /// The host reference: the composition of `values` in order (rank 0 first), fp64.
    /// - Parameters:
    ///   - values: One value per rank, rows of [a, b_0 ... b_{width-1}].
    ///   - width: Columns of B per row.
    /// - Returns: The composed map, fp64; empty for no values.
    public static func reference(_ values: [[Float]], width: Int) -> [Double] {
        guard let first = values.first else { return [] }
        var acc = first.map(Double.init)
        let stride = width + 1
        for v in values.dropFirst() {
            for r in 0..<(acc.count / stride) {
                let a2 = Double(v[r * stride])
                acc[r * stride] *= a2
                for c in 1..<stride { acc[r * stride + c] = a2 * acc[r * stride + c] + Double(v[r * stride + c]) }
            }
        }
        return acc
    }
}

/// How `allScan` moves prefixes.
public enum AllScanAlgorithm: Hashable, Sendable {
    /// LASP / ZeCO: a chain; rank r receives the inclusive prefix of ranks 0..<r from r - 1,
    /// combines its value and passes it on. Each rank receives exactly its prefix (one value);
    /// with `segments` > 1 the rows travel in segments, so rank r + 1 starts combining the
    /// first rows while later ones are in flight (ZeCO's pipelined all-scan).
    case chain(segments: Int)
    /// LASP-2: one all-gather of every value, then each rank combines the values before it.
    /// N - 1 values received per rank, one communication round.
    case allGather
}

extension Communicator {
    /// Exclusive scan of each rank's `value` under `combine`: rank r gets
    /// v_{r-1} after ... after v_0 (the identity on rank 0) in `result`. `scratch` holds
    /// one value for `.chain`, `size + 1` values for `.allGather`. Posted and recorded at
    /// once; the result is in place for work recorded on `stream` afterwards.
    /// - Parameters:
    ///   - value: This rank's value, `combine.byteCount` bytes.
    ///   - result: Receives the exclusive prefix.
    ///   - combine: The operator and the value's layout.
    ///   - algorithm: A chain (LASP, ZeCO) or one all-gather (LASP-2).
    ///   - scratch: One value for a chain, `size + 1` values for the all-gather.
    ///   - tag: The first tag (a chain of k segments uses k tags).
    ///   - stream: A stream of this rank's device.
    /// - Returns: The requests.
    /// - Throws: `VkAttnError.invalidValue(op:operand:reason:)` for buffers too small or a
    ///   segment count outside 1...rows.
    public func allScan<C: ScanCombine>(_ value: BufferSlice, into result: BufferSlice, combine: C, algorithm: AllScanAlgorithm,
                                        scratch: BufferSlice, tag: Int, on stream: Stream) throws -> [Request] {
        let op = "communicator.allScan"
        let bytes = combine.byteCount
        guard bytes > 0, value.byteCount >= bytes, result.byteCount >= bytes else {
            throw VkAttnError.invalidValue(op: op, operand: "value", reason: "needs \(bytes) bytes (value \(value.byteCount), result \(result.byteCount))")
        }
        func part(_ s: BufferSlice, _ k: Int) throws -> BufferSlice {
            try s.buffer.slice(offset: s.offset + k * bytes, byteCount: bytes)
        }
        let v = try part(value, 0), out = try part(result, 0)
        var requests: [Request] = []
        switch algorithm {
        case let .chain(segments):
            guard segments >= 1, segments <= max(1, combine.rows) else {
                throw VkAttnError.invalidValue(op: op, operand: "segments", reason: "\(segments) must be in 1...\(max(1, combine.rows))")
            }
            guard scratch.byteCount >= bytes else {
                throw VkAttnError.invalidValue(op: op, operand: "scratch", reason: "\(scratch.byteCount) bytes, needs \(bytes)")
            }
            let inclusive = try part(scratch, 0)
            let bounds = (0...segments).map { $0 * combine.rows / segments }
            for k in 0..<segments {
                let rows = bounds[k]..<bounds[k + 1]
                guard !rows.isEmpty else { continue }
                let offset = rows.lowerBound * combine.rowBytes, length = rows.count * combine.rowBytes
                if rank == 0 {
                    try combine.encodeIdentity(into: out, rows: rows, on: stream)
                    if size > 1 {
                        requests.append(try send(try v.buffer.slice(offset: v.offset + offset, byteCount: length), to: 1, tag: tag + k, on: stream))
                    }
                    continue
                }
                let received = try receive(into: try out.buffer.slice(offset: out.offset + offset, byteCount: length),
                                           from: rank - 1, tag: tag + k, on: stream)
                requests.append(received)
                guard rank + 1 < size else { continue }
                try complete(received, on: stream)
                try stream.barrier()
                try combine.encode(earlier: out, later: v, into: inclusive, rows: rows, on: stream)
                requests.append(try send(try inclusive.buffer.slice(offset: inclusive.offset + offset, byteCount: length),
                                         to: rank + 1, tag: tag + k, on: stream))
            }
            try complete(requests, on: stream)
        case .allGather:
            guard scratch.byteCount >= (size + 1) * bytes else {
                throw VkAttnError.invalidValue(op: op, operand: "scratch", reason: "\(scratch.byteCount) bytes, needs \((size + 1) * bytes)")
            }
            let gathered = try (0..<size).map { try part(scratch, $0) }
            requests = try allGather(v, into: gathered, tag: tag, on: stream)
            try complete(requests, on: stream)
            try stream.barrier()
            // Ping-pong between the spare slot and the result so that the last write is `out`.
            let spare = try part(scratch, size)
            let all = 0..<combine.rows
            var target = rank % 2 == 0 ? out : spare
            try combine.encodeIdentity(into: target, rows: all, on: stream)
            for j in 0..<rank {
                try stream.barrier()
                let next = target.buffer === out.buffer && target.offset == out.offset ? spare : out
                try combine.encode(earlier: target, later: gathered[j], into: next, rows: all, on: stream)
                target = next
            }
        }
        try stream.barrier()
        return requests
    }
}
