import VkAttn
import VulkanCompute
import VkAttnShaders

/// An elementwise reduction of fp32 values.
public enum ReduceOp: String, Sendable, Hashable, Codable {
    /// `sum`: addition; `max`: the larger value.
    case sum, max
}

/// Encoders of the small kernels in Shaders/parallel: elementwise reductions, strided row
/// copies, f32 -> f16 casts, in-place LSE merges, the affine-map combine, tree decode's steps.
/// Every one binds its buffers at an aligned offset at or below the range it touches and
/// passes the rest of the offset as a push constant, so any element offset works.
public enum ParallelKernels {
    static let group = 256

    /// `slice` widened down to the device's storage-buffer offset alignment: the range to
    /// bind and the first word of `slice` inside it.
    static func bindable(_ slice: BufferSlice) throws -> (range: BufferSlice, word: Int) {
        let alignment = max(4, slice.buffer.device.capabilities.minStorageBufferOffsetAlignment)
        let start = slice.offset / alignment * alignment
        guard (slice.offset - start) % 4 == 0 else {
            throw VkAttnError.invalidValue(op: "parallel kernel", operand: "offset", reason: "\(slice.offset) is not a multiple of 4 bytes")
        }
        let range = try slice.buffer.slice(offset: start, byteCount: slice.offset + slice.byteCount - start)
        return (range, (slice.offset - start) / 4)
    }

    static func groups(_ items: Int, _ device: Device) -> Int {
        Launch.gridStrideGroups(items: items, workgroupSize: Launch.workgroupSize(group, device: device), device: device)
    }

    /// y = op(y, x) over `count` floats.
    /// - Parameters:
    ///   - stream: The stream to record into.
    ///   - x: The other operand, `count` floats at any 4-byte offset.
    ///   - y: The operand that receives the result.
    ///   - count: The number of floats; 0 records nothing.
    ///   - op: Sum or maximum.
    /// - Throws: `VkAttnError` for an offset that is not a multiple of 4; the errors of
    ///   recording the kernel.
    public static func elementwise(x: BufferSlice, y: BufferSlice, count: Int, op: ReduceOp, on stream: Stream) throws {
        guard count > 0 else { return }
        let device = stream.device
        let wg = Launch.workgroupSize(group, device: device)
        let kernel = try device.kernel(KernelDescriptor(shader: Shaders.parallelElementwise, bindings: 2,
                                                        specialization: ["local_size_x": .int(wg), "OP": .int(op == .sum ? 0 : 1)]))
        let (xr, xw) = try bindable(try x.buffer.slice(offset: x.offset, byteCount: count * 4))
        let (yr, yw) = try bindable(try y.buffer.slice(offset: y.offset, byteCount: count * 4))
        let push = ElementwisePush(n: try UInt32(pushing: count, "elements"), xOffset: try UInt32(pushing: xw, "x offset"),
                                   yOffset: try UInt32(pushing: yw, "y offset"))
        try stream.dispatch(kernel, bindings: [xr, yr], push: push, groups: (groups(count, device), 1, 1))
    }

