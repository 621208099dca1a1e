/// The two load-balancing strategies of CSR SpMM.
public enum SpMMKernel: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// A team of subgroup lanes per row (lanes across the output's columns, vec4 loads where
    /// n % 4 == 0, and across the row's nonzeros). Best when rows have similar lengths.
    case rowSplit = "row-split"
    /// Equal shares of the merge path of rows x nonzeros per team (partition pass by binary
    /// search, rows that span teams combined by a deterministic fix-up pass). Best for skewed
    /// row lengths: a long row costs no more than its nonzeros.
    case mergePath = "merge-path"

    /// The raw value: `row-split` or `merge-path`.
    public var description: String { rawValue }

    /// Coefficient of variation of the row lengths above which `choose` picks merge-path.
    public static let skewedVariation = 1.0
    /// Longest row, in multiples of max(mean, 8), above which `choose` picks merge-path.
    public static let longRowFactor = 16.0

    /// The kernel for a matrix with these row statistics: merge-path for skewed row lengths
    /// (coefficient of variation above `skewedVariation`, or a row longer than
    /// `longRowFactor` x max(mean, 8)), row-split otherwise.
    /// - Parameter stats: The matrix's row statistics.
    /// - Returns: The kernel.
    public static func choose(for stats: RowStatistics) -> SpMMKernel {
        if stats.coefficientOfVariation > skewedVariation { return .mergePath }
        if Double(stats.maxLength) > longRowFactor * max(stats.meanLength, 8) { return .mergePath }
        return .rowSplit
    }
}

/// Options of an SpMM plan.
public struct SpMMOptions: Sendable, Hashable {
    /// The kernel to run, or nil to choose from the row statistics (`SpMMKernel.choose`).
    public var kernel: SpMMKernel?
    /// Where the matrix's structure is checked.
    public var validation: SparseValidation.Mode

    /// - Parameters:
    ///   - kernel: A kernel to force; nil chooses from the row statistics.
    ///   - validation: Where the structure is checked.
    public init(kernel: SpMMKernel? = nil, validation: SparseValidation.Mode = .auto) {
        self.kernel = kernel
        self.validation = validation
    }
}
