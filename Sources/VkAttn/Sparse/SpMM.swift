/// CSR sparse x dense: C = alpha * A * B + beta * C with A a `CSRMatrix` [M, K] (f32 or f16
/// values), B [K, n] and C [M, n] row-major f32 tensors, fp32 accumulation. beta == 0 never
/// reads C (it may hold NaN).
///
/// Making the plan validates A's structure (on the host, or on the device for large
/// matrices; `VkAttnError.malformedSparse` names the first bad row, before anything of the
/// multiply is dispatched), computes its row statistics and picks the kernel: `kernel`
/// and `path` say which. The kernels clamp every index they read, so not even a matrix
/// changed after planning makes them leave their buffers.
///
/// A plan owns the merge-path scratch buffers: encode it into one stream at a time.
public struct SpMMPlan: Sendable {
    /// The op name in errors.
    public static let opName = "sparse.spmm"

    /// A, the planned sparse matrix [M, K].
    public private(set) var matrix: CSRMatrix
    /// Columns of B and C.
    public private(set) var n: Int
    /// A's row statistics, from its validation.
    public private(set) var statistics: RowStatistics
    /// The kernel that runs.
    public private(set) var kernel: SpMMKernel
    /// True when the options named the kernel, false when the statistics chose it.
    public private(set) var kernelForced: Bool
    /// Where the structure was validated.
    public private(set) var validatedOn: SparseValidation.Site
    /// Columns per lane per load: 4 (vec4 loads of B and C) when n % 4 == 0, else 1.
    public private(set) var vectorWidth: Int
    /// Lanes of a team across the output's column vectors.
    public private(set) var lanesAcrossColumns: Int
    /// Column vectors each lane accumulates per pass over the nonzeros (so that one pass
    /// covers up to lanesAcrossColumns x this x vectorWidth columns).
    public private(set) var columnVectorsPerLane: Int
    /// Lanes of a team across a row's nonzeros (row-split; 1 for merge-path).
    public private(set) var lanesAcrossNonzeros: Int
    /// Merge-path items (rows + nonzeros) per team segment, and the number of segments.
    public private(set) var itemsPerSegment: Int
    /// Merge-path segments (0 for row-split).
    public private(set) var segments: Int

    var workgroupSize: Int
    var main: Kernel
    var partition: Kernel?
    var fixup: Kernel?
    var scratch: (coords: Buffer, carryRows: Buffer, carry: Buffer)?

    /// The path name the bench reports, e.g. "merge-path/vec4".
    public var path: String { "\(kernel.rawValue)/\(vectorWidth == 4 ? "vec4" : "scalar")" }

