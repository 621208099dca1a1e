/// The kernels of block-CSR SpMM.
public enum BSRKernel: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// Shared-memory tiles and fp32 FMAs: runs everywhere.
    case scalar
    /// KHR cooperative-matrix multiply-accumulate (tensor cores) on 16-bit values and a 16-bit
    /// B, fp32 accumulators, where the build's glslc accepted GL_KHR_cooperative_matrix and the
    /// device offers a fitting f16 shape. The automatic choice for f16 values and f16 B.
    case cooperativeMatrix = "coopmat"
    /// GL_NV_cooperative_matrix multiply-accumulate with every input rounded to f16 (fp32
    /// accumulators): only on request, since it narrows f32 operands.
    case cooperativeMatrixNV = "coopmat-nv"

    /// The raw value: `scalar`, `coopmat` or `coopmat-nv`.
    public var description: String { rawValue }
}

/// Options of a block-CSR SpMM plan.
public struct BSRSpMMOptions: Sendable, Hashable {
    /// The kernel to run, or nil for the cooperative-matrix one where available, else scalar.
    public var kernel: BSRKernel?
    /// Where the block structure is checked.
    public var validation: SparseValidation.Mode
    /// The element type of the dense operand B: f32, f16 or bf16.
    public var denseType: DType

    /// - Parameters:
    ///   - kernel: the kernel to run, or nil for cooperative matrices where the operands are
    ///     16-bit and the build and device allow, else scalar.
    ///   - validation: where the block structure is validated.
    ///   - denseType: B's element type (f32, f16 or bf16).
    public init(kernel: BSRKernel? = nil, validation: SparseValidation.Mode = .auto, denseType: DType = .f32) {
        self.kernel = kernel
        self.validation = validation
        self.denseType = denseType
    }
}

/// Block-CSR sparse x dense: C = alpha * A * B + beta * C with A a `BSRMatrix`
/// [blockRows * bs, blockCols * bs] (bs 16 or 32, f32, f16 or bf16 values), B [blockCols * bs, n]
/// row-major f32, f16 or bf16 (`BSRSpMMOptions.denseType`) and C [blockRows * bs, n] row-major f32,
/// fp32 accumulation; beta == 0 never reads C.
///
/// The plan validates the block structure (the error names the first bad block row) and
/// picks the kernel; `kernel`, `path` and `cooperativeMatrixSkipped` say what runs and why.
public struct BSRSpMMPlan: Sendable {
    /// The op name in errors.
    public static let opName = "sparse.bsrSpmm"
    static let tileColumns = 64

    /// A, the planned block-sparse matrix.
    public let matrix: BSRMatrix
    /// Columns of B and C.
    public let n: Int
    /// Blocks per block row, from A's validation.
    public let statistics: RowStatistics
    /// The kernel that runs.
    public let kernel: BSRKernel
    /// Where the block structure was validated.
    public let validatedOn: SparseValidation.Site
    /// B's element type.
    public let denseType: DType
    /// The cooperative-matrix shape used (M x N x K), when `kernel` is a cooperative-matrix one.
    public let cooperativeMatrixShape: CooperativeMatrixShape?
    /// Why the cooperative-matrix kernel is not used on this device or build, when it is not.
    public let cooperativeMatrixSkipped: String?

    let main: Kernel
    let workgroupSize: Int

    /// The path name the bench reports, e.g. "bsr32-scalar" or "bsr32-coopmat-16x16x16".
    public var path: String {
        if let s = cooperativeMatrixShape { return "bsr\(matrix.blockSize)-\(kernel.rawValue)-\(s.m)x\(s.n)x\(s.k)" }
        return "bsr\(matrix.blockSize)-\(kernel.rawValue)"
    }

