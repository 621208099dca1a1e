/// Options of an SDDMM plan.
public struct SDDMMOptions: Sendable, Hashable {
    /// Multiply each sampled dot product by the pattern's value at that nonzero.
    public var scaleByValues: Bool
    /// Where the pattern's structure is checked.
    public var validation: SparseValidation.Mode

    /// - Parameters:
    ///   - scaleByValues: Multiply by the pattern's values.
    ///   - validation: Where the structure is checked.
    public init(scaleByValues: Bool = false, validation: SparseValidation.Mode = .auto) {
        self.scaleByValues = scaleByValues
        self.validation = validation
    }
}

/// Sampled dense-dense product: for every nonzero p at (r, c) of a CSR pattern [M, N],
/// out[p] = alpha * dot(X[r, :], Y[c, :]) * (scaleByValues ? pattern.values[p] : 1), with X
/// [M, k] and Y [N, k] row-major f32 and out f32 [max(nnz, 1)] (the nonzeros' order), fp32
/// accumulation. (X * Y^T sampled at the pattern: the score step of sparse attention and the
/// gradient of SpMM with respect to A's values.)
///
/// Nonzero-split: teams of lanes take equal chunks of nonzeros, so skewed rows cost nothing
/// extra. The plan validates the pattern first (the error names the first bad row).
public struct SDDMMPlan: Sendable {
    /// The op name in errors.
    public static let opName = "sparse.sddmm"

    /// The sampling pattern [M, N]; its values only matter with `scaleByValues`.
    public let pattern: CSRMatrix
    /// The length of the dot products: columns of X and Y.
    public let k: Int
    /// The options planned with.
    public let options: SDDMMOptions
    /// The pattern's row statistics, from its validation.
    public let statistics: RowStatistics
    /// Where the pattern was validated.
    public let validatedOn: SparseValidation.Site
    /// 4 (vec4 loads of X and Y) when k % 4 == 0, else 1.
    public let vectorWidth: Int
    /// Lanes of a team splitting k.
    public let lanesAcrossK: Int
    /// Consecutive nonzeros per team.
    public let nonzerosPerTeam: Int

    let main: Kernel
    let workgroupSize: Int

    /// The path name the bench reports, e.g. "nonzero-split/vec4".
    public var path: String { "nonzero-split/\(vectorWidth == 4 ? "vec4" : "scalar")" }

    /// Validates `pattern` and makes the kernel.
    /// - Parameters:
    ///   - pattern: The CSR pattern [M, N] (f32 or f16 values).
    ///   - k: Columns of X and Y; zero or more (k = 0 makes every sampled product 0, written
    ///     by a fill with no kernel).
    ///   - options: Scaling by the values, and where to validate.
    /// - Throws: ``VkAttnError/malformedSparse(op:row:reason:)`` naming the first bad row;
    ///   ``VkAttnError/tooLarge(op:operand:bytes:limit:)`` when X or Y would exceed one binding;
    ///   ``VkAttnError/unsupported(op:reason:)`` when the device lacks subgroup shuffles or a team
    ///   would run past its loop cap; ``VkAttnError`` for a negative k.
    public init(_ pattern: CSRMatrix, k: Int, options: SDDMMOptions = SDDMMOptions()) throws {
        let op = SDDMMPlan.opName
        let device = pattern.device
        guard k >= 0 else { throw VkAttnError.invalidValue(op: op, operand: "k", reason: "\(k) is negative") }
        try SparseLaunch.requireValues(op: op, pattern.valueType, device: device)
        try SparseLaunch.requireShuffle(op: op, device: device)
        for (name, tensor) in [("row offsets", pattern.rowOffsets), ("column indices", pattern.columnIndices), ("values", pattern.values)] {
            try SparseLaunch.expectUsable(op: op, name, tensor, device: device)
        }
        for (name, count) in [("X", pattern.rows), ("Y", pattern.cols)] {
            let bytes = try Checked.product(op: op, operand: "k", count, k, 4)
            guard bytes <= device.capabilities.maxStorageBufferRange else {
                throw VkAttnError.tooLarge(op: op, operand: name, bytes: bytes, limit: device.capabilities.maxStorageBufferRange)
            }
        }
        let (stats, site) = try SparseDeviceValidation.validate(
            .init(op: op, rows: pattern.rows, cols: pattern.cols, nnz: pattern.nnz, rowOffsets: pattern.rowOffsets,
                  columnIndices: pattern.columnIndices, unit: .row),
            mode: options.validation)
        self.pattern = pattern
        self.k = k
        self.options = options
        self.statistics = stats
        self.validatedOn = site
        self.vectorWidth = k % 4 == 0 ? 4 : 1
        lanesAcrossK = min(SparseLaunch.subgroupWidth(device), SparseLaunch.nextPowerOfTwo(k / vectorWidth))
        nonzerosPerTeam = 32
        workgroupSize = Launch.workgroupSize(128, device: device)
        // A team walks chunks of nonzeros, each a loop over k: devices that cap an invocation's
        // loop iterations (lavapipe) refuse what would exceed it.
        if let limit = device.capabilities.loopIterationLimit, pattern.nnz > 0 {
            let teams = (pattern.nnz + nonzerosPerTeam - 1) / nonzerosPerTeam
            let groups = SparseLaunch.groups(items: teams * lanesAcrossK, workgroupSize: workgroupSize, device: device)
            let chunksPerTeam = (teams + groups * max(1, workgroupSize / lanesAcrossK) - 1) / (groups * max(1, workgroupSize / lanesAcrossK))
            let estimate = chunksPerTeam * nonzerosPerTeam * ((k / vectorWidth) / lanesAcrossK + 8) + 16
            if estimate > limit * 9 / 10 {
                throw VkAttnError.unsupported(op: op, reason: "\(pattern.nnz) nonzeros with k = \(k) need about \(estimate) loop iterations per invocation, more than \(device.label) allows (\(limit))")
            }
        }
        let f16 = pattern.valueType == .f16
        let v4 = vectorWidth == 4
        let shader = f16 ? (v4 ? Shaders.sparseSddmmF16V4 : Shaders.sparseSddmmF16V1)
                         : (v4 ? Shaders.sparseSddmmF32V4 : Shaders.sparseSddmmF32V1)
        main = try device.kernel(KernelDescriptor(
            shader: shader, bindings: 8,
            specialization: ["local_size_x": .int(workgroupSize), "T": .int(lanesAcrossK), "SCALE": .bool(options.scaleByValues)]))
    }

