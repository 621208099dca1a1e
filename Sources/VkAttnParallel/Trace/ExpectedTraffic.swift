/// What a scheme's paper says one rank sends per call, to set beside what `RankTraffic`
/// measures: the bytes of the busiest rank, the communication steps they spread over, and the
/// formula in words (with its source). Each scheduler computes its own
/// (`ContextParallelAttention.expectedTraffic`, `TreeDecode.expectedTraffic`,
/// `ContextParallelLinearAttention.expectedTraffic`).
public struct ExpectedTraffic: Hashable, Sendable {
    /// Bytes the busiest rank sends per call. Formulas written for an even split (S / N tokens
    /// per rank) give a fraction when the split is uneven.
    public var bytes: Double
    /// Communication steps per call (ring steps, all-to-alls, head slices, exchange steps).
    public var steps: Int
    /// The formula and where it comes from, e.g. `ring (Liu et al.): per step one K and one V
    /// block, 2 (S/N) Hkv D b`.
    public var formula: String
    /// Of `bytes`, those that cross between nodes, for schedules over two levels of ranks (the
    /// double ring, the hierarchical tree decode); nil for one level.
    public var interNodeBytes: Double?

    /// Creates the expectation of one call.
    /// - Parameters:
    ///   - bytes: bytes the busiest rank sends per call.
    ///   - steps: communication steps per call.
    ///   - formula: the formula in words.
    ///   - interNodeBytes: of `bytes`, those sent to other nodes (two-level schedules); nil for one level.
    public init(bytes: Double, steps: Int, formula: String, interNodeBytes: Double? = nil) {
        self.bytes = bytes
        self.steps = steps
        self.formula = formula
        self.interNodeBytes = interNodeBytes
    }

    /// Of `bytes`, those that stay inside a node (`bytes - interNodeBytes`); nil for one level.
    public var intraNodeBytes: Double? { interNodeBytes.map { bytes - $0 } }

    /// Bytes per communication step: `bytes / steps` (all of them when `steps` is 0).
    public var bytesPerStep: Double { bytes / Double(max(1, steps)) }
}
