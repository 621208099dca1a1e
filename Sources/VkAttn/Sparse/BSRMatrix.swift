/// A block-CSR sparse matrix on a device, square blocks of 16 or 32: the structure
/// block-sparse attention masks use. [blockRows * blockSize, blockCols * blockSize].
///
/// - `blockRowOffsets`: i32 [blockRows + 1].
/// - `blockColumnIndices`: i32 [max(blocks, 1)].
/// - `values`: f32, f16 or bf16 [max(blocks, 1), blockSize, blockSize], each block row-major.
///
/// Building one checks shapes, element types and devices; the block structure is checked by
/// the op before it dispatches.
public struct BSRMatrix: Sendable {
    /// The block sizes the kernels take.
    public static let supportedBlockSizes = [16, 32]

    /// Rows and columns of each block: 16 or 32.
    public let blockSize: Int
    /// Block rows.
    public let blockRows: Int
    /// Block columns.
    public let blockCols: Int
    /// Blocks stored.
    public let blockCount: Int
    /// i32 [blockRows + 1].
    public let blockRowOffsets: Tensor
    /// i32 [max(blockCount, 1)].
    public let blockColumnIndices: Tensor
    /// f32, f16 or bf16 [max(blockCount, 1), blockSize, blockSize].
    public let values: Tensor

    /// Rows of the matrix.
    public var rows: Int { blockRows * blockSize }
    /// Columns of the matrix.
    public var cols: Int { blockCols * blockSize }
    /// The device holding the arrays.
    public var device: Device { blockRowOffsets.device }
    /// The values' element type.
    public var valueType: DType { values.dtype }

    /// A matrix over tensors already on the device.
    /// - Parameters:
    ///   - blockSize: 16 or 32.
    ///   - blockRows: Block rows.
    ///   - blockCols: Block columns.
    ///   - blockCount: Blocks stored.
    ///   - blockRowOffsets: i32 [blockRows + 1].
    ///   - blockColumnIndices: i32 [max(blockCount, 1)] (or [0] with no blocks), on the same device.
    ///   - values: [max(blockCount, 1), blockSize, blockSize] (or [0, ...] with no blocks), f32,
    ///     f16 or bf16, on the same device.
    /// - Throws: ``VkAttnError`` for an unsupported block size, sizes beyond 32-bit indices, or a
    ///   tensor of the wrong shape, type or device.
    public init(blockSize: Int, blockRows: Int, blockCols: Int, blockCount: Int,
                blockRowOffsets: Tensor, blockColumnIndices: Tensor, values: Tensor) throws {
        let op = "sparse.bsrMatrix"
        try BSRMatrix.checkSizes(op: op, blockSize: blockSize, blockRows: blockRows, blockCols: blockCols, blockCount: blockCount)
        try blockRowOffsets.expect(op: op, "block row offsets", shape: [blockRows + 1], dtype: .i32)
        // No blocks: a placeholder block, or empty [0] and [0, blockSize, blockSize] tensors.
        let stored = blockCount == 0 && blockColumnIndices.shape == [0] ? 0 : max(blockCount, 1)
        try blockColumnIndices.expect(op: op, "block column indices", shape: [stored], dtype: .i32,
                                      device: blockRowOffsets.device)
        try values.expect(op: op, "values", shape: [blockCount == 0 && values.shape.first == 0 ? 0 : max(blockCount, 1), blockSize, blockSize],
                          device: blockRowOffsets.device)
        guard values.dtype == .f32 || values.dtype.isHalfWidth else {
            throw VkAttnError.dtypeMismatch(op: op, operand: "values", expected: "f32, f16 or bf16", actual: values.dtype.rawValue)
        }
        self.blockSize = blockSize
        self.blockRows = blockRows
        self.blockCols = blockCols
        self.blockCount = blockCount
        self.blockRowOffsets = blockRowOffsets
        self.blockColumnIndices = blockColumnIndices
        self.values = values
    }

    static func checkSizes(op: String, blockSize: Int, blockRows: Int, blockCols: Int, blockCount: Int) throws {
        guard supportedBlockSizes.contains(blockSize) else {
            throw VkAttnError.invalidValue(op: op, operand: "block size", reason: "\(blockSize) is not one of \(supportedBlockSizes)")
        }
        try SparseShape.check(op: op, rows: blockRows, cols: blockCols, nnz: blockCount)
        for (name, value) in [("rows", blockRows), ("cols", blockCols)] where value > (Int(Int32.max) - 1) / blockSize {
            throw VkAttnError.invalidValue(op: op, operand: name, reason: "\(value * blockSize) does not fit 32-bit indices")
        }
    }
}

/// Uploading block-CSR matrices.
extension Device {
    /// Uploads `matrix` with values of `valueType` (f32, f16 or bf16), after checking its block
    /// structure on the host.
    /// - Parameters:
    ///   - matrix: The host matrix (block size 16 or 32).
    ///   - valueType: f32, f16 or bf16.
    /// - Returns: The matrix on this device, written and ready.
    /// - Throws: ``VkAttnError/malformedSparse(op:row:reason:)`` for a malformed block structure;
    ///   ``VkAttnError`` for an unsupported block size or value type, sizes beyond 32-bit
    ///   indices, or a values array of the wrong length.
    public func makeBSR(_ matrix: BSRArrays, valueType: DType = .f32) throws -> BSRMatrix {
        let op = "sparse.makeBSR"
        try BSRMatrix.checkSizes(op: op, blockSize: matrix.blockSize, blockRows: matrix.blockRows,
                                 blockCols: matrix.blockCols, blockCount: matrix.blockCount)
        guard valueType == .f32 || valueType.isHalfWidth else {
            throw VkAttnError.dtypeMismatch(op: op, operand: "values", expected: "f32, f16 or bf16", actual: valueType.rawValue)
        }
        guard matrix.values.count == matrix.storedValues else {
            throw VkAttnError.shapeMismatch(op: op, operand: "values", expected: "[\(matrix.storedValues)]", actual: "[\(matrix.values.count)]")
        }
        try matrix.validate(op: op)
        let count = max(matrix.blockCount, 1)
        let bs = matrix.blockSize
        let offsets = try makeTensor(shape: [matrix.blockRows + 1], dtype: .i32)
        try offsets.buffer.write(matrix.blockRowOffsets, at: offsets.slice.offset)
        let columns = try makeTensor(shape: [count], dtype: .i32)
        try columns.buffer.write(matrix.blockCount == 0 ? [Int32(0)] : matrix.blockColumnIndices, at: columns.slice.offset)
        let stored = matrix.blockCount == 0 ? [Float](repeating: 0, count: bs * bs) : matrix.values
        let values = try makeTensor(stored, shape: [count, bs, bs], dtype: valueType)
        return try BSRMatrix(blockSize: bs, blockRows: matrix.blockRows, blockCols: matrix.blockCols,
                             blockCount: matrix.blockCount, blockRowOffsets: offsets, blockColumnIndices: columns,
                             values: values)
    }
}