    /// Records the sampled product into `out` (f32 [max(nnz, 1)]; only the first nnz
    /// elements are written). X: [M, k] f32, Y: [N, k] f32.
    /// - Parameters:
    ///   - stream: A stream of the pattern's device.
    ///   - x: X [M, k], f32.
    ///   - y: Y [N, k], f32.
    ///   - out: f32 [max(nnz, 1)] (or an empty [0] when nnz = 0), one value per nonzero in the
    ///     pattern's order.
    ///   - alpha: The products' factor; finite.
    /// - Throws: ``VkAttnError`` for an operand of the wrong shape, type or device, or an alpha
    ///   that is not finite.
    public func encode(x: Tensor, y: Tensor, out: Tensor, alpha: Float = 1, on stream: Stream) throws {
        let op = SDDMMPlan.opName
        let device = pattern.device
        guard stream.device === device else { throw VkAttnError.deviceMismatch(op: op, operand: "stream") }
        try x.expect(op: op, "X", shape: [pattern.rows, k], dtype: .f32, device: device)
        try y.expect(op: op, "Y", shape: [pattern.cols, k], dtype: .f32, device: device)
        try out.expect(op: op, "out", shape: pattern.nnz == 0 && out.shape == [0] ? [0] : [max(pattern.nnz, 1)], dtype: .f32, device: device)
        for (name, tensor) in [("X", x), ("Y", y), ("out", out)] {
            try SparseLaunch.expectUsable(op: op, name, tensor, device: device)
        }
        try SparseLaunch.expectFinite(op: op, "alpha", alpha)
        guard pattern.nnz > 0 else { return }
        // k = 0: every sampled dot product is an empty sum, 0 (a fill, no kernel).
        guard k > 0 else { return try out.recordFill(bits: 0, on: stream) }
        let push = SDDMMPush(rows: try UInt32(pushing: pattern.rows, "rows"), cols: try UInt32(pushing: pattern.cols, "cols"),
                             k: try UInt32(pushing: k, "k"), nnz: try UInt32(pushing: pattern.nnz, "nnz"),
                             chunk: try UInt32(pushing: nonzerosPerTeam, "chunk"), alpha: alpha)
        let teams = (pattern.nnz + nonzerosPerTeam - 1) / nonzerosPerTeam
        let groups = SparseLaunch.groups(items: teams * lanesAcrossK, workgroupSize: workgroupSize, device: device)
        try stream.dispatch(main, bindings: [pattern.rowOffsets.slice, pattern.columnIndices.slice, pattern.values.slice,
                                             x.slice, x.slice, y.slice, y.slice, out.slice],
                            push: push, groups: (groups, 1, 1))
    }
}

/// Shaders/sparse/sddmm.comp.
struct SDDMMPush: PushConstantBlock {
    var rows: UInt32, cols: UInt32, k: UInt32, nnz: UInt32
    /// Nonzeros per team.
    var chunk: UInt32
    var alpha: Float
}
