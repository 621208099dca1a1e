import VkAttn
/// Row-length distributions of generated sparse matrices.
public enum SparseDistribution: String, Sendable, Hashable, CaseIterable {
    /// Every entry present with probability `density` (row lengths binomial, CV small).
    case uniform
    /// Row lengths from a Pareto law (shape 1.2), scaled to the density and capped at the
    /// column count: a few very long rows, many short ones (CV well above 1).
    case powerLaw = "power-law"
    /// A dense band around the (scaled) diagonal, `density * cols` wide.
    case banded
    /// Dense square-ish blocks along the diagonal, `density * rows` rows each.
    case blockDiagonal = "block-diagonal"
}

/// Deterministic random sparse matrices for tests and the bench: the same arguments and seed
/// give the same matrix on every machine. Values are uniform in [-1, 1].
public enum SparseGenerator {
    /// A [rows, cols] CSR matrix with about `density * rows * cols` nonzeros, sorted columns,
    /// and each row emptied with probability `emptyRowFraction`.
    /// - Parameters:
    ///   - distribution: How row lengths are drawn.
    ///   - rows: Rows.
    ///   - cols: Columns.
    ///   - density: The fraction of entries present, clamped to 0...1.
    ///   - emptyRowFraction: The probability that a row is emptied.
    ///   - seed: The generator's seed.
    /// - Returns: The matrix, well-formed.
    public static func csr(_ distribution: SparseDistribution, rows: Int, cols: Int, density: Double,
                           emptyRowFraction: Double = 0, seed: UInt64) -> CSRArrays {
        var rng = SeededRandom(seed: seed)
        let density = min(max(density, 0), 1)
        var offsets = [Int32](repeating: 0, count: rows + 1)
        var columns: [Int32] = []
        columns.reserveCapacity(Int(Double(rows) * Double(cols) * density * 1.1) + 16)

        // Per-row column ranges or probabilities, by distribution.
        var probabilities: [Double] = []
        switch distribution {
        case .uniform:
            probabilities = [Double](repeating: density, count: rows)
        case .powerLaw:
            probabilities = powerLawProbabilities(rows: rows, cols: cols, density: density, rng: &rng)
        case .banded, .blockDiagonal:
            break
        }
        let halfBand = max(0, Int(((density * Double(cols) - 1) / 2).rounded()))
        let blockRows = max(1, Int((density * Double(rows)).rounded()))

        for r in 0..<rows {
            let empty = emptyRowFraction > 0 && Double.random(in: 0..<1, using: &rng) < emptyRowFraction
            if !empty && density > 0 {
                switch distribution {
                case .uniform, .powerLaw:
                    appendBernoulli(probability: probabilities[r], cols: cols, into: &columns, rng: &rng)
                case .banded:
                    let center = Int(Double(r) * Double(cols) / Double(rows))
                    for c in max(0, center - halfBand)...min(cols - 1, center + halfBand) { columns.append(Int32(c)) }
                case .blockDiagonal:
                    let block = r / blockRows
                    let first = block * blockRows * cols / rows
                    let last = min(cols, max(first + 1, min(rows, (block + 1) * blockRows) * cols / rows))
                    for c in first..<last { columns.append(Int32(c)) }
                }
            }
            offsets[r + 1] = Int32(columns.count)
        }
        let values = rng.floats(columns.count)
        return CSRArrays(rows: rows, cols: cols, rowOffsets: offsets, columnIndices: columns, values: values)
    }

    /// A block-CSR matrix whose blocks follow `distribution` at block granularity
    /// (`blockRows` x `blockCols` blocks, block density `density`), each block dense.
    /// - Parameters:
    ///   - distribution: How block-row lengths are drawn.
    ///   - blockSize: Rows and columns of each block.
    ///   - blockRows: Block rows.
    ///   - blockCols: Block columns.
    ///   - density: The fraction of blocks present.
    ///   - emptyRowFraction: The probability that a block row is emptied.
    ///   - seed: The generator's seed.
    /// - Returns: The matrix, well-formed.
    public static func bsr(_ distribution: SparseDistribution, blockSize: Int, blockRows: Int, blockCols: Int,
                           density: Double, emptyRowFraction: Double = 0, seed: UInt64) -> BSRArrays {
        let pattern = csr(distribution, rows: blockRows, cols: blockCols, density: density,
                          emptyRowFraction: emptyRowFraction, seed: seed)
        var rng = SeededRandom(seed: seed ^ 0x5DEE_CE66_D1CE_4E5B)
        return BSRArrays(blockSize: blockSize, pattern: pattern, rng: &rng)
    }

    /// Appends the columns of one row where each column is present with probability `p`,
    /// walking geometric gaps (O(row length), columns come out sorted).
    static func appendBernoulli(probability p: Double, cols: Int, into columns: inout [Int32], rng: inout SeededRandom) {
        guard p > 0 else { return }
        if p >= 1 {
            for c in 0..<cols { columns.append(Int32(c)) }
            return
        }
        let logQ = log1p(-p)
        var c = -1
        while true {
            let u = Double.random(in: Double.leastNonzeroMagnitude..<1, using: &rng)
            let gap = (log(u) / logQ).rounded(.down)
            guard gap < Double(cols) else { return }
            c += 1 + Int(gap)
            guard c < cols else { return }
            columns.append(Int32(c))
        }
    }

    /// Pareto(1.2) row weights scaled so that the expected lengths, capped at `cols`, sum to
    /// `density * rows * cols`; returned as per-row probabilities.
    static func powerLawProbabilities(rows: Int, cols: Int, density: Double, rng: inout SeededRandom) -> [Double] {
        let shape = 1.2
        let weights = (0..<rows).map { _ in pow(1 - Double.random(in: 0..<1, using: &rng), -1 / shape) }
        let target = density * Double(rows) * Double(cols)
        var scale = target / max(weights.reduce(0, +), 1e-300)
        for _ in 0..<20 {
            let total = weights.reduce(0) { $0 + min($1 * scale, Double(cols)) }
            guard total > 0, abs(total - target) > 1e-6 * target else { break }
            scale *= target / total
        }
        return weights.map { min($0 * scale / Double(cols), 1) }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Random block values over a given block structure.
extension BSRArrays {
    /// Dense blocks at the nonzero positions of `pattern` (a CSR of blockRows x blockCols,
    /// whose values are ignored), with values from `rng`.
    /// - Parameters:
    ///   - blockSize: Rows and columns of each block.
    ///   - pattern: The block structure.
    ///   - rng: The generator the values come from (uniform in [-1, 1]).
    public init(blockSize: Int, pattern: CSRArrays, rng: inout SeededRandom) {
        self.init(blockSize: blockSize, blockRows: pattern.rows, blockCols: pattern.cols,
                  blockRowOffsets: pattern.rowOffsets, blockColumnIndices: pattern.columnIndices,
                  values: rng.floats(pattern.nnz * blockSize * blockSize))
    }
}
