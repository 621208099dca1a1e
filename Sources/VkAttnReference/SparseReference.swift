import VkAttn
/// CPU references of the sparse kernels, accumulating in Double: what the tests and
/// `vkattn-bench --check` compare the device against.
///
/// Each returns the expected values and, per element, the magnitude of the sum that produced
/// it (the same sum over absolute values), so that an error can be judged relative to the
/// size of the terms even where they cancel.
public enum SparseReference {
    /// Expected values and term magnitudes of one result.
    public struct Output: Sendable {
        /// The reference values.
        public var expected: [Float]
        /// Per value, the same sum over the terms' absolute values.
        public var magnitude: [Float]

        /// Largest |actual - expected| / max(magnitude, floor): the rounding error relative to
        /// the size of the terms. Infinite when a value is NaN or the counts differ.
        /// - Parameters:
        ///   - actual: The device's values.
        ///   - floor: The smallest magnitude a term sum is taken to have.
        /// - Returns: The largest relative error.
        public func maxError(of actual: [Float], floor: Float = 1e-20) -> Double {
            guard actual.count == expected.count else { return .infinity }
            var worst = 0.0
            for i in actual.indices {
                let a = actual[i], e = expected[i]
                if a.isNaN || e.isNaN || a.isInfinite { return .infinity }
                worst = max(worst, Double(abs(a - e)) / Double(max(magnitude[i], floor)))
            }
            return worst
        }
    }

    /// C = alpha * A * B + beta * C0 for CSR `a` [M, K], dense row-major `b` [K, n] and
    /// `c0` [M, n] (not read when beta == 0; may be nil then). Returns [M, n] row-major.
    /// - Parameters:
    ///   - a: A [M, K].
    ///   - b: B [K, n], row-major.
    ///   - n: Columns of B and C.
    ///   - alpha: The product's factor.
    ///   - beta: C0's factor.
    ///   - c0: C0 [M, n]; nil when beta is 0.
    /// - Returns: C [M, n] and its magnitudes.
    public static func spmm(_ a: CSRArrays, b: [Float], n: Int, alpha: Float = 1, beta: Float = 0,
                            c0: [Float]? = nil) -> Output {
        var out = [Float](repeating: 0, count: a.rows * n)
        var mag = [Float](repeating: 0, count: a.rows * n)
        var acc = [Double](repeating: 0, count: n)
        var abs = [Double](repeating: 0, count: n)
        b.withUnsafeBufferPointer { b in
            for r in 0..<a.rows {
                for j in 0..<n { acc[j] = 0; abs[j] = 0 }
                for p in Int(a.rowOffsets[r])..<Int(a.rowOffsets[r + 1]) {
                    let v = Double(a.values[p])
                    let row = Int(a.columnIndices[p]) * n
                    for j in 0..<n {
                        let t = v * Double(b[row + j])
                        acc[j] += t
                        abs[j] += Swift.abs(t)
                    }
                }
                finish(row: r, n: n, acc: acc, abs: abs, alpha: alpha, beta: beta, c0: c0, out: &out, mag: &mag)
            }
        }
        return Output(expected: out, magnitude: mag)
    }

    /// C = alpha * A * B + beta * C0 for block-CSR `a` [M, K], dense `b` [K, n], `c0` [M, n].
    /// - Parameters:
    ///   - a: A, block-CSR.
    ///   - b: B [A.cols, n], row-major.
    ///   - n: Columns of B and C.
    ///   - alpha: The product's factor.
    ///   - beta: C0's factor.
    ///   - c0: C0 [A.rows, n]; nil when beta is 0.
    /// - Returns: C and its magnitudes.
    public static func bsrmm(_ a: BSRArrays, b: [Float], n: Int, alpha: Float = 1, beta: Float = 0,
                             c0: [Float]? = nil) -> Output {
        let bs = a.blockSize
        var out = [Float](repeating: 0, count: a.rows * n)
        var mag = [Float](repeating: 0, count: a.rows * n)
        var acc = [Double](repeating: 0, count: bs * n)
        var abs = [Double](repeating: 0, count: bs * n)
        b.withUnsafeBufferPointer { b in
            for br in 0..<a.blockRows {
                for j in acc.indices { acc[j] = 0; abs[j] = 0 }
                for blk in Int(a.blockRowOffsets[br])..<Int(a.blockRowOffsets[br + 1]) {
                    let col0 = Int(a.blockColumnIndices[blk]) * bs
                    for i in 0..<bs {
                        for k in 0..<bs {
                            let v = Double(a.values[(blk * bs + i) * bs + k])
                            if v == 0 { continue }
                            let row = (col0 + k) * n
                            for j in 0..<n {
                                let t = v * Double(b[row + j])
                                acc[i * n + j] += t
                                abs[i * n + j] += Swift.abs(t)
                            }
                        }
                    }
                }
                for i in 0..<bs {
                    finish(row: br * bs + i, n: n, acc: Array(acc[(i * n)..<((i + 1) * n)]),
                           abs: Array(abs[(i * n)..<((i + 1) * n)]), alpha: alpha, beta: beta, c0: c0, out: &out, mag: &mag)
                }
            }
        }
        return Output(expected: out, magnitude: mag)
    }

