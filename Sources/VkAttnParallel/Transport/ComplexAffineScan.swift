import VkAttn
import VulkanCompute
import VkAttnShaders

/// Complex affine maps S -> a * S + B acting row by row on a complex state: the all-scan
/// combine of a complex diagonal recurrence across ranks (`ContextParallelRecurrence`). A
/// value is `rows` rows of [a, b_0 ... b_{width-1}] complex fp32 (re, im pairs); applying
/// (a1, B1) then (a2, B2) gives (a2 a1, a2 B1 + B2) (Shaders/parallel/complex_affine_combine.comp).
public struct ComplexAffineScan: ScanCombine {
    /// Rows of the state (batch x channels for a recurrence).
    public let rows: Int
    /// Complex columns of B per row.
    public let width: Int

    /// - Parameters:
    ///   - rows: Rows of the state.
    ///   - width: Complex columns of B per row.
    public init(rows: Int, width: Int) {
        self.rows = rows
        self.width = width
    }

    /// (width + 1) complex fp32 numbers: a, then B's row.
    public var rowBytes: Int { (width + 1) * 8 }

    /// Records a = 1, B = 0 for rows `range`.
    /// - Parameters:
    ///   - stream: The stream to record into.
    ///   - result: A value's bytes, from row 0.
    ///   - range: The rows to write.
    /// - Throws: `VkAttnError` for a slice not 8-byte aligned within its binding; the errors of
    ///   recording the kernel.
    public func encodeIdentity(into result: BufferSlice, rows range: Range<Int>, on stream: Stream) throws {
        try encode(earlier: nil, later: nil, result: try rowsOf(result, range), rows: range.count, on: stream)
    }

    /// Records (a_l a_e, a_l B_e + B_l) with complex products for rows `range`.
    /// - Parameters:
    ///   - stream: The stream to record into.
    ///   - earlier: The map applied first.
    ///   - later: The map applied second.
    ///   - result: Receives the composition.
    ///   - range: The rows to combine.
    /// - Throws: `VkAttnError` for a slice not 8-byte aligned within its binding; the errors of
    ///   recording the kernel.
    public func encode(earlier: BufferSlice, later: BufferSlice, into result: BufferSlice, rows range: Range<Int>, on stream: Stream) throws {
        try encode(earlier: try rowsOf(earlier, range), later: try rowsOf(later, range), result: try rowsOf(result, range),
                   rows: range.count, on: stream)
    }

    func rowsOf(_ slice: BufferSlice, _ range: Range<Int>) throws -> BufferSlice {
        try slice.buffer.slice(offset: slice.offset + range.lowerBound * rowBytes, byteCount: range.count * rowBytes)
    }

    func encode(earlier: BufferSlice?, later: BufferSlice?, result: BufferSlice, rows: Int, on stream: Stream) throws {
        guard rows > 0 else { return }
        let device = stream.device
        let wg = Launch.workgroupSize(ParallelKernels.group, device: device)
        let identity = earlier == nil || later == nil
        let kernel = try device.kernel(KernelDescriptor(shader: Shaders.parallelComplexAffineCombine, bindings: 3,
                                                        specialization: ["local_size_x": .int(wg), "IDENTITY": .bool(identity)]))
        let slots = try [earlier ?? result, later ?? result, result].map { try ParallelKernels.bindable($0) }
        var offsets: [UInt32] = []
        for (slot, what) in zip(slots, ["earlier", "later", "result"]) {
            // Complex elements: a row starts on a whole complex number of every binding.
            guard slot.word % 2 == 0 else {
                throw VkAttnError.invalidValue(op: "communicator.allScan", operand: what, reason: "offset is not a multiple of 8 bytes past its binding")
            }
            offsets.append(try UInt32(pushing: slot.word / 2, "\(what) offset"))
        }
        let push = AffineCombinePush(rows: try UInt32(pushing: rows, "rows"), width: try UInt32(pushing: width, "width"),
                                     earlierOffset: offsets[0], laterOffset: offsets[1], resultOffset: offsets[2])
        try stream.dispatch(kernel, bindings: slots.map(\.range), push: push,
                            groups: (ParallelKernels.groups(rows * (width + 1), device), 1, 1))
    }

    /// The host reference: the composition of `values` in order (rank 0 first), fp64.
    /// - Parameters:
    ///   - values: One value per rank, rows of complex [a, b_0 ... b_{width-1}] as (re, im) pairs.
    ///   - width: Complex columns of B per row.
    /// - Returns: The composed map, fp64 (re, im) pairs; empty for no values.
    public static func reference(_ values: [[Float]], width: Int) -> [Double] {
        guard let first = values.first else { return [] }
        var acc = first.map(Double.init)
        let rowFloats = 2 * (width + 1)
        for v in values.dropFirst() {
            for r in 0..<(acc.count / rowFloats) {
                let o = r * rowFloats
                let (ar, ai) = (Double(v[o]), Double(v[o + 1]))
                for c in stride(from: 0, to: rowFloats, by: 2) {
                    let (xr, xi) = (acc[o + c], acc[o + c + 1])
                    acc[o + c] = ar * xr - ai * xi + (c == 0 ? 0 : Double(v[o + c]))
                    acc[o + c + 1] = ar * xi + ai * xr + (c == 0 ? 0 : Double(v[o + c + 1]))
                }
            }
        }
        return acc
    }
}
