import Testing
import VkAttn
import TestSupport

@Suite("Sparse generators: deterministic, well-formed, shaped as named")
struct SparseGeneratorTests {
    @Test(arguments: SparseDistribution.allCases)
    func deterministicAndWellFormed(distribution: SparseDistribution) throws {
        let seed = testSeed()
        let a = SparseGenerator.csr(distribution, rows: 500, cols: 300, density: 0.04, emptyRowFraction: 0.1, seed: seed)
        let again = SparseGenerator.csr(distribution, rows: 500, cols: 300, density: 0.04, emptyRowFraction: 0.1, seed: seed)
        let other = SparseGenerator.csr(distribution, rows: 500, cols: 300, density: 0.04, emptyRowFraction: 0.1, seed: seed &+ 1)
        #expect(a == again, "seed \(seed)")
        #expect(a != other, "seed \(seed)")
        let stats = try a.validate(op: "generator")
        #expect(stats.emptyRows >= 20, "seed \(seed): \(stats)")
        for r in 0..<a.rows {
            let row = a.columnIndices[Int(a.rowOffsets[r])..<Int(a.rowOffsets[r + 1])]
            #expect(zip(row, row.dropFirst()).allSatisfy { $0 < $1 }, "row \(r) not strictly sorted, seed \(seed)")
        }
        let density = Double(a.nnz) / Double(a.rows * a.cols)
        #expect(density > 0.04 * 0.5 && density < 0.04 * 1.5, "\(distribution) density \(density), seed \(seed)")
        #expect(a.values.allSatisfy { (-1...1).contains($0) })
    }

    @Test func distributionsHaveTheirShapes() throws {
        let seed = testSeed()
        let uniform = RowStatistics(rowOffsets: SparseGenerator.csr(.uniform, rows: 2000, cols: 2000, density: 0.02, seed: seed).rowOffsets)
        let power = RowStatistics(rowOffsets: SparseGenerator.csr(.powerLaw, rows: 2000, cols: 2000, density: 0.02, seed: seed).rowOffsets)
        #expect(uniform.coefficientOfVariation < 0.4, "seed \(seed): \(uniform)")
        #expect(power.coefficientOfVariation > 1, "seed \(seed): \(power)")
        #expect(power.maxLength > 10 * Int(power.meanLength), "seed \(seed): \(power)")

        let banded = SparseGenerator.csr(.banded, rows: 100, cols: 100, density: 0.05, seed: seed)
        for r in 0..<banded.rows {
            for p in Int(banded.rowOffsets[r])..<Int(banded.rowOffsets[r + 1]) {
                #expect(abs(Int(banded.columnIndices[p]) - r) <= 3)
            }
        }
        let blocks = SparseGenerator.csr(.blockDiagonal, rows: 64, cols: 64, density: 0.125, seed: seed)
        #expect(blocks.nnz == 8 * 8 * 8)
        #expect(blocks.rowOffsets[9] - blocks.rowOffsets[8] == 8 && blocks.columnIndices[Int(blocks.rowOffsets[8])] == 8)

        let bsr = SparseGenerator.bsr(.uniform, blockSize: 16, blockRows: 10, blockCols: 12, density: 0.3, seed: seed)
        #expect(bsr.rows == 160 && bsr.cols == 192 && bsr.values.count == bsr.blockCount * 256)
        try bsr.validate(op: "generator")
    }
}
