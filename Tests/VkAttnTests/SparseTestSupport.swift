// Helpers of the sparse test suites: dense operands inside guarded buffers, and hand-made
// matrices.
import Testing
import VkAttn
import TestSupport

/// A dense f32 tensor in the middle of a buffer whose guard words on both sides must survive.
struct GuardedTensor {
    static let guardWords = 64  // 256 bytes: a multiple of every storage offset alignment we meet

    let buffer: Buffer
    let tensor: Tensor
    let count: Int
    let guardValue: Float

    /// `values` (or NaN everywhere when nil) inside guards holding `guardValue`.
    init(_ device: Device, shape: [Int], values: [Float]?, guardValue: Float = .nan) throws {
        count = shape.reduce(1, *)
        let g = GuardedTensor.guardWords
        let guards = [Float](repeating: guardValue, count: g)
        buffer = try device.makeBuffer(guards + (values ?? [Float](repeating: .nan, count: count)) + guards)
        tensor = try Tensor(buffer, shape: shape, dtype: .f32, byteOffset: g * 4)
        self.guardValue = guardValue
    }

    func read() throws -> [Float] {
        try buffer.read(Float.self, count: count, at: GuardedTensor.guardWords * 4)
    }

    /// True when both guards still hold exactly their value.
    func guardsIntact() throws -> Bool {
        let all = try buffer.read(UInt32.self, count: count + 2 * GuardedTensor.guardWords)
        let g = GuardedTensor.guardWords
        return (all[..<g] + all[(g + count)...]).allSatisfy { $0 == guardValue.bitPattern }
    }
}

enum SparseFixtures {
    /// A [rows, cols] matrix that is sparse (and partly empty) except for one dense row.
    static func oneDenseRow(rows: Int, cols: Int, denseRow: Int, seed: UInt64) -> CSRArrays {
        var base = SparseGenerator.csr(.uniform, rows: rows, cols: cols, density: 0.02, emptyRowFraction: 0.3, seed: seed)
        var offsets: [Int32] = [0]
        var columns: [Int32] = []
        var values: [Float] = []
        var rng = SeededRandom(seed: seed &+ 1)
        for r in 0..<rows {
            if r == denseRow {
                columns += (0..<cols).map(Int32.init)
                values += rng.floats(cols)
            } else {
                let range = Int(base.rowOffsets[r])..<Int(base.rowOffsets[r + 1])
                columns += base.columnIndices[range]
                values += base.values[range]
            }
            offsets.append(Int32(columns.count))
        }
        base.rowOffsets = offsets
        base.columnIndices = columns
        base.values = values
        return base
    }

    /// A small well-formed matrix (8 x 6, some empty rows) to break in tests of validation.
    static func small() -> CSRArrays {
        CSRArrays(rows: 8, cols: 6,
                  rowOffsets: [0, 2, 2, 5, 6, 6, 8, 9, 11],
                  columnIndices: [0, 3, 1, 2, 5, 4, 0, 5, 3, 1, 2],
                  values: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])
    }
}

/// Uploads `arrays` without the host check of `makeCSR` (for malformed structures).
func uploadUnchecked(_ device: Device, _ arrays: CSRArrays, nnz: Int? = nil) throws -> CSRMatrix {
    let nnz = nnz ?? arrays.nnz
    let count = max(nnz, 1)
    let offsets = try device.makeTensor(shape: [arrays.rows + 1], dtype: .i32)
    try offsets.buffer.write(arrays.rowOffsets)
    let columns = try device.makeTensor(shape: [count], dtype: .i32)
    var cols = arrays.columnIndices
    cols += [Int32](repeating: 0, count: max(0, count - cols.count))
    try columns.buffer.write(Array(cols.prefix(count)))
    var vals = arrays.values
    vals += [Float](repeating: 0, count: max(0, count - vals.count))
    let values = try device.makeTensor(Array(vals.prefix(count)), shape: [count])
    return try CSRMatrix(rows: arrays.rows, cols: arrays.cols, nnz: nnz, rowOffsets: offsets, columnIndices: columns, values: values)
}
