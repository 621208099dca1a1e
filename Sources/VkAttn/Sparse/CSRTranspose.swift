import VulkanCompute
import VkAttnShaders

/// The transpose of a CSR matrix on the device: A [M, K] as CSR becomes A^T [K, M] as CSR
/// (equivalently A as CSC), without a round trip through the host, so that A^T * B is
/// `SpMMPlan(a.transposed(...), ...)`.
///
/// Built on the device prefix sum: the rows are cut into tiles of about equal nonzero counts,
/// each walked in order by one subgroup; pass 1 counts each column's nonzeros per tile (laid out column-major over tiles),
/// the exclusive `PrefixScan` of those counts gives every (column, tile) its first output slot
/// (and the column pointers of the transpose), and pass 2 moves each nonzero to its slot. The
/// transpose is stable (within a column, rows stay in order; duplicates keep their order) and
/// identical run to run.
///
/// The count table has tiles x K entries: tiles are as many as fill the device, but fewer for
/// wide or very sparse matrices (down to one, which is correct but serial); `plan.tiles` says
/// how many ran.
public struct CSRTranspose: Sendable {
    /// The op name in errors.
    public static let opName = "sparse.transpose"

    /// Subgroups (row tiles) the transpose used.
    public let tiles: Int
    /// Where the input structure was validated.
    public let validatedOn: SparseValidation.Site
    /// The prefix-sum path that scanned the counts.
    public let scanAlgorithm: ScanAlgorithm

    /// Entries of the count table at most (and at most what one binding holds).
    static let countBudget = 1 << 23