    /// Copies `rows` rows of `width` words from `source` (row r at word `sourceOffset + r *
    /// sourceStride`) to `destination` (likewise); `accumulate` adds as floats instead.
    /// - Parameters:
    ///   - stream: The stream to record into.
    ///   - source: The buffer range read.
    ///   - destination: The buffer range written.
    ///   - rows: The number of rows; 0 records nothing.
    ///   - width: 32-bit words per row.
    ///   - sourceOffset: Words before the first source row.
    ///   - sourceStride: Words between source rows.
    ///   - destinationOffset: Words before the first destination row.
    ///   - destinationStride: Words between destination rows.
    ///   - accumulate: Add to the destination as floats instead of overwriting it.
    /// - Throws: `VkAttnError.invalidValue(op:operand:reason:)` when the rows leave their
    ///   buffers; the errors of recording the kernel.
    public static func copyRows(from source: BufferSlice, to destination: BufferSlice, rows: Int, width: Int,
                         sourceOffset: Int = 0, sourceStride: Int, destinationOffset: Int = 0, destinationStride: Int,
                         accumulate: Bool = false, on stream: Stream) throws {
        guard rows > 0, width > 0 else { return }
        let device = stream.device
        let (src, srcWord) = try bindable(source)
        let (dst, dstWord) = try bindable(destination)
        let lastSource = srcWord + sourceOffset + (rows - 1) * sourceStride + width
        let lastDestination = dstWord + destinationOffset + (rows - 1) * destinationStride + width
        guard lastSource * 4 <= src.byteCount, lastDestination * 4 <= dst.byteCount, rows * width < Int(UInt32.max) else {
            throw VkAttnError.invalidValue(op: "parallel copy", operand: "rows", reason: "\(rows) rows of \(width) words leave their buffers")
        }
        let wg = Launch.workgroupSize(group, device: device)
        let kernel = try device.kernel(KernelDescriptor(shader: Shaders.parallelCopyRows, bindings: 2,
                                                        specialization: ["local_size_x": .int(wg), "ACCUMULATE": .bool(accumulate)]))
        let push = CopyRowsPush(rows: try UInt32(pushing: rows, "rows"), width: try UInt32(pushing: width, "width"),
                                srcOffset: try UInt32(pushing: srcWord + sourceOffset, "source offset"),
                                srcStride: try UInt32(pushing: sourceStride, "source stride"),
                                dstOffset: try UInt32(pushing: dstWord + destinationOffset, "destination offset"),
                                dstStride: try UInt32(pushing: destinationStride, "destination stride"))
        try stream.dispatch(kernel, bindings: [src, dst], push: push, groups: (groups(rows * width, device), 1, 1))
    }

    /// f32 -> f16 of `count` (even) values.
    /// - Parameters:
    ///   - stream: The stream to record into.
    ///   - source: `count` f32 values.
    ///   - destination: Receives `count` f16 values.
    ///   - count: The number of values.
    /// - Throws: The errors of binding the ranges and recording the kernel.
    public static func castToHalf(from source: BufferSlice, to destination: BufferSlice, count: Int, on stream: Stream) throws {
        guard count > 0 else { return }
        guard count % 2 == 0 else {
            throw VkAttnError.invalidValue(op: "parallel cast", operand: "count", reason: "\(count) is odd")
        }
        let device = stream.device
        let wg = Launch.workgroupSize(group, device: device)
        let kernel = try device.kernel(KernelDescriptor(shader: Shaders.parallelCast, bindings: 2,
                                                        specialization: ["local_size_x": .int(wg)]))
        let (src, srcWord) = try bindable(try source.buffer.slice(offset: source.offset, byteCount: count * 4))
        let (dst, dstWord) = try bindable(try destination.buffer.slice(offset: destination.offset, byteCount: count * 2))
        let push = CastPush(pairs: try UInt32(pushing: count / 2, "pairs"), srcOffset: try UInt32(pushing: srcWord, "source offset"),
                            dstOffset: try UInt32(pushing: dstWord, "destination offset"))
        try stream.dispatch(kernel, bindings: [src, dst], push: push, groups: (groups(count / 2, device), 1, 1))
    }

    /// Row-per-lanes launch: `rows` rows, `tpr` lanes each, 2-D grid past 65535 groups.
    static func rowGrid(rows: Int, device: Device) -> (wg: Int, tpr: Int, groups: (Int, Int, Int)) {
        let tpr = AttentionTiling.threadsPerRow(device)
        let wg = min(256, device.capabilities.maxWorkgroupInvocations) / tpr * tpr
        let count = max(1, (rows + wg / tpr - 1) / (wg / tpr))
        let gx = min(count, device.capabilities.maxWorkgroupCount[0])
        return (wg, tpr, (gx, (count + gx - 1) / gx, 1))
    }

    /// Merges the partial (O, LSE) of one query piece into its running (O, LSE), in place:
    /// O [tokens, heads, headDim], LSE [heads, tokens], fp32 (the slices are exactly those).
    static func mergeInto(_ stream: Stream, accO: BufferSlice, accLSE: BufferSlice, partO: BufferSlice, partLSE: BufferSlice,
                          tokens: Int, heads: Int, headDim: Int) throws {
        let device = stream.device
        let grid = rowGrid(rows: tokens * heads, device: device)
        let kernel = try device.kernel(KernelDescriptor(shader: Shaders.parallelMergeInto, bindings: 4,
                                                        specialization: ["local_size_x": .int(grid.wg), "D": .int(headDim), "TPR": .int(grid.tpr)]))
        let push = MergeIntoPush(tokens: try UInt32(pushing: tokens, "tokens"), heads: try UInt32(pushing: heads, "heads"))
        try stream.dispatch(kernel, bindings: [accO, accLSE, partO, partLSE], push: push, groups: grid.groups)
    }

