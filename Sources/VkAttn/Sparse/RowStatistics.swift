/// Row-length statistics of a sparse matrix: what the SpMM plan decides its kernel from.
/// Computed from row offsets that passed validation (on the host, or on the device for large
/// matrices).
public struct RowStatistics: Sendable, Equatable, CustomStringConvertible {
    /// Rows (block rows for BSR).
    public var rows: Int
    /// Nonzeros (blocks for BSR).
    public var nnz: Int
    /// Longest row (nonzeros).
    public var maxLength: Int
    /// Rows without nonzeros.
    public var emptyRows: Int
    /// Standard deviation of the row lengths divided by their mean (0 for a matrix without
    /// nonzeros).
    public var coefficientOfVariation: Double

    /// Statistics computed elsewhere (the device's validation kernels).
    /// - Parameters:
    ///   - rows: Rows.
    ///   - nnz: Nonzeros.
    ///   - maxLength: The longest row's nonzeros.
    ///   - emptyRows: Rows without nonzeros.
    ///   - coefficientOfVariation: Standard deviation over mean of the row lengths.
    public init(rows: Int, nnz: Int, maxLength: Int, emptyRows: Int, coefficientOfVariation: Double) {
        self.rows = rows
        self.nnz = nnz
        self.maxLength = maxLength
        self.emptyRows = emptyRows
        self.coefficientOfVariation = coefficientOfVariation
    }

    /// Mean row length.
    public var meanLength: Double { rows > 0 ? Double(nnz) / Double(rows) : 0 }

    /// From well-formed row offsets (`rows + 1` entries).
    /// - Parameter rowOffsets: rows + 1 offsets, starting at 0 and never decreasing.
    public init(rowOffsets: [Int32]) {
        let rows = rowOffsets.count - 1
        let nnz = rows >= 0 ? Int(rowOffsets[rows]) : 0
        let mean = rows > 0 ? Double(nnz) / Double(rows) : 0
        var maxLength = 0, empty = 0
        var squares = 0.0
        for r in 0..<max(rows, 0) {
            let length = Int(rowOffsets[r + 1]) - Int(rowOffsets[r])
            maxLength = max(maxLength, length)
            if length == 0 { empty += 1 }
            let d = Double(length) - mean
            squares += d * d
        }
        self.init(rows: max(rows, 0), nnz: nnz, maxLength: maxLength, emptyRows: empty,
                  coefficientOfVariation: RowStatistics.cv(sumSquaredDeviations: squares, rows: rows, mean: mean))
    }

    static func cv(sumSquaredDeviations: Double, rows: Int, mean: Double) -> Double {
        guard rows > 0, mean > 0 else { return 0 }
        return (sumSquaredDeviations / Double(rows)).squareRoot() / mean
    }

    /// `rows R, nnz N, mean M, max X, cv C, empty E`.
    public var description: String {
        "rows \(rows), nnz \(nnz), mean \(formatted(meanLength)), max \(maxLength), cv \(formatted(coefficientOfVariation)), empty \(emptyRows)"
    }

    private func formatted(_ x: Double) -> String {
        let scaled = (x * 100).rounded() / 100
        return String(scaled)
    }
}
