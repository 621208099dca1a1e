import VulkanCompute

/// How a prefix scan crosses tile boundaries. Both paths are correct on every device and
/// neither can hang; they differ in passes over memory.
public enum ScanAlgorithm: String, Sendable, Hashable, CaseIterable, Codable, CustomStringConvertible {
    /// One pass (reads n, writes n): each tile takes a ticket from an atomic counter,
    /// publishes its total, and looks back over its predecessors' published totals
    /// (decoupled look-back). A predecessor that stays unpublished for a bounded number of
    /// polls is reduced from the input by the waiting tile itself (the fallback of Smith,
    /// Levien and Owens), so no tile waits on another without bound, even on devices with no
    /// forward-progress guarantee between workgroups (lavapipe).
    case singlePass = "single-pass-lookback"
    /// Three dispatches, no waiting between workgroups at all: tile totals (reads n), one
    /// workgroup scans the totals, tile scans (reads n, writes n).
    case reduceThenScan = "reduce-then-scan"

    /// The raw value: `single-pass-lookback` or `reduce-then-scan`.
    public var description: String { rawValue }

    /// The path the library uses on `device` when the caller does not force one: the single
    /// pass everywhere (it moves the fewest bytes, and its fallback makes it safe on
    /// lavapipe; measured faster there too, see docs/PERFORMANCE.md).
    /// - Parameter device: The device that will run the scan.
    /// - Returns: ``singlePass``.
    public static func preferred(for device: Device) -> ScanAlgorithm {
        .singlePass
    }
}

/// The associative operator of a prefix scan.
public enum ScanOperator: String, Sendable, Hashable, CaseIterable, Codable, CustomStringConvertible {
    /// Sum: f32, i32, u32 (integers wrap modulo 2^32).
    case add
    /// Maximum: f32 (identity -inf).
    case max

    /// The raw value: `add` or `max`.
    public var description: String { rawValue }

    /// Element types this operator scans.
    public var dtypes: [DType] {
        switch self {
        case .add: return [.f32, .i32, .u32]
        case .max: return [.f32]
        }
    }
}

/// Where segments of a segmented scan start (a scan restarts at each segment's first element).
/// Rows of a batched input ([rows, n]) are always separate segments in addition to these.
public enum ScanSegments: Sendable {
    /// No segments beyond the rows.
    case none
    /// u32 or i32, one per element (the input's shape or its element count): nonzero marks
    /// the first element of a segment.
    case headFlags(Tensor)
    /// u32 or i32, 1-D: the flat index of each segment's first element (any order, repeats
    /// allowed). Indices at or past the element count, or negative, are ignored on the device.
    case offsets(Tensor)
}
