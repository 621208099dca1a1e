import Testing
import VkAttn
import TestSupport

/// Whether this machine's default device runs the NV cooperative-matrix BSR kernel, and if
/// not, why (lavapipe: no cooperative-matrix shapes).
enum BSRCooperativeMatrixProbe {
    static let skipReason: String? = {
        guard let device = try? Device(validation: .off) else { return "no device" }
        return BSRSpMMPlan.cooperativeMatrixUnavailableReason(device: device, blockSize: 16, valueType: .f32, denseType: .f32,
                                                              kernel: .cooperativeMatrixNV)
    }()
    static var available: Bool { skipReason == nil }
}

@Suite("Block-CSR SpMM: scalar and cooperative-matrix kernels against the fp64 reference")
struct SparseBSRTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var blockSize: Int
        var blockRows: Int
        var blockCols: Int
        var n: Int
        var density: Double
        var testDescription: String { "bs\(blockSize) \(blockRows)x\(blockCols) blocks n=\(n) d=\(density)" }
    }

    static let cases: [Case] = [
        Case(blockSize: 16, blockRows: 1, blockCols: 1, n: 1, density: 1),
        Case(blockSize: 16, blockRows: 7, blockCols: 5, n: 7, density: 0.4),
        Case(blockSize: 32, blockRows: 5, blockCols: 9, n: 64, density: 0.3),
        Case(blockSize: 32, blockRows: 3, blockCols: 4, n: 100, density: 0.5),
        Case(blockSize: 16, blockRows: 11, blockCols: 3, n: 130, density: 0.6),
    ]

    func run(_ a: BSRArrays, n: Int, dtype: DType, denseType: DType = .f32, kernel: BSRKernel, alpha: Float, beta: Float, seed: UInt64,
             sourceLocation: SourceLocation = #_sourceLocation) throws {
        var rng = SeededRandom(seed: seed ^ 0xB5B)
        let a = a.rounded(to: dtype)
        var b = rng.floats(a.cols * n).map(denseType.rounded)
        let c0: [Float]? = beta == 0 ? nil : rng.floats(a.rows * n)
        try withDevice { device in
            let plan = try BSRSpMMPlan(try device.makeBSR(a, valueType: dtype), n: n,
                                       options: BSRSpMMOptions(kernel: kernel, denseType: denseType))
            #expect(plan.kernel == kernel, sourceLocation: sourceLocation)
            let bt = try device.makeTensor(b, shape: [a.cols, n], dtype: denseType)
            let c = try GuardedTensor(device, shape: [a.rows, n], values: c0, guardValue: beta == 0 ? .nan : 99)
            let stream = try device.makeStream()
            try plan.encode(b: bt, c: c.tensor, alpha: alpha, beta: beta, on: stream)
            try stream.synchronize()
            // The cooperative-matrix kernel rounds A and B to f16: compare with those inputs.
            if kernel == .cooperativeMatrixNV { b = b.map { Float(Float16($0)) } }
            let ref = SparseReference.bsrmm(kernel == .cooperativeMatrixNV ? a.roundedToHalf() : a, b: b, n: n,
                                            alpha: alpha, beta: beta, c0: c0)
            let error = ref.maxError(of: try c.read())
            #expect(error <= 1e-5, "\(plan.path) \(dtype) error \(error) seed \(seed)", sourceLocation: sourceLocation)
            #expect(try c.guardsIntact(), "\(plan.path) wrote outside C, seed \(seed)", sourceLocation: sourceLocation)
        }
    }

    @Test(arguments: cases, [DType.f32, .f16, .bf16])
    func scalarMatchesReference(c: Case, dtype: DType) throws {
        let seed = testSeed()
        let a = SparseGenerator.bsr(.uniform, blockSize: c.blockSize, blockRows: c.blockRows, blockCols: c.blockCols,
                                    density: c.density, emptyRowFraction: 0.2, seed: seed)
        try run(a, n: c.n, dtype: dtype, kernel: .scalar, alpha: 1, beta: 0, seed: seed)
        try run(a, n: c.n, dtype: dtype, kernel: .scalar, alpha: -0.5, beta: 1.5, seed: seed)
        try run(a, n: c.n, dtype: dtype, denseType: dtype == .f32 ? .f16 : dtype, kernel: .scalar, alpha: 0.75, beta: 0.5, seed: seed)
        if dtype == .f32 { try run(a, n: c.n, dtype: .f32, denseType: .bf16, kernel: .scalar, alpha: 1, beta: 0, seed: seed) }
    }

    @Test(.enabled(if: BSRCooperativeMatrixProbe.available,
                   Comment(rawValue: "cooperative-matrix path skipped: \(BSRCooperativeMatrixProbe.skipReason ?? "")")),
          arguments: cases, [DType.f32, .f16])
    func cooperativeMatrixMatchesReference(c: Case, dtype: DType) throws {
        let seed = testSeed()
        let a = SparseGenerator.bsr(.powerLaw, blockSize: c.blockSize, blockRows: c.blockRows, blockCols: c.blockCols,
                                    density: c.density, emptyRowFraction: 0.2, seed: seed)
        try run(a, n: c.n, dtype: dtype, kernel: .cooperativeMatrixNV, alpha: 2, beta: 0, seed: seed)
        try run(a, n: c.n, dtype: dtype, kernel: .cooperativeMatrixNV, alpha: 1, beta: -1, seed: seed)
    }

    @Test(arguments: [16, 32])
    func blockingACSRMatrixKeepsItsProduct(blockSize: Int) throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        let csr = SparseGenerator.csr(.powerLaw, rows: 70, cols: 45, density: 0.1, emptyRowFraction: 0.2, seed: seed)
        let bsr = BSRArrays(csr: csr, blockSize: blockSize)
        try bsr.validate(op: "test")
        #expect(bsr.rows >= 70 && bsr.rows < 70 + blockSize && bsr.cols >= 45 && bsr.cols < 45 + blockSize)
        let n = 5
        let b = rng.floats(bsr.cols * n)
        let viaBlocks = SparseReference.bsrmm(bsr, b: b, n: n)
        let direct = SparseReference.spmm(csr, b: Array(b.prefix(csr.cols * n)), n: n)
        let error = direct.maxError(of: Array(viaBlocks.expected.prefix(csr.rows * n)))
        #expect(error <= 1e-6, "seed \(seed)")
        #expect(viaBlocks.expected[(csr.rows * n)...].allSatisfy { $0 == 0 }, "padding rows, seed \(seed)")
    }

    @Test func choiceIsReported() throws {
        try withDevice { device in
            let a = SparseGenerator.bsr(.banded, blockSize: 32, blockRows: 4, blockCols: 4, density: 0.5, seed: 3)
            let matrix = try device.makeBSR(a)
            let auto = try BSRSpMMPlan(matrix, n: 32)
            // f32 operands are never narrowed behind the caller's back: automatic stays scalar, says why.
            #expect(auto.kernel == .scalar && auto.path == "bsr32-scalar" && auto.cooperativeMatrixSkipped?.contains("f16 values") == true)
            #expect(throws: VkAttnError.self) {
                _ = try BSRSpMMPlan(matrix, n: 32, options: BSRSpMMOptions(kernel: .cooperativeMatrix))
            }
            if let reason = BSRCooperativeMatrixProbe.skipReason {
                #expect(throws: VkAttnError.unsupported(op: "sparse.bsrSpmm", reason: "cooperative-matrix kernel: \(reason)")) {
                    _ = try BSRSpMMPlan(matrix, n: 32, options: BSRSpMMOptions(kernel: .cooperativeMatrixNV))
                }
            }
            let half = try BSRSpMMPlan(try device.makeBSR(a.roundedToHalf(), valueType: .f16), n: 32, options: BSRSpMMOptions(denseType: .f16))
            if let reason = BSRSpMMPlan.cooperativeMatrixUnavailableReason(device: device, blockSize: 32, valueType: .f16) {
                #expect(half.kernel == .scalar && half.cooperativeMatrixSkipped == reason)
            } else {
                #expect(half.kernel == .cooperativeMatrix && half.cooperativeMatrixShape != nil && half.path.hasPrefix("bsr32-coopmat-"))
            }
            let scalar = try BSRSpMMPlan(matrix, n: 32, options: BSRSpMMOptions(kernel: .scalar))
            #expect(scalar.kernel == .scalar && scalar.cooperativeMatrixSkipped != nil)
        }
    }

    @Test func staysInBoundsOnGarbage() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        let a = SparseGenerator.bsr(.uniform, blockSize: 16, blockRows: 6, blockCols: 5, density: 0.5, seed: seed)
        try withDevice { device in
            let matrix = try device.makeBSR(a)
            let plan = try BSRSpMMPlan(matrix, n: 20, options: BSRSpMMOptions(kernel: .scalar))
            try matrix.blockRowOffsets.buffer.write((0...a.blockRows).map { _ in Int32.random(in: Int32.min...Int32.max, using: &rng) },
                                                    at: matrix.blockRowOffsets.slice.offset)
            try matrix.blockColumnIndices.buffer.write((0..<max(a.blockCount, 1)).map { _ in Int32.random(in: -50...50, using: &rng) },
                                                       at: matrix.blockColumnIndices.slice.offset)
            let b = try device.makeTensor(rng.floats(a.cols * 20), shape: [a.cols, 20])
            let c = try GuardedTensor(device, shape: [a.rows, 20], values: rng.floats(a.rows * 20), guardValue: 5)
            let stream = try device.makeStream()
            try plan.encode(b: b, c: c.tensor, alpha: 1, beta: 1, on: stream)
            try stream.synchronize()
            #expect(try c.guardsIntact(), "seed \(seed)")
        }
    }

    @Test func badOperandsAreTypedErrors() throws {
        try withDevice { device in
            let a = SparseGenerator.bsr(.uniform, blockSize: 16, blockRows: 2, blockCols: 3, density: 0.5, seed: 9)
            let plan = try BSRSpMMPlan(try device.makeBSR(a), n: 8)
            let stream = try device.makeStream()
            let c = try device.makeTensor(shape: [32, 8], dtype: .f32)
            #expect(throws: VkAttnError.shapeMismatch(op: "sparse.bsrSpmm", operand: "B", expected: "[48, 8]", actual: "[32, 8]")) {
                try plan.encode(b: try device.makeTensor(shape: [32, 8], dtype: .f32), c: c, on: stream)
            }
            #expect(throws: VkAttnError.shapeMismatch(op: "sparse.makeBSR", operand: "values", expected: "[\(a.storedValues)]", actual: "[3]")) {
                var bad = a
                bad.values = [1, 2, 3]
                _ = try device.makeBSR(bad)
            }
            try stream.synchronize()
        }
    }

    /// Wrong B type for the plan: a typed error before recording.
    @Test func denseTypeIsChecked() throws {
        try withDevice { device in
            let a = SparseGenerator.bsr(.uniform, blockSize: 16, blockRows: 2, blockCols: 3, density: 0.5, seed: 9)
            let plan = try BSRSpMMPlan(try device.makeBSR(a), n: 8, options: BSRSpMMOptions(denseType: .f16))
            let stream = try device.makeStream()
            let c = try device.makeTensor(shape: [32, 8], dtype: .f32)
            #expect(throws: VkAttnError.dtypeMismatch(op: "sparse.bsrSpmm", operand: "B", expected: "f16", actual: "f32")) {
                try plan.encode(b: try device.makeTensor(shape: [48, 8], dtype: .f32), c: c, on: stream)
            }
            #expect(throws: VkAttnError.self) {
                _ = try BSRSpMMPlan(try device.makeBSR(a), n: 8, options: BSRSpMMOptions(denseType: .i32))
            }
            try stream.synchronize()
        }
    }
}

/// Block-CSR SpMM on KHR cooperative matrices (f16 values, f16 B, fp32 accumulation) against the
/// fp64 reference on the same 16-bit inputs.
@Suite("Block-CSR SpMM on cooperative matrices", .enabled(if: CooperativeMatrixProbe.shouldRun, CooperativeMatrixProbe.skipComment))
struct SparseBSRCoopmatTests {
    @Test(arguments: SparseBSRTests.cases)
    func matchesReference(c: SparseBSRTests.Case) throws {
        let seed = testSeed()
        try withDevice { device in try requireCooperativeMatrix(device) }
        let a = SparseGenerator.bsr(.powerLaw, blockSize: c.blockSize, blockRows: c.blockRows, blockCols: c.blockCols,
                                    density: c.density, emptyRowFraction: 0.2, seed: seed)
        let tests = SparseBSRTests()
        try tests.run(a, n: c.n, dtype: .f16, denseType: .f16, kernel: .cooperativeMatrix, alpha: 2, beta: 0, seed: seed)
        try tests.run(a, n: c.n, dtype: .f16, denseType: .f16, kernel: .cooperativeMatrix, alpha: 1, beta: -1, seed: seed)
    }
}
