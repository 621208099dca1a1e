/// A sparse matrix in compressed sparse row form, on the host: what generators and the Matrix
/// Market reader produce, what the CPU references read, and what `Device.makeCSR` uploads.
///
/// Layout: row `r` holds the nonzeros at positions `rowOffsets[r] ..< rowOffsets[r + 1]` of
/// `columnIndices` (column of each nonzero) and `values`. `rowOffsets` has `rows + 1` entries.
/// The arrays are not checked when built; `validate(op:)` checks them (see `SparseValidation`).
public struct CSRArrays: Sendable, Equatable {
    /// Rows of the matrix.
    public var rows: Int
    /// Columns of the matrix.
    public var cols: Int
    /// Where each row's nonzeros start: rows + 1 entries, from 0 to nnz.
    public var rowOffsets: [Int32]
    /// The column of each nonzero, row by row.
    public var columnIndices: [Int32]
    /// The value of each nonzero, in the order of ``columnIndices``.
    public var values: [Float]

    /// The matrix from its arrays, unchecked.
    /// - Parameters:
    ///   - rows: Rows.
    ///   - cols: Columns.
    ///   - rowOffsets: rows + 1 offsets.
    ///   - columnIndices: One column per nonzero.
    ///   - values: One value per nonzero.
    public init(rows: Int, cols: Int, rowOffsets: [Int32], columnIndices: [Int32], values: [Float]) {
        self.rows = rows
        self.cols = cols
        self.rowOffsets = rowOffsets
        self.columnIndices = columnIndices
        self.values = values
    }

    /// Nonzeros stored.
    public var nnz: Int { columnIndices.count }

    /// Builds the CSR form of coordinate triplets (any order); duplicates are summed, columns
    /// sorted within each row. Indices must already be in range (the caller checked them).
    /// - Parameters:
    ///   - rows: Rows.
    ///   - cols: Columns.
    ///   - triplets: (row, column, value) of each entry.
    public init(rows: Int, cols: Int, triplets: [(row: Int, col: Int, value: Float)]) {
        let sorted = triplets.sorted { ($0.row, $0.col) < ($1.row, $1.col) }
        var offsets = [Int32](repeating: 0, count: rows + 1)
        var columns: [Int32] = []
        var values: [Float] = []
        columns.reserveCapacity(sorted.count)
        values.reserveCapacity(sorted.count)
        var last: (row: Int, col: Int)? = nil
        for t in sorted {
            if let last, last.row == t.row, last.col == t.col {
                values[values.count - 1] += t.value
                continue
            }
            columns.append(Int32(t.col))
            values.append(t.value)
            offsets[t.row + 1] += 1
            last = (t.row, t.col)
        }
        for r in 0..<rows { offsets[r + 1] += offsets[r] }
        self.init(rows: rows, cols: cols, rowOffsets: offsets, columnIndices: columns, values: values)
    }

    /// Number of nonzeros of row `r`.
    /// - Parameter r: A row index.
    /// - Returns: `rowOffsets[r + 1] - rowOffsets[r]`.
    public func rowLength(_ r: Int) -> Int { Int(rowOffsets[r + 1] - rowOffsets[r]) }

    /// The same matrix with every value rounded to f16 and back: what an f16 upload holds, so
    /// that a reference computed from it matches the device's inputs exactly.
    /// - Returns: A copy with f16-rounded values.
    public func roundedToHalf() -> CSRArrays {
        var copy = self
        copy.values = values.map { Float(Float16($0)) }
        return copy
    }

    /// Checks the structure (see `SparseValidation.check`) and returns the row statistics.
    /// - Parameter op: The op name errors carry.
    /// - Returns: The row-length statistics SpMM chooses its kernel from.
    /// - Throws: ``VkAttnError/malformedSparse(op:row:reason:)`` naming the first bad row;
    ///   ``VkAttnError/shapeMismatch(op:operand:expected:actual:)`` for an offsets or indices
    ///   array of the wrong length.
    @discardableResult
    public func validate(op: String) throws -> RowStatistics {
        try SparseValidation.check(op: op, rows: rows, cols: cols, nnz: nnz, rowOffsets: rowOffsets,
                                   columnIndices: columnIndices, unit: .row)
    }
}
