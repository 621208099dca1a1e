import Testing
import VkAttn
import TestSupport

@Suite("CSR SpMM: row-split and merge-path against the fp64 reference")
struct SpMMTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var rows: Int
        var cols: Int
        var n: Int
        var distribution: SparseDistribution
        var density: Double
        var emptyRows: Double = 0.1
        var testDescription: String { "\(rows)x\(cols) n=\(n) \(distribution.rawValue) d=\(density)" }
    }

    static let cases: [Case] = [
        Case(rows: 1, cols: 1, n: 1, distribution: .uniform, density: 1, emptyRows: 0),
        Case(rows: 37, cols: 53, n: 1, distribution: .uniform, density: 0.2),
        Case(rows: 64, cols: 40, n: 7, distribution: .powerLaw, density: 0.1),
        Case(rows: 101, cols: 67, n: 13, distribution: .banded, density: 0.1),
        Case(rows: 131, cols: 257, n: 64, distribution: .powerLaw, density: 0.05),
        Case(rows: 97, cols: 89, n: 36, distribution: .blockDiagonal, density: 0.1),
        Case(rows: 211, cols: 61, n: 2, distribution: .uniform, density: 0.3),
        // Several passes over the nonzeros (more column vectors than one pass covers).
        Case(rows: 50, cols: 70, n: 150, distribution: .powerLaw, density: 0.1),
        Case(rows: 43, cols: 29, n: 132, distribution: .uniform, density: 0.2),
    ]

    static let tolerance = 1e-5

    /// Runs A * B (C poisoned with NaN, beta = 0) with the given kernel and value type.
    func check(_ a: CSRArrays, n: Int, kernel: SpMMKernel?, dtype: DType, alpha: Float = 1, beta: Float = 0,
               seed: UInt64, validation: SparseValidation.Mode = .host, sourceLocation: SourceLocation = #_sourceLocation) throws {
        var rng = SeededRandom(seed: seed ^ 0xB0B)
        let a = dtype == .f16 ? a.roundedToHalf() : a
        let b = rng.floats(a.cols * n)
        let c0: [Float]? = beta == 0 ? nil : rng.floats(a.rows * n)
        try withDevice { device in
            let matrix = try device.makeCSR(a, valueType: dtype)
            let plan = try SpMMPlan(matrix, n: n, options: SpMMOptions(kernel: kernel, validation: validation))
            if let kernel { #expect(plan.kernel == kernel, sourceLocation: sourceLocation) }
            let bt = try device.makeTensor(b, shape: [a.cols, n])
            let c = try GuardedTensor(device, shape: [a.rows, n], values: c0, guardValue: beta == 0 ? .nan : 12345)
            let stream = try device.makeStream()
            try plan.encode(b: bt, c: c.tensor, alpha: alpha, beta: beta, on: stream)
            try stream.synchronize()
            let reference = SparseReference.spmm(a, b: b, n: n, alpha: alpha, beta: beta, c0: c0)
            let error = reference.maxError(of: try c.read())
            #expect(error <= SpMMTests.tolerance, "\(plan.path) \(dtype) error \(error) seed \(seed)", sourceLocation: sourceLocation)
            #expect(try c.guardsIntact(), "\(plan.path) wrote outside C, seed \(seed)", sourceLocation: sourceLocation)
        }
    }

    @Test(arguments: cases, SpMMKernel.allCases)
    func matchesReference(c: Case, kernel: SpMMKernel) throws {
        let seed = testSeed()
        let a = SparseGenerator.csr(c.distribution, rows: c.rows, cols: c.cols, density: c.density,
                                    emptyRowFraction: c.emptyRows, seed: seed)
        try check(a, n: c.n, kernel: kernel, dtype: .f32, seed: seed)
    }

    @Test(arguments: SpMMKernel.allCases, [DType.f32, .f16])
    func alphaBetaAndHalfValues(kernel: SpMMKernel, dtype: DType) throws {
        let seed = testSeed()
        let a = SparseGenerator.csr(.powerLaw, rows: 150, cols: 90, density: 0.08, emptyRowFraction: 0.2, seed: seed)
        try check(a, n: 20, kernel: kernel, dtype: dtype, alpha: -1.5, beta: 0.75, seed: seed)
        try check(a, n: 5, kernel: kernel, dtype: dtype, alpha: 0.5, beta: 0, seed: seed)
    }

    @Test(arguments: SpMMKernel.allCases)
    func singleDenseRow(kernel: SpMMKernel) throws {
        let seed = testSeed()
        let a = SparseFixtures.oneDenseRow(rows: 120, cols: 700, denseRow: 57, seed: seed)
        try check(a, n: 12, kernel: kernel, dtype: .f32, seed: seed)
        try check(a, n: 3, kernel: kernel, dtype: .f32, alpha: 2, beta: -1, seed: seed)
    }

    @Test(arguments: SpMMKernel.allCases)
    func matrixWithoutNonzeros(kernel: SpMMKernel) throws {
        let seed = testSeed()
        let a = CSRArrays(rows: 9, cols: 4, rowOffsets: [Int32](repeating: 0, count: 10), columnIndices: [], values: [])
        try check(a, n: 8, kernel: kernel, dtype: .f32, seed: seed)
        try check(a, n: 3, kernel: kernel, dtype: .f32, beta: 2, seed: seed)
    }

    @Test func deviceValidationGivesTheHostStatistics() throws {
        let seed = testSeed()
        let a = SparseGenerator.csr(.powerLaw, rows: 3000, cols: 500, density: 0.02, emptyRowFraction: 0.1, seed: seed)
        let host = RowStatistics(rowOffsets: a.rowOffsets)
        try withDevice { device in
            let matrix = try device.makeCSR(a)
            let plan = try SpMMPlan(matrix, n: 4, options: SpMMOptions(validation: .device))
            #expect(plan.validatedOn == .device)
            let s = plan.statistics
            #expect(s.rows == host.rows && s.nnz == host.nnz && s.maxLength == host.maxLength && s.emptyRows == host.emptyRows,
                    "seed \(seed): \(s) vs \(host)")
            #expect(abs(s.coefficientOfVariation - host.coefficientOfVariation) <= 1e-3 * host.coefficientOfVariation,
                    "seed \(seed): \(s) vs \(host)")
        }
        try check(a, n: 8, kernel: nil, dtype: .f32, seed: seed, validation: .device)
    }

    @Test func statisticsChooseTheKernel() throws {
        let seed = testSeed()
        let uniform = SparseGenerator.csr(.uniform, rows: 400, cols: 400, density: 0.05, seed: seed)
        let skewed = SparseGenerator.csr(.powerLaw, rows: 400, cols: 4000, density: 0.01, seed: seed)
        let banded = SparseGenerator.csr(.banded, rows: 400, cols: 400, density: 0.02, seed: seed)
        try withDevice { device in
            let u = try SpMMPlan(try device.makeCSR(uniform), n: 8)
            let p = try SpMMPlan(try device.makeCSR(skewed), n: 8)
            let b = try SpMMPlan(try device.makeCSR(banded), n: 8)
            #expect(u.kernel == .rowSplit && !u.kernelForced, "seed \(seed) \(u.statistics)")
            #expect(p.kernel == .mergePath && !p.kernelForced, "seed \(seed) \(p.statistics)")
            #expect(b.kernel == .rowSplit, "seed \(seed) \(b.statistics)")
            #expect(p.statistics.coefficientOfVariation > SpMMKernel.skewedVariation)
            #expect(u.path == "row-split/vec4" && p.path == "merge-path/vec4")
            let forced = try SpMMPlan(try device.makeCSR(uniform), n: 3, options: SpMMOptions(kernel: .mergePath))
            #expect(forced.kernel == .mergePath && forced.kernelForced && forced.path == "merge-path/scalar")
        }
    }

    @Test func mergePathIsDeterministic() throws {
        let seed = testSeed()
        let a = SparseFixtures.oneDenseRow(rows: 64, cols: 3000, denseRow: 5, seed: seed)
        try withDevice { device in
            let plan = try SpMMPlan(try device.makeCSR(a), n: 9, options: SpMMOptions(kernel: .mergePath))
            #expect(plan.segments > 4, "the dense row should span segments")
            var rng = SeededRandom(seed: seed)
            let b = try device.makeTensor(rng.floats(a.cols * 9), shape: [a.cols, 9])
            var results: [[UInt32]] = []
            for _ in 0..<3 {
                let c = try device.makeTensor(shape: [a.rows, 9], dtype: .f32)
                let stream = try device.makeStream()
                try ShaderFill.encode(c.slice, value: Float.nan, on: stream)
                try stream.barrier()
                try plan.encode(b: b, c: c, alpha: 1, beta: 0, on: stream)
                try stream.synchronize()
                results.append(try c.buffer.read(UInt32.self, count: a.rows * 9))
            }
            #expect(results[0] == results[1] && results[1] == results[2], "seed \(seed)")
        }
    }

    @Test func badOperandsAreTypedErrors() throws {
        try withDevice { device in
            let matrix = try device.makeCSR(SparseFixtures.small())
            #expect(throws: VkAttnError.invalidValue(op: "sparse.spmm", operand: "n", reason: "-1 is negative")) {
                _ = try SpMMPlan(matrix, n: -1)
            }
            let plan = try SpMMPlan(matrix, n: 4)
            let stream = try device.makeStream()
            let b = try device.makeTensor(shape: [6, 4], dtype: .f32)
            let c = try device.makeTensor(shape: [8, 4], dtype: .f32)
            #expect(throws: VkAttnError.shapeMismatch(op: "sparse.spmm", operand: "B", expected: "[6, 4]", actual: "[5, 4]")) {
                try plan.encode(b: try device.makeTensor(shape: [5, 4], dtype: .f32), c: c, on: stream)
            }
            #expect(throws: VkAttnError.shapeMismatch(op: "sparse.spmm", operand: "C", expected: "[8, 4]", actual: "[8, 5]")) {
                try plan.encode(b: b, c: try device.makeTensor(shape: [8, 5], dtype: .f32), on: stream)
            }
            #expect(throws: VkAttnError.dtypeMismatch(op: "sparse.spmm", operand: "C", expected: "f32", actual: "f16")) {
                try plan.encode(b: b, c: try device.makeTensor(shape: [8, 4], dtype: .f16), on: stream)
            }
            #expect(throws: VkAttnError.self) { try plan.encode(b: b, c: c, alpha: .nan, on: stream) }
            #expect(throws: VkAttnError.self) { try plan.encode(b: b, c: c, beta: .infinity, on: stream) }
            let offsets = try device.makeTensor(shape: [9], dtype: .i32)
            let columns = try device.makeTensor(shape: [11], dtype: .i32)
            #expect(throws: VkAttnError.dtypeMismatch(op: "sparse.csrMatrix", operand: "values", expected: "f32 or f16", actual: "i32")) {
                _ = try CSRMatrix(rows: 8, cols: 6, nnz: 11, rowOffsets: offsets, columnIndices: columns, values: columns)
            }
            #expect(throws: VkAttnError.shapeMismatch(op: "sparse.csrMatrix", operand: "column indices", expected: "[12]", actual: "[11]")) {
                _ = try CSRMatrix(rows: 8, cols: 6, nnz: 12, rowOffsets: offsets, columnIndices: columns, values: b)
            }
            try stream.synchronize()
        }
    }
}