    /// Validates `matrix`, chooses the kernel and makes its pipeline.
    /// - Parameters:
    ///   - matrix: A, block size 16 or 32; f32, f16 or bf16 values.
    ///   - n: Columns of B and C; positive.
    ///   - options: A kernel to force, where to validate, B's type.
    /// - Throws: ``VkAttnError/malformedSparse(op:row:reason:)`` naming A's first bad block row;
    ///   ``VkAttnError/unsupported(op:reason:)`` for a requested cooperative-matrix kernel the
    ///   build or device cannot run, an operand type pair no kernel takes, or a block row past the
    ///   loop cap; ``VkAttnError/tooLarge(op:operand:bytes:limit:)`` when B or C would exceed one
    ///   binding; ``VkAttnError`` for an n that is not positive or needs too many workgroups.
    public init(_ matrix: BSRMatrix, n: Int, options: BSRSpMMOptions = BSRSpMMOptions()) throws {
        let op = BSRSpMMPlan.opName
        let device = matrix.device
        let caps = device.capabilities
        guard n >= 0 else { throw VkAttnError.invalidValue(op: op, operand: "n", reason: "\(n) is negative") }
        try SparseLaunch.requireValues(op: op, matrix.valueType, device: device)
        for (name, tensor) in [("block row offsets", matrix.blockRowOffsets), ("block column indices", matrix.blockColumnIndices),
                               ("values", matrix.values)] {
            try SparseLaunch.expectUsable(op: op, name, tensor, device: device)
        }
        for (name, count) in [("B", matrix.cols), ("C", matrix.rows)] {
            let bytes = try Checked.product(op: op, operand: "n", count, n, 4)
            guard bytes <= caps.maxStorageBufferRange else {
                throw VkAttnError.tooLarge(op: op, operand: name, bytes: bytes, limit: caps.maxStorageBufferRange)
            }
        }
        let tiles = (n + BSRSpMMPlan.tileColumns - 1) / BSRSpMMPlan.tileColumns
        guard tiles <= caps.maxWorkgroupCount[0] else {
            throw VkAttnError.invalidValue(op: op, operand: "n", reason: "\(n) columns need \(tiles) workgroups, the device allows \(caps.maxWorkgroupCount[0])")
        }

        let (stats, site) = try SparseDeviceValidation.validate(
            .init(op: op, rows: matrix.blockRows, cols: matrix.blockCols, nnz: matrix.blockCount,
                  rowOffsets: matrix.blockRowOffsets, columnIndices: matrix.blockColumnIndices, unit: .blockRow),
            mode: options.validation)
        // The scalar kernel's workgroup walks its block rows' blocks, with a loop over the
        // block's columns per block: devices that cap an invocation's loop iterations
        // (lavapipe) refuse block rows longer than that allows.
        if let limit = caps.loopIterationLimit {
            let bs = matrix.blockSize
            let perBlock = (bs * bs + 255) / 256 + (bs * BSRSpMMPlan.tileColumns + 255) / 256 + bs * (1 + (bs / 16) * 5) + 4
            let rowsPerGroup = (matrix.blockRows + min(matrix.blockRows, caps.maxWorkgroupCount[1]) - 1) / max(1, min(matrix.blockRows, caps.maxWorkgroupCount[1]))
            let estimate = rowsPerGroup * (stats.maxLength * perBlock + 16)
            if estimate > limit * 9 / 10 {
                throw VkAttnError.unsupported(op: op, reason: "a block row of \(stats.maxLength) blocks needs about \(estimate) loop iterations per invocation, more than \(device.label) allows (\(limit))")
            }
        }
        self.matrix = matrix
        self.n = n
        self.statistics = stats
        self.validatedOn = site

        let f16 = matrix.valueType == .f16
        guard options.denseType == .f32 || options.denseType.isHalfWidth else {
            throw VkAttnError.dtypeMismatch(op: op, operand: "denseType", expected: "f32, f16 or bf16", actual: options.denseType.rawValue)
        }
        if options.denseType.isHalfWidth && !(device.enabled.storageBuffer16BitAccess) {
            throw VkAttnError.unsupported(op: op, reason: "\(options.denseType) B needs storageBuffer16BitAccess, which \(device.label) lacks")
        }
        denseType = options.denseType
        let khr = BSRSpMMPlan.cooperativeMatrixKHR(device: device, blockSize: matrix.blockSize, valueType: matrix.valueType,
                                                    denseType: options.denseType)
        var chosen = options.kernel ?? .scalar
        var skipped: String? = nil
        switch (options.kernel, khr) {
        case (nil, .success), (.cooperativeMatrix, .success):
            chosen = .cooperativeMatrix
        case (.cooperativeMatrix, .failure(let reason)):
            throw VkAttnError.unsupported(op: op, reason: "cooperative-matrix kernel: \(reason.text)")
        case (nil, .failure(let reason)):
            chosen = .scalar
            skipped = reason.text
        case (.scalar, _):
            skipped = "the scalar kernel was requested"
        case (.cooperativeMatrixNV, _):
            break
        }
        kernel = chosen
        cooperativeMatrixSkipped = skipped
        switch chosen {
        case .scalar:
            cooperativeMatrixShape = nil
            workgroupSize = 256
            let shader: ShaderSource
            switch (matrix.valueType, options.denseType) {
            case (.f32, .f32): shader = Shaders.sparseBsrSpmmF32
            case (.f16, .f32): shader = Shaders.sparseBsrSpmmF16
            case (.f32, .f16): shader = Shaders.sparseBsrSpmmF32b16
            case (.f16, .f16): shader = Shaders.sparseBsrSpmmF16b16
            case (.bf16, .f32): shader = Shaders.sparseBsrSpmmBf16
            case (.f32, .bf16): shader = Shaders.sparseBsrSpmmF32bbf16
            case (.bf16, .bf16): shader = Shaders.sparseBsrSpmmBf16bbf16
            default:
                throw VkAttnError.unsupported(op: op, reason: "\(matrix.valueType) values with a \(options.denseType) B (supported: both f32, both 16-bit of one kind, or one f32 and one 16-bit)")
            }
            main = try device.kernel(KernelDescriptor(shader: shader, bindings: 5,
                                                      specialization: ["BS": .int(matrix.blockSize)]))
        case .cooperativeMatrix:
            guard case .success(let shape) = khr else { throw VkAttnError.unsupported(op: op, reason: "no cooperative-matrix shape") }
            cooperativeMatrixShape = shape
            let subgroups = (matrix.blockSize / shape.m) * (BSRSpMMPlan.tileColumns / shape.n)
            workgroupSize = subgroups * caps.subgroupSize
            main = try device.kernel(KernelDescriptor(
                shader: Shaders.sparseBsrSpmmCoopmatF16, bindings: 5,
                specialization: ["local_size_x": .int(workgroupSize), "BS": .int(matrix.blockSize), "MM": .int(shape.m), "NN": .int(shape.n),
                                 "KK": .int(shape.k), "TILE_N": .int(BSRSpMMPlan.tileColumns)],
                requiredSubgroupSize: device.enabled.subgroupSizeControl ? caps.subgroupSize : nil,
                fullSubgroups: true))
        case .cooperativeMatrixNV:
            guard options.denseType == .f32, matrix.valueType != .bf16 else {
                throw VkAttnError.unsupported(op: op, reason: "the NV cooperative-matrix kernel takes f32 or f16 values and an f32 B")
            }
            let shape: CooperativeMatrixShape
            switch BSRSpMMPlan.cooperativeMatrix(device: device, blockSize: matrix.blockSize, f16Values: f16) {
            case .success(let s): shape = s
            case .failure(let reason): throw VkAttnError.unsupported(op: op, reason: "cooperative-matrix kernel: \(reason.text)")
            }
            cooperativeMatrixShape = shape
            let subgroups = (matrix.blockSize / shape.m) * (BSRSpMMPlan.tileColumns / shape.n)
            workgroupSize = subgroups * caps.subgroupSize
            main = try device.kernel(KernelDescriptor(
                shader: f16 ? Shaders.sparseBsrSpmmCoopmatNvF16 : Shaders.sparseBsrSpmmCoopmatNvF32, bindings: 5,
                specialization: ["local_size_x": .int(workgroupSize), "BS": .int(matrix.blockSize), "MM": .int(shape.m), "NN": .int(shape.n),
                                 "KK": .int(shape.k), "TILE_N": .int(BSRSpMMPlan.tileColumns)],
                requiredSubgroupSize: device.enabled.subgroupSizeControl ? caps.subgroupSize : nil,
                fullSubgroups: device.enabled.computeFullSubgroups))
        }
    }

