import Testing
import VkAttn
import TestSupport

@Suite("SDDMM: sampled X * Y^T against the fp64 reference")
struct SDDMMTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var rows: Int
        var cols: Int
        var k: Int
        var distribution: SparseDistribution
        var density: Double
        var testDescription: String { "\(rows)x\(cols) k=\(k) \(distribution.rawValue) d=\(density)" }
    }

    static let cases: [Case] = [
        Case(rows: 1, cols: 1, k: 1, distribution: .uniform, density: 1),
        Case(rows: 45, cols: 31, k: 7, distribution: .uniform, density: 0.2),
        Case(rows: 128, cols: 200, k: 64, distribution: .powerLaw, density: 0.05),
        Case(rows: 77, cols: 77, k: 13, distribution: .banded, density: 0.1),
        Case(rows: 60, cols: 90, k: 36, distribution: .blockDiagonal, density: 0.2),
    ]

    func run(_ a: CSRArrays, k: Int, dtype: DType, scale: Bool, alpha: Float, seed: UInt64,
             validation: SparseValidation.Mode = .auto, sourceLocation: SourceLocation = #_sourceLocation) throws {
        var rng = SeededRandom(seed: seed ^ 0x5DD)
        let a = dtype == .f16 ? a.roundedToHalf() : a
        let x = rng.floats(a.rows * k)
        let y = rng.floats(a.cols * k)
        try withDevice { device in
            let plan = try SDDMMPlan(try device.makeCSR(a, valueType: dtype), k: k,
                                     options: SDDMMOptions(scaleByValues: scale, validation: validation))
            let out = try GuardedTensor(device, shape: [max(a.nnz, 1)], values: nil)
            let stream = try device.makeStream()
            try plan.encode(x: try device.makeTensor(x, shape: [a.rows, k]),
                            y: try device.makeTensor(y, shape: [a.cols, k]), out: out.tensor, alpha: alpha, on: stream)
            try stream.synchronize()
            let got = try out.read()
            let ref = SparseReference.sddmm(a, x: x, y: y, k: k, alpha: alpha, scaleByValues: scale)
            let error = ref.maxError(of: Array(got.prefix(a.nnz)))
            #expect(error <= 1e-5, "\(plan.path) error \(error) seed \(seed)", sourceLocation: sourceLocation)
            if a.nnz == 0 { #expect(got[0].isNaN, "wrote with no nonzeros", sourceLocation: sourceLocation) }
            #expect(try out.guardsIntact(), "wrote outside out, seed \(seed)", sourceLocation: sourceLocation)
        }
    }

    @Test(arguments: cases)
    func matchesReference(c: Case) throws {
        let seed = testSeed()
        let a = SparseGenerator.csr(c.distribution, rows: c.rows, cols: c.cols, density: c.density,
                                    emptyRowFraction: 0.15, seed: seed)
        try run(a, k: c.k, dtype: .f32, scale: false, alpha: 1, seed: seed)
        try run(a, k: c.k, dtype: .f32, scale: true, alpha: -0.25, seed: seed)
    }

    @Test(arguments: [1, 8, 19])
    func halfValuesScaleAndDenseRow(k: Int) throws {
        let seed = testSeed()
        let a = SparseFixtures.oneDenseRow(rows: 50, cols: 400, denseRow: 49, seed: seed)
        try run(a, k: k, dtype: .f16, scale: true, alpha: 3, seed: seed)
        try run(a, k: k, dtype: .f32, scale: false, alpha: 1, seed: seed, validation: .device)
    }

    @Test func patternWithoutNonzeros() throws {
        let seed = testSeed()
        let a = CSRArrays(rows: 5, cols: 3, rowOffsets: [0, 0, 0, 0, 0, 0], columnIndices: [], values: [])
        try run(a, k: 4, dtype: .f32, scale: true, alpha: 1, seed: seed)
    }

    @Test func badOperandsAreTypedErrors() throws {
        try withDevice { device in
            let plan = try SDDMMPlan(try device.makeCSR(SparseFixtures.small()), k: 3)
            #expect(plan.path == "nonzero-split/scalar")
            let stream = try device.makeStream()
            let x = try device.makeTensor(shape: [8, 3], dtype: .f32)
            let y = try device.makeTensor(shape: [6, 3], dtype: .f32)
            let out = try device.makeTensor(shape: [11], dtype: .f32)
            #expect(throws: VkAttnError.shapeMismatch(op: "sparse.sddmm", operand: "Y", expected: "[6, 3]", actual: "[8, 3]")) {
                try plan.encode(x: x, y: x, out: out, on: stream)
            }
            #expect(throws: VkAttnError.shapeMismatch(op: "sparse.sddmm", operand: "out", expected: "[11]", actual: "[3]")) {
                try plan.encode(x: x, y: y, out: try device.makeTensor(shape: [3], dtype: .f32), on: stream)
            }
            #expect(throws: VkAttnError.invalidValue(op: "sparse.sddmm", operand: "k", reason: "-1 is negative")) {
                _ = try SDDMMPlan(try device.makeCSR(SparseFixtures.small()), k: -1)
            }
            try stream.synchronize()
        }
    }
}
