import ArgumentParser
import VkAttn
import VkAttnReference

struct SpMM: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spmm",
        abstract: "Sparse x dense: C = alpha * A * B + beta * C, A CSR or block-CSR, B [K, n] and C [M, n] f32.",
        discussion: """
            GFLOP/s counts 2 * nnz * n (for block-CSR, nnz counts every stored block value); the tflops
            field holds the same in TFLOP/s. GB/s counts the minimum bytes: A's arrays, the rows of B
            its columns reference, C written (and read when beta != 0). ratio_to_copy is against
            vkCmdCopyBuffer of that many bytes. The path column is the kernel that ran; --kernel auto
            lets the row statistics choose (CSR) or takes the cooperative-matrix kernel where the
            device offers one (block-CSR). For a generated block-CSR matrix, --density is the fraction
            of blocks present (each dense); an .mtx file is blocked (every block with a nonzero kept).
            A malformed matrix fails the command with its error.
            """)

    @OptionGroup var device: DeviceOptions
    @OptionGroup var measure: MeasureOptions
    @OptionGroup var input: SparseMatrixOptions
    @Option(help: "Columns of B and C.") var n = 64
    @Option(help: "Sparse format: CSR or block-CSR.") var format = SparseFormat.csr
    @Option(help: "Block size of --format bsr: 16 or 32.") var block = 32
    @Option(help: "CSR: auto, row-split, merge-path or all; BSR: auto, scalar, coopmat, coopmat-nv or all.") var kernel = SpMMKernelChoice.auto
    @Option(help: "C = alpha * A * B + beta * C.") var alpha: Float = 1
    @Option(help: "C = alpha * A * B + beta * C (0: C is not read).") var beta: Float = 0
    @Flag(help: "CSR: multiply by A^T, transposed on the device first (the transpose is timed as its own row).")
    var transpose = false

    func validate() throws {
        guard n >= 1 else { throw OptionError("--n must be positive") }
        guard BSRMatrix.supportedBlockSizes.contains(block) else { throw OptionError("--block must be 16 or 32, got \(block)") }
        try Limits.require([("B", [input.cols ?? input.rows, n], 4), ("C", [input.rows, n], 4)])
        switch format {
        case .csr:
            guard kernel.csrKernels != nil else {
                throw OptionError("--kernel for csr: auto, row-split, merge-path or all; got \(kernel.rawValue)")
            }
        case .bsr:
            guard kernel.bsrKernels != nil else {
                throw OptionError("--kernel for bsr: auto, scalar, coopmat, coopmat-nv or all; got \(kernel.rawValue)")
            }
        }
    }

    func run() throws {
        let context = try BenchContext(device)
        let seed = input.seed ?? SeededRandom.fresh().seed
        let rows: [ResultRow]
        if format == .csr {
            let (csr, source) = try input.load(seed: seed)
            rows = try runCSR(context, csr, source: source, seed: seed)
        } else if input.matrix != nil {
            // A file's nonzeros, blocked: every block holding one becomes a dense block.
            let (csr, source) = try input.load(seed: seed)
            rows = try runBSR(context, BSRArrays(csr: csr, blockSize: block), source: source, seed: seed)
        } else {
            // The distribution and density apply to the blocks.
            let cols = input.cols ?? input.rows
            let a = SparseGenerator.bsr(input.distribution, blockSize: block, blockRows: (input.rows + block - 1) / block,
                                        blockCols: (cols + block - 1) / block, density: input.density,
                                        emptyRowFraction: input.emptyRows, seed: seed)
            let source: [String: ConfigValue] = ["distribution": .string(input.distribution.rawValue),
                                                 "block_density": .double(input.density), "seed": .string(String(seed))]
            rows = try runBSR(context, a, source: source, seed: seed)
        }
        try context.report(rows, json: measure.json)
    }

    /// Dense operands for A [m, k]: B [k, n], and C [m, n] when beta != 0.
    func operands(m: Int, k: Int, seed: UInt64) -> (b: [Float], c: [Float]?) {
        var rng = SeededRandom(seed: seed ^ 0xDE45E)
        return (rng.floats(k * n), beta == 0 ? nil : rng.floats(m * n))
    }

    /// One measured row: check once on fresh outputs (C poisoned with NaN when beta == 0),
    /// then time.
    func measureRow(_ context: BenchContext, m: Int, k: Int, seed: UInt64, config: [String: ConfigValue], path: String,
                    flops: Double, bytes: Int, tolerance: Double, denseType: DType = .f32,
                    reference: (_ b: [Float], _ c: [Float]?) -> SparseReference.Output,
                    encode: @escaping (Stream, Tensor, Tensor) throws -> Void) throws -> ResultRow {
        let device = context.device
        var (bValues, cValues) = operands(m: m, k: k, seed: seed)
        bValues = bValues.map(denseType.rounded)  // what the device holds
        let b = try device.makeTensor(bValues, shape: [k, n], dtype: denseType)
        let c = try device.makeTensor(shape: [m, n], dtype: .f32)
        var check: (CheckResult, Double?) = (.skipped, nil)
        if measure.check {
            let stream = try device.makeStream()
            if let cValues { try c.write(floats: cValues) } else { try ShaderFill.encode(c.slice, value: Float.nan, on: stream) }
            try stream.barrier()
            try encode(stream, b, c)
            try stream.synchronize()
            let result = sparseCheck(reference(bValues, cValues), try c.readFloats(), tolerance: tolerance)
            check = (result.0, result.1)
        }
        let timing = try Timing.measure(device, warmup: measure.warmup, iterations: measure.iterations) { stream in
            try encode(stream, b, c)
        }
        let seconds = timing.medianMs * 1e-3
        let gbps = Double(bytes) / seconds / 1e9
        let copy = try CopyReference.gbps(context, bytes: bytes, warmup: 2, iterations: 5)
        if !measure.json {
            print("\(path): \(fixed(flops / seconds / 1e9, 3)) GFLOP/s, \(fixed(gbps, 2)) GB/s, median \(fixed(timing.medianMs, 3)) ms")
        }
        return ResultRow(op: "spmm", device: context.deviceName, config: config, path: path, timing: timing, gbps: gbps,
                         tflops: flops / seconds / 1e12, ratioToCopy: gbps / copy, check: check.0, maxRelError: check.1)
    }

    func runCSR(_ context: BenchContext, _ original: CSRArrays, source: [String: ConfigValue], seed: UInt64) throws -> [ResultRow] {
        let device = context.device
        var a = input.valueType == .f16 ? original.roundedToHalf() : original
        var matrix = try device.makeCSR(a, valueType: input.valueType)
        var rows: [ResultRow] = []
        if transpose {
            let (row, t) = try measureTranspose(context, matrix, a, source: source)
            rows.append(row)
            matrix = t
            a = SparseReference.transpose(a)
        }
        let kernels = kernel.csrKernels ?? []
        let columns = distinctColumns(a)
        for requested in kernels {
            let plan = try SpMMPlan(matrix, n: n, options: SpMMOptions(kernel: requested, validation: input.validation))
            if !measure.json {
                print("spmm: \(plan.statistics); validated on the \(plan.validatedOn); kernel \(plan.kernel) (\(plan.kernelForced ? "requested" : "chosen from the row statistics"))")
            }
            let valueBytes = input.valueType.byteSize
            let bytes = (a.rows + 1) * 4 + a.nnz * (4 + valueBytes) + columns * n * 4 + a.rows * n * 4 * (beta == 0 ? 1 : 2)
            var config = source.merging(statisticsConfig(plan.statistics))
            if transpose { config["transpose"] = .bool(true) }
            config = config.merging(["cols": .int(a.cols), "n": .int(n), "dtype": .string(input.dtype.rawValue), "format": .string("csr"),
                                     "kernel": .string(requested?.rawValue ?? "auto"), "validated_on": .string(plan.validatedOn.rawValue),
                                     "alpha": .double(Double(alpha)), "beta": .double(Double(beta))])
            let alpha = self.alpha, beta = self.beta
            rows.append(try measureRow(
                context, m: a.rows, k: a.cols, seed: seed, config: config, path: plan.path,
                flops: 2 * Double(a.nnz) * Double(n), bytes: bytes, tolerance: 1e-4,
                reference: { b, c0 in SparseReference.spmm(a, b: b, n: n, alpha: alpha, beta: beta, c0: c0) },
                encode: { stream, b, c in try plan.encode(b: b, c: c, alpha: alpha, beta: beta, on: stream) }))
        }
        return rows
    }

    /// Times the device transpose of `matrix` (GB/s: the structure and values read once and
    /// written once, plus the per-tile count table written, scanned and read); checks it
    /// exactly against the reference.
    func measureTranspose(_ context: BenchContext, _ matrix: CSRMatrix, _ a: CSRArrays,
                          source: [String: ConfigValue]) throws -> (ResultRow, CSRMatrix) {
        let device = context.device
        let stream = try device.makeStream()
        let (t, plan) = try CSRTranspose.encode(matrix, on: stream, validation: input.validation)
        try stream.synchronize()
        var check: (CheckResult, Double?) = (.skipped, nil)
        if measure.check {
            let same = try t.read() == SparseReference.transpose(a)
            check = (same ? .pass : .fail, same ? 0 : 1)
        }
        // Each run allocates its outputs: keep the runs few.
        let timing = try Timing.measure(device, warmup: 1, iterations: min(measure.iterations, 5)) { stream in
            _ = try CSRTranspose.encode(matrix, on: stream, validation: .host)
        }
        let entry = 4 + input.valueType.byteSize
        let bytes = 2 * (a.nnz * entry) + (a.rows + 1) * 4 + (a.cols + 1) * 4 + 4 * plan.tiles * a.cols * 4
        let gbps = Double(bytes) / (timing.medianMs * 1e6)
        let copy = try CopyReference.gbps(context, bytes: bytes, warmup: 2, iterations: 5)
        var config = source
        config = config.merging(["rows": .int(a.rows), "cols": .int(a.cols), "dtype": .string(input.dtype.rawValue)]) { $1 }
        if !measure.json { print("transpose: \(plan.tiles) row tiles, counts scanned by \(plan.scanAlgorithm.rawValue)") }
        return (ResultRow(op: "csr.transpose", device: context.deviceName, config: config,
                          path: "tiles\(plan.tiles)/\(plan.scanAlgorithm.rawValue)", timing: timing, gbps: gbps,
                          ratioToCopy: gbps / copy, check: check.0, maxRelError: check.1), t)
    }

    func runBSR(_ context: BenchContext, _ a: BSRArrays, source: [String: ConfigValue], seed: UInt64) throws -> [ResultRow] {
        let device = context.device
        let a = a.rounded(to: input.valueType)
        let matrix = try device.makeBSR(a, valueType: input.valueType)
        // --dtype f16 or bf16 makes both operands 16-bit (values and B), as a training user would.
        let denseType = input.valueType
        var kernels = kernel.bsrKernels ?? []
        for coop in [BSRKernel.cooperativeMatrix, .cooperativeMatrixNV] {
            if let reason = BSRSpMMPlan.cooperativeMatrixUnavailableReason(device: device, blockSize: a.blockSize, valueType: input.valueType,
                                                                         denseType: denseType, kernel: coop) {
                if !measure.json { print("spmm: \(coop) kernel unavailable: \(reason)") }
                if kernel == .all { kernels.removeAll { $0 == coop } }
            }
        }
        var rows: [ResultRow] = []
        for requested in kernels {
            let plan = try BSRSpMMPlan(matrix, n: n, options: BSRSpMMOptions(kernel: requested, validation: input.validation,
                                                                            denseType: requested == .cooperativeMatrixNV ? .f32 : denseType))
            if !measure.json {
                print("spmm: block-CSR \(a.blockRows)x\(a.blockCols) blocks of \(a.blockSize), \(plan.statistics) (blocks); kernel \(plan.path)")
            }
            let bytes = (a.blockRows + 1) * 4 + a.blockCount * 4 + a.storedValues * input.valueType.byteSize
                + a.cols * n * plan.denseType.byteSize + a.rows * n * 4 * (beta == 0 ? 1 : 2)
            var config = source.merging(["rows": .int(a.rows), "cols": .int(a.cols), "blocks": .int(a.blockCount),
                                         "block": .int(a.blockSize), "n": .int(n), "dtype": .string(input.dtype.rawValue),
                                         "dense_dtype": .string(plan.denseType.rawValue),
                                         "format": .string("bsr"), "kernel": .string(requested?.rawValue ?? "auto"),
                                         "alpha": .double(Double(alpha)), "beta": .double(Double(beta))])
            if let skipped = plan.cooperativeMatrixSkipped { config["coopmat_skipped"] = .string(skipped) }
            let alpha = self.alpha, beta = self.beta
            let roundsInputs = plan.kernel == .cooperativeMatrixNV
            rows.append(try measureRow(
                context, m: a.rows, k: a.cols, seed: seed, config: config, path: plan.path,
                flops: 2 * Double(a.storedValues) * Double(n), bytes: bytes, tolerance: 1e-4, denseType: plan.denseType,
                reference: { b, c0 in
                    // The NV cooperative-matrix kernel rounds A and B to f16.
                    SparseReference.bsrmm(roundsInputs ? a.roundedToHalf() : a, b: roundsInputs ? b.map { Float(Float16($0)) } : b, n: n,
                                          alpha: alpha, beta: beta, c0: c0)
                },
                encode: { stream, b, c in try plan.encode(b: b, c: c, alpha: alpha, beta: beta, on: stream) }))
        }
        return rows
    }
}