    /// Records the transpose of `matrix` into `stream` and returns it (valid once the stream's
    /// work is done). The input's structure is validated first; a malformed matrix throws
    /// `VkAttnError.malformedSparse` before anything is recorded.
    /// - Parameters:
    ///   - matrix: A [M, K] on the stream's device (f32 or f16 values); with no nonzeros (M or K
    ///     zero too) no kernel is recorded, only a fill of the transpose's row pointers with 0.
    ///   - stream: The stream to record into.
    ///   - validation: Where A's structure is checked.
    /// - Returns: A^T [K, M] as a new ``CSRMatrix`` (values of A's type), and the plan that made it.
    /// - Throws: ``VkAttnError/malformedSparse(op:row:reason:)`` naming A's first bad row;
    ///   ``VkAttnError`` for a matrix on another device, or a device lacking what the kernels
    ///   need.
    public static func encode(_ matrix: CSRMatrix, on stream: Stream,
                              validation: SparseValidation.Mode = .auto) throws -> (transpose: CSRMatrix, plan: CSRTranspose) {
        let device = stream.device
        guard matrix.device === device else { throw VkAttnError.deviceMismatch(op: opName, operand: "matrix") }
        try SparseLaunch.requireValues(op: opName, matrix.valueType, device: device)
        try SparseLaunch.requireShuffle(op: opName, device: device)
        for (name, tensor) in [("row offsets", matrix.rowOffsets), ("column indices", matrix.columnIndices), ("values", matrix.values)] {
            try SparseLaunch.expectUsable(op: opName, name, tensor, device: device)
        }
        let (stats, site) = try SparseDeviceValidation.validate(
            .init(op: opName, rows: matrix.rows, cols: matrix.cols, nnz: matrix.nnz, rowOffsets: matrix.rowOffsets,
                  columnIndices: matrix.columnIndices, unit: .row),
            mode: validation)

        let caps = device.capabilities
        // One subgroup per workgroup (power-of-two subgroup sizes make any smaller one divide
        // it, so subgroups are always full): a tile's subgroup runs as many subgroupBarriers as
        // its rows need, and Mesa 26's lavapipe drops the work of subgroups whose barrier counts
        // differ from their workgroup neighbours' (SubgroupBarrierTests reproduces it), though a
        // subgroup-scope barrier concerns its own subgroup only.
        let wg = caps.maxSubgroupSize
        let subgroupsPerGroup = 1
        let budget = min(countBudget, caps.maxStorageBufferRange / 4 - 1)
        // Enough tiles to fill the device, but a count table no larger than a few times the
        // nonzeros (scanning it should not cost more than moving them).
        let cols = max(matrix.cols, 1)
        let wanted = (caps.computeUnits ?? 4) * 64
        var tiles = min(matrix.rows, budget / cols, max(1, 4 * matrix.nnz / cols), wanted, 4096)
        tiles = max(1, tiles)
        // A subgroup walks its tile's rows and their nonzeros in chunks of a subgroup, ranking
        // each chunk with a loop over the lanes: where the device caps an invocation's loop
        // iterations (lavapipe), use enough tiles to stay below the cap.
        if let limit = caps.loopIterationLimit {
            let sg = caps.minSubgroupSize
            func cost(_ t: Int) -> Int {
                let nonzeros = matrix.nnz / t + stats.maxLength + 1
                let rows = (matrix.rows + t - 1) / t + 1
                return rows + (nonzeros / sg + rows) * (sg + 3) + 64
            }
            let budgetLimit = limit * 9 / 10
            while cost(tiles) > budgetLimit && tiles < min(matrix.rows, budget / cols, 65535) { tiles = min(tiles * 2, matrix.rows, budget / cols, 65535) }
            guard cost(tiles) <= budgetLimit else {
                throw VkAttnError.unsupported(op: opName, reason: "a row of \(stats.maxLength) nonzeros, or \(matrix.nnz) nonzeros over \(matrix.cols) columns, needs more loop iterations per invocation than \(device.label) allows (\(limit))")
            }
        }
        let entries = tiles * matrix.cols
        let groups = min((tiles + subgroupsPerGroup - 1) / subgroupsPerGroup, caps.maxWorkgroupCount[0])
        tiles = min(tiles, groups * subgroupsPerGroup)

        let pointers = try device.makeTensor(shape: [matrix.cols + 1], dtype: .i32)
        let outColumns = try device.makeTensor(shape: [max(matrix.nnz, 1)], dtype: .i32)
        let outValues = try device.makeTensor(shape: [max(matrix.nnz, 1)], dtype: matrix.valueType)
        let transpose = try CSRMatrix(rows: matrix.cols, cols: matrix.rows, nnz: matrix.nnz,
                                      rowOffsets: pointers, columnIndices: outColumns, values: outValues)
        let push = TransposePush(rows: try UInt32(pushing: matrix.rows, "rows"), cols: try UInt32(pushing: matrix.cols, "cols"),
                                 nnz: try UInt32(pushing: matrix.nnz, "nnz"), tiles: try UInt32(pushing: tiles, "tiles"))

        let scan = PrefixScan(op: .add, exclusive: true)
        guard entries > 0, matrix.nnz > 0 else {
            // No columns or no nonzeros (no rows among them): every row of the transpose is
            // empty, its pointers all 0 (one fill, no kernel; [0] for a transpose of no rows).
            try stream.fill(pointers.slice, word: 0)
            return (transpose, CSRTranspose(tiles: 0, validatedOn: site, scanAlgorithm: scan.resolvedAlgorithm(on: device)))
        }
        let counts = try device.makeBuffer(of: UInt32.self, count: entries)
        let cursors = try device.makeBuffer(of: UInt32.self, count: entries + 1)
        let count = try device.kernel(KernelDescriptor(shader: Shaders.sparseTransposeCount, bindings: 3,
                                                        specialization: ["local_size_x": .int(wg)]))
        let pointwise = Launch.workgroupSize(256, device: device)
        let firstSlots = try device.kernel(KernelDescriptor(shader: Shaders.sparseTransposePointers, bindings: 2,
                                                             specialization: ["local_size_x": .int(pointwise)]))
        let scatter = try device.kernel(KernelDescriptor(
            shader: matrix.valueType == .f16 ? Shaders.sparseTransposeScatterF16 : Shaders.sparseTransposeScatterF32,
            bindings: 6, specialization: ["local_size_x": .int(wg)]))

        try stream.fill(counts.whole, word: 0)
        try stream.barrier()
        try stream.dispatch(count, bindings: [matrix.rowOffsets.slice, matrix.columnIndices.slice, counts.whole],
                            push: push, groups: (groups, 1, 1))
        try stream.barrier()
        let dispatch = try scan.encode(input: counts.whole, output: cursors.whole, count: entries, dtype: .u32, on: stream)
        try stream.barrier()
        try stream.dispatch(firstSlots, bindings: [cursors.whole, pointers.slice], push: push,
                            groups: (SparseLaunch.groups(items: matrix.cols + 1, workgroupSize: pointwise, device: device), 1, 1))
        try stream.barrier()
        try stream.dispatch(scatter, bindings: [matrix.rowOffsets.slice, matrix.columnIndices.slice, matrix.values.slice,
                                                cursors.whole, outColumns.slice, outValues.slice],
                            push: push, groups: (groups, 1, 1))
        return (transpose, CSRTranspose(tiles: tiles, validatedOn: site, scanAlgorithm: dispatch.algorithm))
    }
}

extension CSRMatrix {
    /// The transpose [cols, rows] computed on the device (see `CSRTranspose`).
    /// - Parameters:
    ///   - stream: A stream of the matrix's device.
    ///   - validation: Where the structure is checked.
    /// - Returns: The transpose, valid once the stream's work is done.
    /// - Throws: The errors of ``CSRTranspose/encode(_:on:validation:)``.
    public func transposed(on stream: Stream, validation: SparseValidation.Mode = .auto) throws -> CSRMatrix {
        try CSRTranspose.encode(self, on: stream, validation: validation).transpose
    }
}

/// Shaders/sparse/transpose_{count,pointers,scatter}.comp.
struct TransposePush: PushConstantBlock {
    var rows: UInt32, cols: UInt32, nnz: UInt32, tiles: UInt32
}
