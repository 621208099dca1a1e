/// A CSR sparse matrix [rows, cols] on a device: three tensors.
///
/// - `rowOffsets`: i32 [rows + 1]; row `r` owns nonzeros `rowOffsets[r] ..< rowOffsets[r + 1]`.
/// - `columnIndices`: i32 [max(nnz, 1)], the column of each nonzero.
/// - `values`: f32 or f16 [max(nnz, 1)].
/// (A matrix without nonzeros still binds one element, since a tensor is never empty.)
///
/// Building one checks shapes, element types and devices only; the structure (offsets,
/// indices) is checked by the op that uses it, before it dispatches anything (see
/// `SparseValidation`). The same three arrays read as CSC describe the transpose, so a
/// device-side transpose can return another `CSRMatrix` of shape [cols, rows].
public struct CSRMatrix: Sendable {
    /// Rows of the matrix.
    public let rows: Int
    /// Columns of the matrix.
    public let cols: Int
    /// Nonzeros stored.
    public let nnz: Int
    /// i32 [rows + 1].
    public let rowOffsets: Tensor
    /// i32 [max(nnz, 1)].
    public let columnIndices: Tensor
    /// f32 or f16 [max(nnz, 1)].
    public let values: Tensor

    /// The device holding the arrays.
    public var device: Device { rowOffsets.device }
    /// The values' element type.
    public var valueType: DType { values.dtype }

    /// A matrix over tensors already on the device (e.g. built by kernels).
    /// - Parameters:
    ///   - rows: Rows.
    ///   - cols: Columns.
    ///   - nnz: Nonzeros.
    ///   - rowOffsets: i32 [rows + 1].
    ///   - columnIndices: i32 [max(nnz, 1)] (or [0] with no nonzeros), on rowOffsets' device.
    ///   - values: f32 or f16 [max(nnz, 1)] (or [0] with no nonzeros), on the same device.
    /// - Throws: ``VkAttnError`` for sizes that are not positive or do not fit 32-bit indices, or a
    ///   tensor of the wrong shape, type or device.
    public init(rows: Int, cols: Int, nnz: Int, rowOffsets: Tensor, columnIndices: Tensor, values: Tensor) throws {
        let op = "sparse.csrMatrix"
        try SparseShape.check(op: op, rows: rows, cols: cols, nnz: nnz)
        try rowOffsets.expect(op: op, "row offsets", shape: [rows + 1], dtype: .i32)
        // No nonzeros: [1] (a placeholder element) or an empty [0] tensor.
        let arrayShape = nnz == 0 && columnIndices.shape == [0] ? [0] : [max(nnz, 1)]
        try columnIndices.expect(op: op, "column indices", shape: arrayShape, dtype: .i32, device: rowOffsets.device)
        try values.expect(op: op, "values", shape: nnz == 0 && values.shape == [0] ? [0] : [max(nnz, 1)], device: rowOffsets.device)
        guard values.dtype == .f32 || values.dtype == .f16 else {
            throw VkAttnError.dtypeMismatch(op: op, operand: "values", expected: "f32 or f16", actual: values.dtype.rawValue)
        }
        self.rows = rows
        self.cols = cols
        self.nnz = nnz
        self.rowOffsets = rowOffsets
        self.columnIndices = columnIndices
        self.values = values
    }

    /// Copies the matrix back to the host (values widened to Float).
    /// Call after the work that wrote the arrays has completed.
    /// - Returns: The host arrays.
    /// - Throws: The errors of reading the buffers.
    public func read() throws -> CSRArrays {
        let offsets = try rowOffsets.buffer.read(Int32.self, count: rows + 1, at: rowOffsets.slice.offset)
        let columns = nnz == 0 ? [] : try columnIndices.buffer.read(Int32.self, count: nnz, at: columnIndices.slice.offset)
        let values = nnz == 0 ? [] : Array(try self.values.readFloats().prefix(nnz))
        return CSRArrays(rows: rows, cols: cols, rowOffsets: offsets, columnIndices: columns, values: values)
    }
}

/// Uploading CSR matrices.
extension Device {
    /// Uploads `matrix` with values of `valueType` (f32 or f16), after checking its structure
    /// on the host (a malformed one throws `VkAttnError.malformedSparse` naming the first bad
    /// row; nothing is allocated).
    /// - Parameters:
    ///   - matrix: The host matrix.
    ///   - valueType: f32 or f16.
    /// - Returns: The matrix on this device, written and ready.
    /// - Throws: ``VkAttnError/malformedSparse(op:row:reason:)`` for a malformed structure;
    ///   ``VkAttnError`` for sizes beyond 32-bit indices, another value type, or a values array of
    ///   the wrong length.
    public func makeCSR(_ matrix: CSRArrays, valueType: DType = .f32) throws -> CSRMatrix {
        let op = "sparse.makeCSR"
        try SparseShape.check(op: op, rows: matrix.rows, cols: matrix.cols, nnz: matrix.nnz)
        guard valueType == .f32 || valueType == .f16 else {
            throw VkAttnError.dtypeMismatch(op: op, operand: "values", expected: "f32 or f16", actual: valueType.rawValue)
        }
        guard matrix.values.count == matrix.nnz else {
            throw VkAttnError.shapeMismatch(op: op, operand: "values", expected: "[\(matrix.nnz)]", actual: "[\(matrix.values.count)]")
        }
        try matrix.validate(op: op)
        let count = max(matrix.nnz, 1)
        let offsets = try makeTensor(shape: [matrix.rows + 1], dtype: .i32)
        try offsets.buffer.write(matrix.rowOffsets, at: offsets.slice.offset)
        let columns = try makeTensor(shape: [count], dtype: .i32)
        try columns.buffer.write(matrix.nnz == 0 ? [Int32(0)] : matrix.columnIndices, at: columns.slice.offset)
        let values = try makeTensor(matrix.nnz == 0 ? [0] : matrix.values, shape: [count], dtype: valueType)
        return try CSRMatrix(rows: matrix.rows, cols: matrix.cols, nnz: matrix.nnz,
                             rowOffsets: offsets, columnIndices: columns, values: values)
    }
}

/// Limits every sparse format shares: sizes that fit i32 indices.
enum SparseShape {
    static func check(op: String, rows: Int, cols: Int, nnz: Int) throws {
        // Zero rows or columns are legal (an empty matrix: row offsets [0], no nonzeros).
        guard rows >= 0 else { throw VkAttnError.invalidValue(op: op, operand: "rows", reason: "\(rows) is negative") }
        guard cols >= 0 else { throw VkAttnError.invalidValue(op: op, operand: "cols", reason: "\(cols) is negative") }
        guard nnz >= 0 else { throw VkAttnError.invalidValue(op: op, operand: "nnz", reason: "\(nnz) is negative") }
        guard nnz == 0 || (rows > 0 && cols > 0) else {
            throw VkAttnError.invalidValue(op: op, operand: "nnz", reason: "\(rows) x \(cols) has no entries for \(nnz) nonzeros")
        }
        let limit = Int(Int32.max) - 1
        for (name, value) in [("rows", rows), ("cols", cols), ("nnz", nnz)] where value > limit {
            throw VkAttnError.invalidValue(op: op, operand: name, reason: "\(value) does not fit 32-bit indices")
        }
    }
}
