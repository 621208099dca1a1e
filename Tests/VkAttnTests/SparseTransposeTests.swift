import Testing
import VkAttn
import TestSupport

@Suite("CSR transpose on the device")
struct SparseTransposeTests {
    /// Transposes `a` on the device and expects exactly the reference's arrays (the transpose is
    /// stable and deterministic), then multiplies with the transpose: A^T * B.
    func check(_ a: CSRArrays, dtype: DType = .f32, seed: UInt64, validation: SparseValidation.Mode = .auto,
               sourceLocation: SourceLocation = #_sourceLocation) throws {
        try withDevice { device in
            let matrix = try device.makeCSR(a, valueType: dtype)
            let stream = try device.makeStream()
            let (t, plan) = try CSRTranspose.encode(matrix, on: stream, validation: validation)
            try stream.synchronize()
            var expected = SparseReference.transpose(a)
            if dtype == .f16 { expected.values = expected.values.map { Float(Float16($0)) } }
            let got = try t.read()
            #expect(got == expected, "\(a.rows)x\(a.cols) nnz \(a.nnz) tiles \(plan.tiles) seed \(seed)", sourceLocation: sourceLocation)
            #expect(t.rows == a.cols && t.cols == a.rows && t.nnz == a.nnz)

            // A^T * B with the transpose, no host round trip.
            let n = 5
            var rng = SeededRandom(seed: seed)
            let b = rng.floats(a.rows * n)
            let bt = try device.makeTensor(b, shape: [a.rows, n])
            let c = try device.makeTensor(shape: [a.cols, n], dtype: .f32)
            let spmm = try SpMMPlan(t, n: n)
            try spmm.encode(b: bt, c: c, on: stream)
            try stream.synchronize()
            let reference = SparseReference.spmm(expected, b: b, n: n)
            let out = try c.readFloats()
            let worst = reference.maxError(of: out)
            #expect(worst <= 1e-5, "A^T B error \(worst) seed \(seed)", sourceLocation: sourceLocation)
        }
    }

    @Test(arguments: [SparseDistribution.uniform, .powerLaw, .banded, .blockDiagonal])
    func matchesTheStableReference(distribution: SparseDistribution) throws {
        let seed = testSeed()
        let a = SparseGenerator.csr(distribution, rows: 301, cols: 173, density: 0.05, emptyRowFraction: 0.2, seed: seed)
        try check(a, seed: seed)
    }

    @Test func awkwardShapes() throws {
        let seed = testSeed()
        try check(CSRArrays(rows: 1, cols: 1, rowOffsets: [0, 1], columnIndices: [0], values: [2.5]), seed: seed)
        try check(CSRArrays(rows: 3, cols: 4, rowOffsets: [0, 0, 0, 0], columnIndices: [], values: []), seed: seed)
        try check(SparseFixtures.oneDenseRow(rows: 40, cols: 97, denseRow: 17, seed: seed), seed: seed)
        // A column far longer than a subgroup's chunk, and a wide matrix (few tiles).
        let tall = CSRArrays(rows: 1000, cols: 2, rowOffsets: (0...1000).map { Int32($0) },
                             columnIndices: [Int32](repeating: 1, count: 1000), values: (0..<1000).map { Float($0) })
        try check(tall, seed: seed)
        try check(SparseGenerator.csr(.uniform, rows: 7, cols: 3000, density: 0.3, seed: seed), seed: seed)
    }

    @Test func duplicateColumnsKeepTheirOrder() throws {
        let seed = testSeed()
        let a = CSRArrays(rows: 3, cols: 5, rowOffsets: [0, 6, 6, 9],
                          columnIndices: [2, 2, 4, 2, 0, 4, 4, 4, 1], values: [1, 2, 3, 4, 5, 6, 7, 8, 9])
        try check(a, seed: seed)
    }

    @Test func halfPrecisionValuesAndDeviceValidation() throws {
        let seed = testSeed()
        let a = SparseGenerator.csr(.powerLaw, rows: 500, cols: 250, density: 0.04, emptyRowFraction: 0.1, seed: seed)
        try check(a, dtype: .f16, seed: seed)
        try check(a, seed: seed, validation: .device)
    }

    @Test func malformedInputIsRejectedBeforeAnything() throws {
        try withDevice { device in
            var bad = SparseFixtures.small()
            bad.columnIndices[4] = 9  // row 2 points past the 6 columns
            let matrix = try uploadUnchecked(device, bad)
            let stream = try device.makeStream()
            #expect(throws: VkAttnError.malformedSparse(op: "sparse.transpose", row: 2,
                                                        reason: "column index 9 at position 4 is outside 0..<6")) {
                _ = try CSRTranspose.encode(matrix, on: stream, validation: .host)
            }
            try stream.synchronize()
        }
    }
}