    /// The KHR cooperative-matrix shape for these blocks and operand types, or why none.
    static func cooperativeMatrixKHR(device: Device, blockSize: Int, valueType: DType, denseType: DType) -> Result<CooperativeMatrixShape, Reason> {
        guard valueType == .f16, denseType == .f16 else {
            return .failure(Reason(text: "\(valueType) values with a \(denseType) B (the cooperative-matrix kernel takes f16 values and an f16 B; f32 is never rounded and bf16 never narrowed behind the caller's back)"))
        }
        let caps = device.capabilities
        let maxWG = min(caps.maxWorkgroupInvocations, caps.maxWorkgroupSize[0])
        let result = CooperativeMatrix.shape(device: device, input: .f16, shader: Shaders.sparseBsrSpmmCoopmatF16) { s in
            blockSize % s.m == 0 && blockSize % s.k == 0 && tileColumns % s.n == 0
                && (blockSize / s.m) * (tileColumns / s.n) * caps.subgroupSize <= maxWG
        }
        return result.mapError { Reason(text: $0.reason) }
    }

    struct Reason: Error { var text: String }


    /// Why `kernel` (a cooperative-matrix one) cannot run on `device` for these blocks and
    /// operand types (this build's glslc, the device's extension, features or shapes, the
    /// operands), or nil when it can.
    /// - Parameters:
    ///   - device: The device to ask about.
    ///   - blockSize: 16 or 32.
    ///   - valueType: A's value type.
    ///   - denseType: B's type.
    ///   - kernel: ``BSRKernel/cooperativeMatrix`` or ``BSRKernel/cooperativeMatrixNV``.
    /// - Returns: The reason, or nil when the kernel can run.
    public static func cooperativeMatrixUnavailableReason(device: Device, blockSize: Int, valueType: DType,
                                                          denseType: DType = .f16,
                                                          kernel: BSRKernel = .cooperativeMatrix) -> String? {
        let result = kernel == .cooperativeMatrixNV
            ? cooperativeMatrix(device: device, blockSize: blockSize, f16Values: valueType == .f16)
            : cooperativeMatrixKHR(device: device, blockSize: blockSize, valueType: valueType, denseType: denseType)
        if case let .failure(reason) = result { return reason.text }
        return nil
    }

