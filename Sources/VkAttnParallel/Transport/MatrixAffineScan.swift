import VkAttn
import VulkanCompute
import VkAttnShaders

/// Matrix affine maps S -> M S + B on a [Dk, Dv] state, M a full [Dk, Dk] matrix: the all-scan
/// combine of the delta rule across ranks (`ContextParallelDeltaRule`), whose transitions
/// (I - beta k k^T products) are not diagonal. A value is `rows` blocks, one per sequence and
/// head, of Dk rows [M | B] of Dk + Dv fp32; applying (M1, B1) then (M2, B2) gives
/// (M2 M1, M2 B1 + B2) (Shaders/parallel/matrix_affine_combine.comp). A "row" of the scan is a
/// whole block, so ZeCO's segments split the blocks, never a matrix.
public struct MatrixAffineScan: ScanCombine {
    /// Blocks (sequences x heads).
    public let rows: Int
    /// The state's rows (the side of M) and columns.
    public let dk: Int, dv: Int

    /// - Parameters:
    ///   - rows: Blocks of the value (sequences x heads).
    ///   - dk: Rows of the state and the side of M.
    ///   - dv: Columns of the state.
    public init(rows: Int, dk: Int, dv: Int) {
        self.rows = rows
        self.dk = dk
        self.dv = dv
    }

    /// One block: Dk (Dk + Dv) fp32.
    public var rowBytes: Int { dk * (dk + dv) * 4 }

    /// Records [I | 0] for blocks `range`.
    /// - Parameters:
    ///   - stream: The stream to record into.
    ///   - result: A value's bytes, from block 0.
    ///   - range: The blocks to write.
    /// - Throws: The errors of recording the kernel.
    public func encodeIdentity(into result: BufferSlice, rows range: Range<Int>, on stream: Stream) throws {
        try encode(earlier: nil, later: nil, result: try rowsOf(result, range), rows: range.count, on: stream)
    }

    /// Records (M_l M_e, M_l B_e + B_l) for blocks `range`.
    /// - Parameters:
    ///   - stream: The stream to record into.
    ///   - earlier: The map applied first.
    ///   - later: The map applied second.
    ///   - result: Receives the composition; never aliases an input.
    ///   - range: The blocks to combine.
    /// - Throws: The errors of recording the kernel.
    public func encode(earlier: BufferSlice, later: BufferSlice, into result: BufferSlice, rows range: Range<Int>, on stream: Stream) throws {
        try encode(earlier: try rowsOf(earlier, range), later: try rowsOf(later, range), result: try rowsOf(result, range),
                   rows: range.count, on: stream)
    }

    func rowsOf(_ slice: BufferSlice, _ range: Range<Int>) throws -> BufferSlice {
        try slice.buffer.slice(offset: slice.offset + range.lowerBound * rowBytes, byteCount: range.count * rowBytes)
    }

    func encode(earlier: BufferSlice?, later: BufferSlice?, result: BufferSlice, rows: Int, on stream: Stream) throws {
        guard rows > 0, dk > 0 else { return }
        let device = stream.device
        let wg = Launch.workgroupSize(ParallelKernels.group, device: device)
        let identity = earlier == nil || later == nil
        let kernel = try device.kernel(KernelDescriptor(shader: Shaders.parallelMatrixAffineCombine, bindings: 3,
                                                        specialization: ["local_size_x": .int(wg), "IDENTITY": .bool(identity)]))
        // The identity reads nothing: a placeholder, never the result, takes the input slots.
        let placeholder = identity ? try device.makeBuffer(byteCount: 16).whole : result
        let e = try ParallelKernels.bindable(earlier ?? placeholder), l = try ParallelKernels.bindable(later ?? placeholder)
        let r = try ParallelKernels.bindable(result)
        let push = MatrixAffinePush(rows: try UInt32(pushing: rows, "blocks"), dk: try UInt32(pushing: dk, "dk"), dv: try UInt32(pushing: dv, "dv"),
                                    earlierOffset: try UInt32(pushing: e.word, "earlier offset"),
                                    laterOffset: try UInt32(pushing: l.word, "later offset"),
                                    resultOffset: try UInt32(pushing: r.word, "result offset"))
        try stream.dispatch(kernel, bindings: [e.range, l.range, r.range], push: push,
                            groups: (ParallelKernels.groups(rows * dk * (dk + dv), device), 1, 1))
    }

    /// The host reference: the composition of `values` in order (rank 0 first), fp64.
    /// - Parameters:
    ///   - values: One value per rank, blocks of [M | B].
    ///   - dk: Rows of the state.
    ///   - dv: Columns of the state.
    /// - Returns: The composed map, fp64; empty for no values.
    public static func reference(_ values: [[Float]], dk: Int, dv: Int) -> [Double] {
        guard let first = values.first else { return [] }
        var acc = first.map(Double.init)
        let width = dk + dv, block = dk * width
        for later in values.dropFirst() {
            var next = acc
            for base in stride(from: 0, to: acc.count, by: block) {
                for d in 0..<dk {
                    for x in 0..<width {
                        var sum = x >= dk ? Double(later[base + d * width + x]) : 0
                        for f in 0..<dk { sum += Double(later[base + d * width + f]) * acc[base + f * width + x] }
                        next[base + d * width + x] = sum
                    }
                }
            }
            acc = next
        }
        return acc
    }
}

/// Shaders/parallel/matrix_affine_combine.comp's push constants.
struct MatrixAffinePush: PushConstantBlock {
    var rows: UInt32, dk: UInt32, dv: UInt32
    var earlierOffset: UInt32, laterOffset: UInt32, resultOffset: UInt32
}