    /// Validates `matrix`, chooses the kernel and makes its pipelines and scratch buffers.
    /// - Parameters:
    ///   - matrix: A [M, K], f32 or f16 values.
    ///   - n: Columns of B and C; zero or more (with n = 0, or a matrix of no rows, C is empty
    ///     and ``encode(b:c:alpha:beta:on:)`` records nothing).
    ///   - options: A kernel to force, and where to validate.
    /// - Throws: ``VkAttnError/malformedSparse(op:row:reason:)`` naming A's first bad row;
    ///   ``VkAttnError/tooLarge(op:operand:bytes:limit:)`` when B or C would exceed one binding;
    ///   ``VkAttnError/unsupported(op:reason:)`` when the device lacks what the kernel needs or
    ///   a team would run past its loop cap; ``VkAttnError`` for a negative n.
    public init(_ matrix: CSRMatrix, n: Int, options: SpMMOptions = SpMMOptions()) throws {
        let op = SpMMPlan.opName
        let device = matrix.device
        guard n >= 0 else { throw VkAttnError.invalidValue(op: op, operand: "n", reason: "\(n) is negative") }
        try SparseLaunch.requireValues(op: op, matrix.valueType, device: device)
        for (name, tensor) in [("row offsets", matrix.rowOffsets), ("column indices", matrix.columnIndices), ("values", matrix.values)] {
            try SparseLaunch.expectUsable(op: op, name, tensor, device: device)
        }
        for (name, count) in [("B", matrix.cols), ("C", matrix.rows)] {
            let bytes = try Checked.product(op: op, operand: "n", count, n, 4)
            guard bytes <= device.capabilities.maxStorageBufferRange else {
                throw VkAttnError.tooLarge(op: op, operand: name, bytes: bytes, limit: device.capabilities.maxStorageBufferRange)
            }
        }

        let (stats, site) = try SparseDeviceValidation.validate(
            .init(op: op, rows: matrix.rows, cols: matrix.cols, nnz: matrix.nnz, rowOffsets: matrix.rowOffsets,
                  columnIndices: matrix.columnIndices, unit: .row),
            mode: options.validation)
        self.matrix = matrix
        self.n = n
        self.statistics = stats
        self.validatedOn = site
        self.kernel = options.kernel ?? SpMMKernel.choose(for: stats)
        self.kernelForced = options.kernel != nil
        self.vectorWidth = n % 4 == 0 ? 4 : 1

        let width = SparseLaunch.subgroupWidth(device)
        let vecN = n / vectorWidth
        let tn = min(width, SparseLaunch.nextPowerOfTwo(vecN))
        self.lanesAcrossColumns = tn
        let cpl = max(1, min(4, (vecN + tn - 1) / tn))  // 1 for n = 0 (nothing to launch)
        self.columnVectorsPerLane = cpl
        let f16 = matrix.valueType == .f16
        let v4 = vectorWidth == 4
        switch kernel {
        case .rowSplit:
            try SparseLaunch.requireShuffle(op: op, device: device)
            let tk = min(width / tn, SparseLaunch.previousPowerOfTwo(Int(stats.meanLength / 2)))
            lanesAcrossNonzeros = max(1, tk)
            workgroupSize = Launch.workgroupSize(128, device: device)
            let shader = f16 ? (v4 ? Shaders.sparseSpmmRowSplitF16V4 : Shaders.sparseSpmmRowSplitF16V1)
                             : (v4 ? Shaders.sparseSpmmRowSplitF32V4 : Shaders.sparseSpmmRowSplitF32V1)
            main = try device.kernel(KernelDescriptor(
                shader: shader, bindings: 7,
                specialization: ["local_size_x": .int(workgroupSize), "TN": .int(tn), "TK": .int(lanesAcrossNonzeros), "CPL": .int(cpl)]))
            partition = nil
            fixup = nil
            scratch = nil
            itemsPerSegment = 0
            segments = 0
        case .mergePath:
            lanesAcrossNonzeros = 1
            workgroupSize = Launch.workgroupSize(64, device: device)
            let caps = device.capabilities
            let items = matrix.rows + matrix.nnz
            let teams = max(1, (caps.computeUnits ?? 8) * 2048 / tn)
            var perSegment = min(max(SparseLaunch.nextPowerOfTwo(max(1, items / teams)), 32), 4096)
            // The carry-outs (one n-vector per segment) must fit one binding.
            let carryLimit = min(caps.maxStorageBufferRange, 256 << 20)
            while perSegment < items && ((items + perSegment - 1) / perSegment) * n * 4 > carryLimit { perSegment *= 2 }
            itemsPerSegment = perSegment
            segments = max(1, (items + perSegment - 1) / perSegment)
            let shader = f16 ? (v4 ? Shaders.sparseSpmmMergePathF16V4 : Shaders.sparseSpmmMergePathF16V1)
                             : (v4 ? Shaders.sparseSpmmMergePathF32V4 : Shaders.sparseSpmmMergePathF32V1)
            main = try device.kernel(KernelDescriptor(
                shader: shader, bindings: 11,
                specialization: ["local_size_x": .int(workgroupSize), "TN": .int(tn), "CPL": .int(cpl)]))
            partition = try device.kernel(KernelDescriptor(
                shader: Shaders.sparseSpmmMergePartition, bindings: 2,
                specialization: ["local_size_x": .int(workgroupSize)]))
            fixup = try device.kernel(KernelDescriptor(
                shader: v4 ? Shaders.sparseSpmmMergeFixupV4 : Shaders.sparseSpmmMergeFixupV1, bindings: 5,
                specialization: ["local_size_x": .int(workgroupSize)]))
            scratch = (try device.makeBuffer(byteCount: (segments + 1) * 8),
                       try device.makeBuffer(byteCount: segments * 4),
                       try device.makeBuffer(byteCount: segments * n * 4))
        }

        // Devices that cap an invocation's loop iterations (lavapipe) must not see a team walk
        // more than that: switch kernels when the statistics chose, else refuse.
        if let limit = device.capabilities.loopIterationLimit, loopIterationEstimate > limit * 9 / 10 {
            if !kernelForced {
                var other = options
                other.kernel = kernel == .rowSplit ? .mergePath : .rowSplit
                if let alternative = try? SpMMPlan(matrix, n: n, options: other), alternative.loopIterationEstimate <= limit * 9 / 10 {
                    self = alternative
                    self.kernelForced = false
                    return
                }
            }
            throw VkAttnError.unsupported(op: op, reason: "\(kernel.rawValue) would run about \(loopIterationEstimate) loop iterations per invocation, more than \(device.label) allows (\(limit)); use fewer columns n per call")
        }
    }

