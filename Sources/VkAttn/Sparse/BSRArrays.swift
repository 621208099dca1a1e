/// A block-CSR sparse matrix on the host: a CSR structure over square `blockSize` x
/// `blockSize` blocks, each stored dense. The matrix is [blockRows * blockSize,
/// blockCols * blockSize].
///
/// Layout: block row `i` holds blocks `blockRowOffsets[i] ..< blockRowOffsets[i + 1]`; block `b`
/// sits at block column `blockColumnIndices[b]` and its values are
/// `values[b * blockSize * blockSize ..< (b + 1) * blockSize * blockSize]`, row-major.
public struct BSRArrays: Sendable, Equatable {
    public var blockSize: Int
    public var blockRows: Int
    public var blockCols: Int
    public var blockRowOffsets: [Int32]
    public var blockColumnIndices: [Int32]
    public var values: [Float]

    public init(blockSize: Int, blockRows: Int, blockCols: Int, blockRowOffsets: [Int32],
                blockColumnIndices: [Int32], values: [Float]) {
        self.blockSize = blockSize
        self.blockRows = blockRows
        self.blockCols = blockCols
        self.blockRowOffsets = blockRowOffsets
        self.blockColumnIndices = blockColumnIndices
        self.values = values
    }

    public var rows: Int { blockRows * blockSize }
    public var cols: Int { blockCols * blockSize }
    /// Blocks stored.
    public var blockCount: Int { blockColumnIndices.count }
    /// Scalars stored (blocks x blockSize^2), zeros inside blocks included.
    public var storedValues: Int { blockCount * blockSize * blockSize }

    /// Dense blocks at the nonzero positions of `pattern` (a CSR of blockRows x blockCols,
    /// whose values are ignored), with values from `rng`.
    public init(blockSize: Int, pattern: CSRArrays, rng: inout SeededRandom) {
        self.init(blockSize: blockSize, blockRows: pattern.rows, blockCols: pattern.cols,
                  blockRowOffsets: pattern.rowOffsets, blockColumnIndices: pattern.columnIndices,
                  values: rng.floats(pattern.nnz * blockSize * blockSize))
    }

    /// The same matrix with every value rounded to f16 and back.
    public func roundedToHalf() -> BSRArrays {
        var copy = self
        copy.values = values.map { Float(Float16($0)) }
        return copy
    }

    /// Checks the block structure (block rows named in errors).
    @discardableResult
    public func validate(op: String) throws -> RowStatistics {
        try SparseValidation.check(op: op, rows: blockRows, cols: blockCols, nnz: blockCount,
                                   rowOffsets: blockRowOffsets, columnIndices: blockColumnIndices, unit: .blockRow)
    }
}
