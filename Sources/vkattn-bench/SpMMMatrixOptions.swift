import ArgumentParser
import VkAttn
import VkAttnReference

extension SparseDistribution: ExpressibleByArgument {}
extension SparseValidation.Mode: ExpressibleByArgument {}

/// Where the sparse matrix of `spmm` and `sddmm` comes from: a generator or a .mtx file.
struct SparseMatrixOptions: ParsableArguments {
    @Option(help: "Rows of the generated matrix.") var rows = 16384
    @Option(help: "Columns of the generated matrix (default: --rows).") var cols: Int?
    @Option(help: "Fraction of entries that are nonzero (generated matrix).") var density = 0.01
    @Option(help: "Row-length distribution: uniform, power-law, banded, block-diagonal.") var distribution = SparseDistribution.uniform
    @Option(help: "Fraction of rows left empty (generated matrix).") var emptyRows = 0.0
    @Option(help: "Read the matrix from this Matrix Market (.mtx) file instead of generating one.") var matrix: String?
    @Option(help: "Seed of the generated matrix and dense operands (default: random).") var seed: UInt64?
    @Option(help: "Values (bf16: block-CSR only).") var dtype = StorageType.f32
    @Option(help: "Where the structure is validated: auto, host, device.") var validation = SparseValidation.Mode.auto

    var valueType: DType { dtype.dtype }

    func validate() throws {
        guard rows >= 1, (cols ?? rows) >= 1 else { throw OptionError("--rows and --cols must be positive") }
        guard (0...1).contains(density) else { throw OptionError("--density must be in [0, 1], got \(density)") }
        guard (0...1).contains(emptyRows) else { throw OptionError("--empty-rows must be in [0, 1], got \(emptyRows)") }
        // Row offsets are rows + 1 words, the nonzeros a column index and a value each: both
        // must fit one binding (4 GiB in Vulkan) before the generator allocates them.
        let c = cols ?? rows
        guard rows < 1 << 30, c < 1 << 30 else { throw OptionError("--rows and --cols must be below 2^30 (row offsets of 4 GiB at most)") }
        let nonzeros = Double(rows) * Double(c) * density
        guard nonzeros <= Double(1 << 29) else {
            throw OptionError("--rows x --cols x --density asks for \(nonzeros) nonzeros, more than one binding holds (2^29)")
        }
    }

    /// The matrix (generated, or read: a malformed file throws its MatrixMarketError) and the
    /// config entries that describe it.
    func load(seed: UInt64) throws -> (CSRArrays, [String: ConfigValue]) {
        if let matrix {
            let a = try MatrixMarket.read(path: matrix)
            return (a, ["matrix": .string(matrix)])
        }
        let cols = self.cols ?? rows
        let a = SparseGenerator.csr(distribution, rows: rows, cols: cols, density: density, emptyRowFraction: emptyRows, seed: seed)
        return (a, ["distribution": .string(distribution.rawValue), "density": .double(density), "seed": .string(String(seed))])
    }
}

/// Config entries and the human summary line of a plan's row statistics.
func statisticsConfig(_ s: RowStatistics) -> [String: ConfigValue] {
    ["rows": .int(s.rows), "nnz": .int(s.nnz), "row_max": .int(s.maxLength),
     "row_cv": .double((s.coefficientOfVariation * 1000).rounded() / 1000)]
}

/// Columns (of B, or rows of Y) the nonzeros reference: what a product must read at least.
func distinctColumns(_ a: CSRArrays) -> Int {
    var seen = [Bool](repeating: false, count: a.cols)
    var count = 0
    for c in a.columnIndices where !seen[Int(c)] {
        seen[Int(c)] = true
        count += 1
    }
    return count
}

/// Largest error of `actual` against `reference`, as a check result.
func sparseCheck(_ reference: SparseReference.Output, _ actual: [Float], tolerance: Double) -> (CheckResult, Double) {
    let error = reference.maxError(of: actual)
    return (error <= tolerance ? .pass : .fail, error)
}

extension Dictionary where Key == String, Value == ConfigValue {
    func merging(_ other: [String: ConfigValue]) -> [String: ConfigValue] {
        merging(other) { _, new in new }
    }
}