    /// SDDMM: out[p] = alpha * dot(X[r, :], Y[c, :]) * (scaleByValues ? pattern.values[p] : 1)
    /// for each nonzero p at (r, c) of `pattern` [M, N]; X is [M, k], Y is [N, k], row-major.
    /// Returns [nnz].
    /// - Parameters:
    ///   - pattern: The CSR pattern [M, N].
    ///   - x: X [M, k], row-major.
    ///   - y: Y [N, k], row-major.
    ///   - k: The dot products' length.
    ///   - alpha: The factor.
    ///   - scaleByValues: Multiply by the pattern's values.
    /// - Returns: One value per nonzero, and the magnitudes.
    public static func sddmm(_ pattern: CSRArrays, x: [Float], y: [Float], k: Int, alpha: Float = 1,
                             scaleByValues: Bool = false) -> Output {
        var out = [Float](repeating: 0, count: pattern.nnz)
        var mag = [Float](repeating: 0, count: pattern.nnz)
        for r in 0..<pattern.rows {
            for p in Int(pattern.rowOffsets[r])..<Int(pattern.rowOffsets[r + 1]) {
                let c = Int(pattern.columnIndices[p])
                var dot = 0.0, abs = 0.0
                for i in 0..<k {
                    let t = Double(x[r * k + i]) * Double(y[c * k + i])
                    dot += t
                    abs += Swift.abs(t)
                }
                let scale = Double(alpha) * (scaleByValues ? Double(pattern.values[p]) : 1)
                out[p] = Float(dot * scale)
                mag[p] = Float(abs * Swift.abs(scale))
            }
        }
        return Output(expected: out, magnitude: mag)
    }

    private static func finish(row r: Int, n: Int, acc: [Double], abs: [Double], alpha: Float, beta: Float,
                               c0: [Float]?, out: inout [Float], mag: inout [Float]) {
        for j in 0..<n {
            var value = Double(alpha) * acc[j]
            var size = Swift.abs(Double(alpha)) * abs[j]
            if beta != 0, let c0 {
                let old = Double(beta) * Double(c0[r * n + j])
                value += old
                size += Swift.abs(old)
            }
            out[r * n + j] = Float(value)
            mag[r * n + j] = Float(size)
        }
    }

    /// The transpose of `a` as CSR (a stable counting sort by column: within a column, rows in
    /// increasing order, entries of one row in their original order), what `CSRTranspose`
    /// must produce exactly.
    /// - Parameter a: A well-formed CSR matrix [M, K].
    /// - Returns: A^T [K, M].
    public static func transpose(_ a: CSRArrays) -> CSRArrays {
        var counts = [Int32](repeating: 0, count: a.cols + 1)
        for c in a.columnIndices { counts[Int(c) + 1] += 1 }
        for c in 0..<a.cols { counts[c + 1] += counts[c] }
        var next = counts
        var rows = [Int32](repeating: 0, count: a.columnIndices.count)
        var values = [Float](repeating: 0, count: a.values.count)
        for r in 0..<a.rows {
            for p in Int(a.rowOffsets[r])..<Int(a.rowOffsets[r + 1]) {
                let c = Int(a.columnIndices[p])
                rows[Int(next[c])] = Int32(r)
                values[Int(next[c])] = a.values[p]
                next[c] += 1
            }
        }
        return CSRArrays(rows: a.cols, cols: a.rows, rowOffsets: counts, columnIndices: rows, values: values)
    }
}