    /// The NV cooperative-matrix shape this device and build can use for `blockSize` blocks,
    /// or why none.
    static func cooperativeMatrix(device: Device, blockSize: Int, f16Values: Bool) -> Result<CooperativeMatrixShape, Reason> {
        let shader = f16Values ? Shaders.sparseBsrSpmmCoopmatNvF16 : Shaders.sparseBsrSpmmCoopmatNvF32
        if let reason = shader.unavailableReason { return .failure(Reason(text: reason)) }
        guard device.enabled.cooperativeMatrixNV else {
            return .failure(Reason(text: "\(device.label) offers no VK_NV_cooperative_matrix"))
        }
        guard device.enabled.shaderFloat16 else {
            return .failure(Reason(text: "\(device.label) lacks shaderFloat16 (f16 shared-memory tiles)"))
        }
        let caps = device.capabilities
        let fitting = caps.cooperativeMatrixNV.filter { s in
            s.aType == "f16" && s.bType == "f16" && s.cType == "f32" && s.resultType == "f32" && s.scope == "subgroup"
                && blockSize % s.m == 0 && blockSize % s.k == 0 && tileColumns % s.n == 0
                && (blockSize / s.m) * (tileColumns / s.n) * caps.subgroupSize <= caps.maxWorkgroupInvocations
        }
        guard let best = fitting.max(by: { $0.m * $0.n * $0.k < $1.m * $1.n * $1.k }) else {
            return .failure(Reason(text: "\(device.label) offers no f16 x f16 + f32 subgroup shape dividing \(blockSize) x \(tileColumns)"))
        }
        return .success(best)
    }

    /// Records C = alpha * A * B + beta * C. B: [A.cols, n] of `denseType`, C: [A.rows, n] f32.
    /// - Parameters:
    ///   - stream: A stream of A's device.
    ///   - b: B [A.cols, n] of the plan's `denseType`.
    ///   - c: C [A.rows, n], f32: read (unless beta is 0) and written. Empty (A.rows = 0 or n = 0): nothing
    ///     is recorded. With no nonzeros, C = beta C takes no kernel for beta 0 (a fill) or 1.
    ///   - alpha: The product's factor; finite.
    ///   - beta: C's factor; finite. 0 never reads C.
    /// - Throws: ``VkAttnError`` for an operand of the wrong shape, type or device, or a factor
    ///   that is not finite.
    public func encode(b: Tensor, c: Tensor, alpha: Float = 1, beta: Float = 0, on stream: Stream) throws {
        let op = BSRSpMMPlan.opName
        let device = matrix.device
        guard stream.device === device else { throw VkAttnError.deviceMismatch(op: op, operand: "stream") }
        try b.expect(op: op, "B", shape: [matrix.cols, n], dtype: denseType, device: device)
        try c.expect(op: op, "C", shape: [matrix.rows, n], dtype: .f32, device: device)
        try SparseLaunch.expectUsable(op: op, "B", b, device: device)
        try SparseLaunch.expectUsable(op: op, "C", c, device: device)
        try SparseLaunch.expectFinite(op: op, "alpha", alpha)
        try SparseLaunch.expectFinite(op: op, "beta", beta)
        // As SpMM: empty C records nothing; no blocks leave C = beta C (a fill for beta 0).
        if c.isEmpty { return }
        if matrix.blockCount == 0 && (beta == 0 || beta == 1) {
            if beta == 0 { try c.recordFill(bits: 0, on: stream) }
            return
        }
        let push = BSRSpMMPush(blockRows: try UInt32(pushing: matrix.blockRows, "block rows"), blockCols: try UInt32(pushing: matrix.blockCols, "block cols"),
                               n: try UInt32(pushing: n, "n"), blocks: try UInt32(pushing: matrix.blockCount, "blocks"), alpha: alpha, beta: beta)
        let tiles = (n + BSRSpMMPlan.tileColumns - 1) / BSRSpMMPlan.tileColumns
        let rows = min(matrix.blockRows, device.capabilities.maxWorkgroupCount[1])
        try stream.dispatch(main, bindings: [matrix.blockRowOffsets.slice, matrix.blockColumnIndices.slice,
                                             matrix.values.slice, b.slice, c.slice],
                            push: push, groups: (tiles, rows, 1))
    }
}

/// Shaders/sparse/bsr_spmm*.comp.
struct BSRSpMMPush: PushConstantBlock {
    var blockRows: UInt32, blockCols: UInt32, n: UInt32, blocks: UInt32
    var alpha: Float, beta: Float
}