    /// An upper bound on the loop iterations one team's invocation runs: rows (row-split) or
    /// merge-path segments per team, times the passes over the columns, times the nonzeros
    /// walked per pass.
    public var loopIterationEstimate: Int {
        let device = matrix.device
        let passes = max(1, ((n / vectorWidth) + lanesAcrossColumns * columnVectorsPerLane - 1) / (lanesAcrossColumns * columnVectorsPerLane))
        let team = lanesAcrossColumns * lanesAcrossNonzeros
        switch kernel {
        case .rowSplit:
            let groups = SparseLaunch.groups(items: matrix.rows * team, workgroupSize: workgroupSize, device: device)
            let teams = max(1, groups * max(1, workgroupSize / team))
            let rowsPerTeam = (matrix.rows + teams - 1) / teams
            let nonzeros = min(rowsPerTeam * statistics.maxLength, matrix.nnz)
            return rowsPerTeam * (1 + passes * (2 + columnVectorsPerLane)) + passes * (nonzeros / lanesAcrossNonzeros + 1) * (1 + columnVectorsPerLane)
        case .mergePath:
            let groups = SparseLaunch.groups(items: segments * lanesAcrossColumns, workgroupSize: workgroupSize, device: device)
            let teams = max(1, groups * max(1, workgroupSize / lanesAcrossColumns))
            let segmentsPerTeam = (segments + teams - 1) / teams
            return segmentsPerTeam * passes * (itemsPerSegment + 2) * (1 + columnVectorsPerLane) + 64
        }
    }

