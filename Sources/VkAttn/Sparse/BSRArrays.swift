/// A block-CSR sparse matrix on the host: a CSR structure over square `blockSize` x
/// `blockSize` blocks, each stored dense. The matrix is [blockRows * blockSize,
/// blockCols * blockSize].
///
/// Layout: block row `i` holds blocks `blockRowOffsets[i] ..< blockRowOffsets[i + 1]`; block `b`
/// sits at block column `blockColumnIndices[b]` and its values are
/// `values[b * blockSize * blockSize ..< (b + 1) * blockSize * blockSize]`, row-major.
public struct BSRArrays: Sendable, Equatable {
    /// Rows and columns of each block.
    public var blockSize: Int
    /// Block rows (rows / blockSize).
    public var blockRows: Int
    /// Block columns (cols / blockSize).
    public var blockCols: Int
    /// Where each block row's blocks start: blockRows + 1 entries, from 0 to the block count.
    public var blockRowOffsets: [Int32]
    /// The block column of each block, block row by block row.
    public var blockColumnIndices: [Int32]
    /// The blocks' values, blockSize x blockSize per block, each row-major.
    public var values: [Float]

    /// The matrix from its arrays, unchecked.
    /// - Parameters:
    ///   - blockSize: Rows and columns of each block.
    ///   - blockRows: Block rows.
    ///   - blockCols: Block columns.
    ///   - blockRowOffsets: blockRows + 1 offsets.
    ///   - blockColumnIndices: One block column per block.
    ///   - values: blockSize^2 values per block.
    public init(blockSize: Int, blockRows: Int, blockCols: Int, blockRowOffsets: [Int32],
                blockColumnIndices: [Int32], values: [Float]) {
        self.blockSize = blockSize
        self.blockRows = blockRows
        self.blockCols = blockCols
        self.blockRowOffsets = blockRowOffsets
        self.blockColumnIndices = blockColumnIndices
        self.values = values
    }

    /// Rows of the matrix.
    public var rows: Int { blockRows * blockSize }
    /// Columns of the matrix.
    public var cols: Int { blockCols * blockSize }
    /// Blocks stored.
    public var blockCount: Int { blockColumnIndices.count }
    /// Scalars stored (blocks x blockSize^2), zeros inside blocks included.
    public var storedValues: Int { blockCount * blockSize * blockSize }

    /// The blocks of a well-formed CSR matrix: every `blockSize` x `blockSize` block holding
    /// a nonzero becomes a dense block (zeros where the CSR has none). Rows and columns are
    /// padded with zeros up to multiples of `blockSize`.
    /// - Parameters:
    ///   - csr: A well-formed CSR matrix.
    ///   - bs: Rows and columns of each block.
    public init(csr: CSRArrays, blockSize bs: Int) {
        let blockRows = (csr.rows + bs - 1) / bs
        let blockCols = (csr.cols + bs - 1) / bs
        var offsets: [Int32] = [0]
        var columns: [Int32] = []
        var values: [Float] = []
        var slot = [Int](repeating: -1, count: blockCols)  // block column -> block index in this block row
        for br in 0..<blockRows {
            let rows = (br * bs)..<min(csr.rows, (br + 1) * bs)
            var touched = Set<Int>()
            for r in rows {
                for p in Int(csr.rowOffsets[r])..<Int(csr.rowOffsets[r + 1]) { touched.insert(Int(csr.columnIndices[p]) / bs) }
            }
            let first = columns.count
            for bc in touched.sorted() {
                slot[bc] = columns.count
                columns.append(Int32(bc))
            }
            values += [Float](repeating: 0, count: touched.count * bs * bs)
            for r in rows {
                for p in Int(csr.rowOffsets[r])..<Int(csr.rowOffsets[r + 1]) {
                    let c = Int(csr.columnIndices[p])
                    values[(slot[c / bs] * bs + r - br * bs) * bs + c % bs] += csr.values[p]
                }
            }
            for b in first..<columns.count { slot[Int(columns[b])] = -1 }
            offsets.append(Int32(columns.count))
        }
        self.init(blockSize: bs, blockRows: blockRows, blockCols: blockCols, blockRowOffsets: offsets,
                  blockColumnIndices: columns, values: values)
    }

    /// The same matrix with every value rounded to f16 and back.
    /// - Returns: A copy with f16-rounded values.
    public func roundedToHalf() -> BSRArrays { rounded(to: .f16) }

    /// The same matrix with every value rounded to `dtype` and back (what the device holds).
    /// - Parameter dtype: The device's value type.
    /// - Returns: A copy with rounded values.
    public func rounded(to dtype: DType) -> BSRArrays {
        var copy = self
        copy.values = values.map(dtype.rounded)
        return copy
    }

    /// Checks the block structure (block rows named in errors).
    /// - Parameter op: The op name errors carry.
    /// - Returns: Statistics of the blocks per block row.
    /// - Throws: ``VkAttnError/malformedSparse(op:row:reason:)`` naming the first bad block row;
    ///   ``VkAttnError/shapeMismatch(op:operand:expected:actual:)`` for an offsets or indices
    ///   array of the wrong length.
    @discardableResult
    public func validate(op: String) throws -> RowStatistics {
        try SparseValidation.check(op: op, rows: blockRows, cols: blockCols, nnz: blockCount,
                                   rowOffsets: blockRowOffsets, columnIndices: blockColumnIndices, unit: .blockRow)
    }
}