    /// result = later after earlier (affine maps, rows of 1 + width floats), or the identity.
    static func affine(_ stream: Stream, earlier: BufferSlice?, later: BufferSlice?, result: BufferSlice, rows: Int, width: Int) throws {
        let device = stream.device
        let wg = Launch.workgroupSize(group, device: device)
        let identity = earlier == nil || later == nil
        let kernel = try device.kernel(KernelDescriptor(shader: Shaders.parallelAffineCombine, bindings: 3,
                                                        specialization: ["local_size_x": .int(wg), "IDENTITY": .bool(identity)]))
        // The identity reads nothing: its unused inputs get a read-only placeholder, never the
        // result being written (a same-buffer read and write that synchronization validation flags).
        let placeholder = identity ? try device.makeBuffer(byteCount: 16).whole : result
        let e = try bindable(earlier ?? placeholder), l = try bindable(later ?? placeholder), r = try bindable(result)
        let push = AffineCombinePush(rows: try UInt32(pushing: rows, "rows"), width: try UInt32(pushing: width, "width"),
                                     earlierOffset: try UInt32(pushing: e.word, "earlier offset"),
                                     laterOffset: try UInt32(pushing: l.word, "later offset"),
                                     resultOffset: try UInt32(pushing: r.word, "result offset"))
        try stream.dispatch(kernel, bindings: [e.range, l.range, r.range], push: push,
                            groups: (groups(rows * (width + 1), device), 1, 1))
    }

    /// Tree decode's weight step (finish: false) or final step (finish: true).
    static func tree(_ stream: Stream, o: BufferSlice, lse: BufferSlice, max: BufferSlice, w: BufferSlice,
                     tokens: Int, heads: Int, seqQ: Int, headDim: Int, packed: Bool, finish: Bool) throws {
        let device = stream.device
        let grid = rowGrid(rows: tokens * heads, device: device)
        let kernel = try device.kernel(KernelDescriptor(shader: Shaders.parallelTreeDecode, bindings: 4,
                                                        specialization: ["local_size_x": .int(grid.wg), "D": .int(headDim), "TPR": .int(grid.tpr),
                                                                         "VARLEN": .bool(packed), "FINISH": .bool(finish)]))
        let push = TreeDecodePush(tokens: try UInt32(pushing: tokens, "tokens"), heads: try UInt32(pushing: heads, "heads"),
                                  seqQ: try UInt32(pushing: seqQ, "seq_q"))
        try stream.dispatch(kernel, bindings: [o, lse, max, w], push: push, groups: grid.groups)
    }
}

/// Shaders/parallel/elementwise.comp.
struct ElementwisePush: PushConstantBlock {
    var n: UInt32, xOffset: UInt32, yOffset: UInt32
}

/// Shaders/parallel/copy_rows.comp (offsets and strides in words).
struct CopyRowsPush: PushConstantBlock {
    var rows: UInt32, width: UInt32
    var srcOffset: UInt32, srcStride: UInt32
    var dstOffset: UInt32, dstStride: UInt32
}

/// Shaders/parallel/cast.comp.
struct CastPush: PushConstantBlock {
    var pairs: UInt32, srcOffset: UInt32, dstOffset: UInt32
}

/// Shaders/parallel/merge_into.comp.
struct MergeIntoPush: PushConstantBlock {
    var tokens: UInt32, heads: UInt32
}

/// Shaders/parallel/affine_combine.comp and complex_affine_combine.comp (offsets in elements).
struct AffineCombinePush: PushConstantBlock {
    var rows: UInt32, width: UInt32
    var earlierOffset: UInt32, laterOffset: UInt32, resultOffset: UInt32
}

/// Shaders/parallel/tree_decode.comp.
struct TreeDecodePush: PushConstantBlock {
    var tokens: UInt32, heads: UInt32, seqQ: UInt32
}