    /// Records C = alpha * A * B + beta * C into `stream`. B: [K, n] f32, C: [M, n] f32.
    /// Throws before recording anything on bad operands.
    /// - Parameters:
    ///   - stream: A stream of A's device.
    ///   - b: B [K, n], f32.
    ///   - c: C [M, n], f32: read (unless beta is 0) and written. Empty (M = 0 or n = 0): nothing
    ///     is recorded. With no nonzeros, C = beta C takes no kernel for beta 0 (a fill) or 1.
    ///   - alpha: The product's factor; finite.
    ///   - beta: C's factor; finite. 0 never reads C.
    /// - Throws: ``VkAttnError`` for an operand of the wrong shape, type or device, or a factor
    ///   that is not finite.
    public func encode(b: Tensor, c: Tensor, alpha: Float = 1, beta: Float = 0, on stream: Stream) throws {
        let op = SpMMPlan.opName
        let device = matrix.device
        guard stream.device === device else { throw VkAttnError.deviceMismatch(op: op, operand: "stream") }
        try b.expect(op: op, "B", shape: [matrix.cols, n], dtype: .f32, device: device)
        try c.expect(op: op, "C", shape: [matrix.rows, n], dtype: .f32, device: device)
        try SparseLaunch.expectUsable(op: op, "B", b, device: device)
        try SparseLaunch.expectUsable(op: op, "C", c, device: device)
        try SparseLaunch.expectFinite(op: op, "alpha", alpha)
        try SparseLaunch.expectFinite(op: op, "beta", beta)
        // Empty C (M = 0 or n = 0): nothing to do. No nonzeros (nnz = 0, or K = 0): A B = 0,
        // so C = beta C, which needs no kernel for beta 0 (a fill) or 1 (C as it is).
        if c.isEmpty { return }
        if matrix.nnz == 0 && (beta == 0 || beta == 1) {
            if beta == 0 { try c.recordFill(bits: 0, on: stream) }
            return
        }

        let push = SpMMRowSplitPush(rows: try UInt32(pushing: matrix.rows, "rows"), k: try UInt32(pushing: matrix.cols, "k"),
                                    n: try UInt32(pushing: n, "n"), nnz: try UInt32(pushing: matrix.nnz, "nnz"), alpha: alpha, beta: beta)
        let sparse = [matrix.rowOffsets.slice, matrix.columnIndices.slice, matrix.values.slice]
        let dense = [b.slice, b.slice, c.slice, c.slice]

        switch kernel {
        case .rowSplit:
            let team = lanesAcrossColumns * lanesAcrossNonzeros
            let groups = SparseLaunch.groups(items: matrix.rows * team, workgroupSize: workgroupSize, device: device)
            try stream.dispatch(main, bindings: sparse + dense, push: push, groups: (groups, 1, 1))
        case .mergePath:
            guard let partition, let fixup, let scratch else { return }
            let segmentCount = try UInt32(pushing: segments, "segments")
            let mergePush = SpMMMergePathPush(rows: push.rows, k: push.k, n: push.n, nnz: push.nnz, alpha: alpha, beta: beta, segments: segmentCount)
            let fixupPush = SpMMMergeFixupPush(rows: push.rows, n: push.n, segments: segmentCount, alpha: alpha)
            let partitionPush = SpMMMergePartitionPush(rows: push.rows, nnz: push.nnz, segments: segmentCount,
                                                       itemsPerSegment: try UInt32(pushing: itemsPerSegment, "items per segment"))
            let boundaries = SparseLaunch.groups(items: segments + 1, workgroupSize: workgroupSize, device: device)
            try stream.dispatch(partition, bindings: [matrix.rowOffsets.slice, scratch.coords.whole],
                                push: partitionPush, groups: (boundaries, 1, 1))
            try stream.barrier()
            let groups = SparseLaunch.groups(items: segments * lanesAcrossColumns, workgroupSize: workgroupSize, device: device)
            try stream.dispatch(main, bindings: sparse + dense + [scratch.coords.whole, scratch.carryRows.whole,
                                                                  scratch.carry.whole, scratch.carry.whole],
                                push: mergePush, groups: (groups, 1, 1))
            if segments > 1 {
                try stream.barrier()
                let items = segments * (n / vectorWidth)
                let fixupGroups = SparseLaunch.groups(items: items, workgroupSize: workgroupSize, device: device)
                try stream.dispatch(fixup, bindings: [c.slice, c.slice, scratch.carry.whole, scratch.carry.whole,
                                                      scratch.carryRows.whole],
                                    push: fixupPush, groups: (fixupGroups, 1, 1))
            }
        }
    }
}

/// Shaders/sparse/spmm_row_split.comp.
struct SpMMRowSplitPush: PushConstantBlock {
    var rows: UInt32, k: UInt32, n: UInt32, nnz: UInt32
    var alpha: Float, beta: Float
}

/// Shaders/sparse/spmm_merge_path.comp.
struct SpMMMergePathPush: PushConstantBlock {
    var rows: UInt32, k: UInt32, n: UInt32, nnz: UInt32
    var alpha: Float, beta: Float
    var segments: UInt32
}

/// Shaders/sparse/spmm_merge_fixup.comp.
struct SpMMMergeFixupPush: PushConstantBlock {
    var rows: UInt32, n: UInt32, segments: UInt32
    var alpha: Float
}

/// Shaders/sparse/spmm_merge_partition.comp.
struct SpMMMergePartitionPush: PushConstantBlock {
    var rows: UInt32, nnz: UInt32, segments: UInt32
    var itemsPerSegment: UInt32
}
