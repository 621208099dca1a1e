import VkAttn

/// One axis of row-major host arrays [outer, total, inner] cut into consecutive ranges, one per
/// rank: rank r holds [sum of lengths before r, + lengths[r]) of the axis for every `outer`
/// index. The layout of the contiguously sharded schedulers: `ContextParallelLinearAttention`
/// (q [B, L_r, H, Dk]: outer B, inner H Dk) and `ContextParallelRecurrence` ([B, L_r, D]:
/// outer B, inner D; [B, D, L_r]: outer B D, inner 1; complex values double `inner`).
/// `shard` takes one rank's part of a global array, `unshard` is its inverse over all ranks.
/// (Packed sequences split by `SequenceSharding` are `ShardPlan`'s.)
public struct ContiguousSplit: Hashable, Sendable {
    /// Length of each rank's range, in rank order (a range may be empty).
    public let lengths: [Int]

    static let opName = "parallel.contiguousSplit"

    /// A split into ranges of `lengths`.
    /// - Parameter lengths: each rank's length, at least one rank, none negative.
    /// - Throws: `VkAttnError.invalidValue` (operand `lengths`) for no ranks, a negative
    ///   length, or a total that overflows `Int`.
    public init(lengths: [Int]) throws {
        guard !lengths.isEmpty else {
            throw VkAttnError.invalidValue(op: Self.opName, operand: "lengths", reason: "there must be at least one rank")
        }
        if let r = lengths.firstIndex(where: { $0 < 0 }) {
            throw VkAttnError.invalidValue(op: Self.opName, operand: "lengths", reason: "rank \(r) has length \(lengths[r]); lengths must be >= 0")
        }
        _ = try Checked.sum(op: Self.opName, operand: "lengths", lengths)
        self.lengths = lengths
    }

    /// `total` split over `ranks` ranks as evenly as possible, the first `total % ranks` one
    /// longer (`ContextParallelLinearAttention.evenLengths`).
    /// - Parameters:
    ///   - total: length of the whole axis, >= 0.
    ///   - ranks: number of ranks, >= 1.
    /// - Throws: `VkAttnError.invalidValue` (operand `total` or `ranks`) for a negative total
    ///   or no ranks.
    public init(total: Int, ranks: Int) throws {
        guard total >= 0 else { throw VkAttnError.invalidValue(op: Self.opName, operand: "total", reason: "\(total) must be >= 0") }
        guard ranks >= 1 else { throw VkAttnError.invalidValue(op: Self.opName, operand: "ranks", reason: "\(ranks) must be >= 1") }
        try self.init(lengths: ContextParallelLinearAttention.evenLengths(total: total, ranks: ranks))
    }

    /// The number of ranks.
    public var ranks: Int { lengths.count }
    /// The length of the whole axis.
    public var total: Int { lengths.reduce(0, +) }

    /// The range of the axis that `rank` holds.
    /// - Parameter rank: the rank, in 0..<ranks.
    /// - Returns: [start, start + lengths[rank]).
    /// - Throws: `VkAttnError.invalidValue` (operand `rank`) outside 0..<ranks.
    public func range(rank: Int) throws -> Range<Int> {
        guard lengths.indices.contains(rank) else {
            throw VkAttnError.invalidValue(op: Self.opName, operand: "rank", reason: "\(rank) is not in 0..<\(ranks)")
        }
        let start = lengths.prefix(rank).reduce(0, +)
        return start..<(start + lengths[rank])
    }

    /// Rank `rank`'s part [outer, lengths[rank], inner] of a global [outer, total, inner] array.
    /// - Parameters:
    ///   - global: the whole array, outer * total * inner elements.
    ///   - outer: the product of the dimensions before the split axis (>= 0).
    ///   - inner: the product of the dimensions after it (>= 0).
    ///   - rank: the rank, in 0..<ranks.
    /// - Returns: the rank's elements, outer index by outer index.
    /// - Throws: `VkAttnError.invalidValue` for a rank outside the split or negative or
    ///   overflowing sizes; `VkAttnError.shapeMismatch` (operand `global`) when the array
    ///   does not hold outer * total * inner elements.
    public func shard<T>(_ global: [T], outer: Int, inner: Int, rank: Int) throws -> [T] {
        let range = try range(rank: rank)
        let count = try elements(outer: outer, length: total, inner: inner)
        guard global.count == count else {
            throw VkAttnError.shapeMismatch(op: Self.opName, operand: "global", expected: "\(count) elements ([\(outer), \(total), \(inner)])",
                                            actual: "\(global.count) elements")
        }
        var out: [T] = []
        out.reserveCapacity(outer * range.count * inner)
        for o in 0..<outer {
            let row = o * total
            out += global[((row + range.lowerBound) * inner)..<((row + range.upperBound) * inner)]
        }
        return out
    }

    /// The global [outer, total, inner] array from every rank's [outer, lengths[r], inner]
    /// part: the inverse of `shard` over all ranks.
    /// - Parameters:
    ///   - parts: one part per rank, in rank order.
    ///   - outer: the product of the dimensions before the split axis (>= 0).
    ///   - inner: the product of the dimensions after it (>= 0).
    /// - Returns: the whole array.
    /// - Throws: `VkAttnError.invalidValue` (operand `parts`) for a part count other than
    ///   `ranks`, or for negative or overflowing sizes; `VkAttnError.shapeMismatch` (operand
    ///   `parts[r]`) for a part that does not hold outer * lengths[r] * inner elements.
    public func unshard<T>(_ parts: [[T]], outer: Int, inner: Int) throws -> [T] {
        guard parts.count == ranks else {
            throw VkAttnError.invalidValue(op: Self.opName, operand: "parts", reason: "\(parts.count) parts for \(ranks) ranks")
        }
        for (r, part) in parts.enumerated() {
            let count = try elements(outer: outer, length: lengths[r], inner: inner)
            guard part.count == count else {
                throw VkAttnError.shapeMismatch(op: Self.opName, operand: "parts[\(r)]", expected: "\(count) elements ([\(outer), \(lengths[r]), \(inner)])",
                                                actual: "\(part.count) elements")
            }
        }
        var out: [T] = []
        out.reserveCapacity(try elements(outer: outer, length: total, inner: inner))
        // Every outer index takes each rank's rows in rank order: the ranges tile the axis.
        for o in 0..<outer {
            for (r, part) in parts.enumerated() {
                let run = lengths[r] * inner
                out += part[(o * run)..<((o + 1) * run)]
            }
        }
        return out
    }

    /// outer * length * inner, checked.
    func elements(outer: Int, length: Int, inner: Int) throws -> Int {
        guard outer >= 0, inner >= 0 else {
            throw VkAttnError.invalidValue(op: Self.opName, operand: outer < 0 ? "outer" : "inner", reason: "\(outer < 0 ? outer : inner) must be >= 0")
        }
        return try Checked.product(op: Self.opName, operand: "outer x length x inner", outer, length, inner)
    }
}
