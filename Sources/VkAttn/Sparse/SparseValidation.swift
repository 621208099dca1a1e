/// Structural checks of compressed-row sparse matrices (CSR, and BSR at block granularity).
///
/// Row `r` (of `rows`, with `nnz` nonzeros and `cols` columns) is malformed when
/// - `r == 0` and `rowOffsets[0] != 0` (offsets start at 0),
/// - `rowOffsets[r + 1] < rowOffsets[r]` (offsets never decrease),
/// - `rowOffsets[r + 1] > nnz`, or `r` is the last row and `rowOffsets[rows] != nnz`
///   (offsets end at nnz),
/// - or, its offsets being fine, one of its column indices is outside `0 ..< cols`.
/// The error names the first malformed row: `VkAttnError.malformedSparse(op:row:reason:)`.
/// The host check and the device check (`SparseDeviceValidation`) report the same row and
/// the same reason.
public enum SparseValidation {
    /// What a "row" of the structure is, for messages.
    public enum Unit: String, Sendable {
        /// A matrix row (CSR).
        case row
        /// A block row (BSR).
        case blockRow = "block row"
    }

    /// Where a plan validated its matrix.
    public enum Mode: String, Sendable, Hashable, CaseIterable {
        /// On the device when rows + nnz reaches `deviceThreshold` (and the device has subgroup
        /// arithmetic), else on the host. `validatedOn` of the plan says which.
        case auto
        /// Reads the structure back and checks it on the host.
        case host
        /// Runs the validation kernels (first bad row by atomicMin, row statistics).
        case device
    }

    /// Where a plan's validation ran (reported by the plans and the bench).
    public enum Site: String, Sendable, Hashable { case host, device }

    /// Rows + nnz from which `.auto` validates on the device.
    public static let deviceThreshold = 1 << 20

    /// Checks the whole structure; returns the row statistics when it is well-formed.
    /// - Parameters:
    ///   - op: The op name errors carry.
    ///   - rows: Rows (block rows for BSR).
    ///   - cols: Columns (block columns for BSR).
    ///   - nnz: Nonzeros (blocks for BSR).
    ///   - rowOffsets: rows + 1 offsets.
    ///   - columnIndices: At least nnz column indices.
    ///   - unit: What a row is called in messages.
    /// - Returns: The row statistics.
    /// - Throws: ``VkAttnError/shapeMismatch(op:operand:expected:actual:)`` for arrays of the
    ///   wrong length, ``VkAttnError/malformedSparse(op:row:reason:)`` naming the first bad row.
    @discardableResult
    public static func check(op: String, rows: Int, cols: Int, nnz: Int, rowOffsets: [Int32],
                             columnIndices: [Int32], unit: Unit = .row) throws -> RowStatistics {
        guard rowOffsets.count == rows + 1 else {
            throw VkAttnError.shapeMismatch(op: op, operand: "row offsets", expected: "[\(rows + 1)]", actual: "[\(rowOffsets.count)]")
        }
        guard columnIndices.count >= nnz else {
            throw VkAttnError.shapeMismatch(op: op, operand: "column indices", expected: "[\(nnz)]", actual: "[\(columnIndices.count)]")
        }
        if rows == 0 && (rowOffsets != [0] || nnz != 0) {
            throw VkAttnError.invalidValue(op: op, operand: unit == .row ? "row offsets" : "block row offsets",
                                           reason: "a matrix with no rows has offsets [0] and nnz 0, got \(rowOffsets) and nnz \(nnz)")
        }
        for r in 0..<rows {
            if let reason = offsetProblem(row: r, rows: rows, nnz: nnz, start: rowOffsets[r], end: rowOffsets[r + 1], unit: unit) {
                throw VkAttnError.malformedSparse(op: op, row: r, reason: reason)
            }
            let start = Int(rowOffsets[r]), end = Int(rowOffsets[r + 1])
            if let reason = columnProblem(columns: columnIndices[start..<end], firstPosition: start, cols: cols, unit: unit) {
                throw VkAttnError.malformedSparse(op: op, row: r, reason: reason)
            }
        }
        return RowStatistics(rowOffsets: rowOffsets)
    }

    /// Why the offsets of row `row` (`start`, `end`) are malformed, or nil.
    static func offsetProblem(row: Int, rows: Int, nnz: Int, start: Int32, end: Int32, unit: Unit) -> String? {
        let name = unit == .row ? "row offsets" : "block row offsets"
        if row == 0 && start != 0 {
            return "\(name) start at \(start), expected 0"
        }
        if end < start {
            return "\(name) decrease: offsets[\(row + 1)] = \(end) < offsets[\(row)] = \(start)"
        }
        if Int(end) > nnz {
            return "\(unit.rawValue) ends at offsets[\(row + 1)] = \(end), past nnz = \(nnz)"
        }
        if row == rows - 1 && Int(end) != nnz {
            return "\(name) end at \(end), expected nnz = \(nnz)"
        }
        return nil
    }

    /// Why a row's column indices are malformed, or nil.
    static func columnProblem(columns: ArraySlice<Int32>, firstPosition: Int, cols: Int, unit: Unit) -> String? {
        for (i, c) in columns.enumerated() where c < 0 || Int(c) >= cols {
            let what = unit == .row ? "column index" : "block column index"
            return "\(what) \(c) at position \(firstPosition + i) is outside 0..<\(cols)"
        }
        return nil
    }
}
