import VkAttn
import VulkanCompute
import VkAttnShaders

/// An elementwise reduction of fp32 values.
public enum ReduceOp: String, Sendable, Hashable, Codable {
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
    public static func elementwise(_ stream: Stream, x: BufferSlice, y: BufferSlice, count: Int, op: ReduceOp) throws {
        guard count > 0 else { return }
        let device = stream.device
        let wg = Launch.workgroupSize(group, device: device)
        let kernel = try device.kernel(KernelDescriptor(shader: Shaders.parallelElementwise, bindings: 2, pushConstantBytes: 12,
                                                        specialization: [0: .int(wg), 1: .int(op == .sum ? 0 : 1)]))
        let (xr, xw) = try bindable(try x.buffer.slice(offset: x.offset, byteCount: count * 4))
        let (yr, yw) = try bindable(try y.buffer.slice(offset: y.offset, byteCount: count * 4))
        var push = PushConstants()
        try push.append(u32: count, "elements")
        try push.append(u32: xw, "x offset")
        try push.append(u32: yw, "y offset")
        try stream.dispatch(kernel, bindings: [xr, yr], push: push, groups: (groups(count, device), 1, 1))
    }

    /// Copies `rows` rows of `width` words from `source` (row r at word `sourceOffset + r *
    /// sourceStride`) to `destination` (likewise); `accumulate` adds as floats instead.
    public static func copyRows(_ stream: Stream, from source: BufferSlice, to destination: BufferSlice, rows: Int, width: Int,
                         sourceOffset: Int = 0, sourceStride: Int, destinationOffset: Int = 0, destinationStride: Int,
                         accumulate: Bool = false) throws {
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
        let kernel = try device.kernel(KernelDescriptor(shader: Shaders.parallelCopyRows, bindings: 2, pushConstantBytes: 24,
                                                        specialization: [0: .int(wg), 1: .bool(accumulate)]))
        var push = PushConstants()
        for (value, what) in [(rows, "rows"), (width, "width"), (srcWord + sourceOffset, "source offset"), (sourceStride, "source stride"),
                              (dstWord + destinationOffset, "destination offset"), (destinationStride, "destination stride")] {
            try push.append(u32: value, what)
        }
        try stream.dispatch(kernel, bindings: [src, dst], push: push, groups: (groups(rows * width, device), 1, 1))
    }

    /// f32 -> f16 of `count` (even) values.
    public static func castToHalf(_ stream: Stream, from source: BufferSlice, to destination: BufferSlice, count: Int) throws {
        guard count > 0 else { return }
        guard count % 2 == 0 else {
            throw VkAttnError.invalidValue(op: "parallel cast", operand: "count", reason: "\(count) is odd")
        }
        let device = stream.device
        let wg = Launch.workgroupSize(group, device: device)
        let kernel = try device.kernel(KernelDescriptor(shader: Shaders.parallelCast, bindings: 2, pushConstantBytes: 12,
                                                        specialization: [0: .int(wg)]))
        let (src, srcWord) = try bindable(try source.buffer.slice(offset: source.offset, byteCount: count * 4))
        let (dst, dstWord) = try bindable(try destination.buffer.slice(offset: destination.offset, byteCount: count * 2))
        var push = PushConstants()
        try push.append(u32: count / 2, "pairs")
        try push.append(u32: srcWord, "source offset")
        try push.append(u32: dstWord, "destination offset")
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
        let kernel = try device.kernel(KernelDescriptor(shader: Shaders.parallelMergeInto, bindings: 4, pushConstantBytes: 8,
                                                        specialization: [0: .int(grid.wg), 1: .int(headDim), 2: .int(grid.tpr)]))
        var push = PushConstants()
        try push.append(u32: tokens, "tokens")
        try push.append(u32: heads, "heads")
        try stream.dispatch(kernel, bindings: [accO, accLSE, partO, partLSE], push: push, groups: grid.groups)
    }

    /// result = later after earlier (affine maps, rows of 1 + width floats), or the identity.
    static func affine(_ stream: Stream, earlier: BufferSlice?, later: BufferSlice?, result: BufferSlice, rows: Int, width: Int) throws {
        let device = stream.device
        let wg = Launch.workgroupSize(group, device: device)
        let identity = earlier == nil || later == nil
        let kernel = try device.kernel(KernelDescriptor(shader: Shaders.parallelAffineCombine, bindings: 3, pushConstantBytes: 20,
                                                        specialization: [0: .int(wg), 1: .bool(identity)]))
        // The identity reads nothing: its unused inputs get a read-only placeholder, never the
        // result being written (a same-buffer read and write that synchronization validation flags).
        let placeholder = identity ? try device.makeBuffer(byteCount: 16).whole : result
        let e = try bindable(earlier ?? placeholder), l = try bindable(later ?? placeholder), r = try bindable(result)
        var push = PushConstants()
        for (value, what) in [(rows, "rows"), (width, "width"), (e.word, "earlier offset"), (l.word, "later offset"), (r.word, "result offset")] {
            try push.append(u32: value, what)
        }
        try stream.dispatch(kernel, bindings: [e.range, l.range, r.range], push: push,
                            groups: (groups(rows * (width + 1), device), 1, 1))
    }

    /// Tree decode's weight step (finish: false) or final step (finish: true).
    static func tree(_ stream: Stream, o: BufferSlice, lse: BufferSlice, max: BufferSlice, w: BufferSlice,
                     tokens: Int, heads: Int, seqQ: Int, headDim: Int, packed: Bool, finish: Bool) throws {
        let device = stream.device
        let grid = rowGrid(rows: tokens * heads, device: device)
        let kernel = try device.kernel(KernelDescriptor(shader: Shaders.parallelTreeDecode, bindings: 4, pushConstantBytes: 12,
                                                        specialization: [0: .int(grid.wg), 1: .int(headDim), 2: .int(grid.tpr),
                                                                         3: .bool(packed), 4: .bool(finish)]))
        var push = PushConstants()
        try push.append(u32: tokens, "tokens")
        try push.append(u32: heads, "heads")
        try push.append(u32: seqQ, "seq_q")
        try stream.dispatch(kernel, bindings: [o, lse, max, w], push: push, groups: grid.groups)
    }
}
