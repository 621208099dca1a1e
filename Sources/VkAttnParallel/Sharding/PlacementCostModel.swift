import VkAttn

/// The cost of softmax attention over packed sequences on groups of ranks, the model that
/// ``PlacementPlan`` balances (ByteScale / FlexSP: each sequence on a group sized to it).
///
/// - Compute: 4 Hq D pairs FLOPs for the forward (pairs = L (L + 1) / 2 under a causal mask, L²
///   without), 2.5 times that for the backward, at ``flopsPerSecond``. On a group a rank
///   computes its own queries against every key of the group (the exact pairs of its shard).
/// - Ring traffic: a group of g ranks over T tokens moves, per ring step and rank, one K and
///   one V block of T / g tokens, 2 (T / g) Hkv D b bytes (b = ``elementBytes``), for g - 1
///   steps; the backward adds the fp32 dK/dV block, 2 (T / g) Hkv D 4 bytes per step.
/// - Links: ranks r and s share a node when r / ``ranksPerNode`` == s / ``ranksPerNode``. A
///   group's steps run at the slowest link of its window: ``intraNodeBandwidth`` when the
///   window lies inside one node, else ``interNodeBandwidth``.
/// - Overlap: ring copies run beside compute, so each of the g - 1 communicating steps costs
///   max(compute of the step, copy of the step); the first step's compute (or a one-rank
///   group's whole call) has no copy beside it. A rank's predicted time on a group is
///   compute + (g - 1) max(0, copy per step - compute per step).
///
/// Every figure is in seconds and bytes per second; nothing is measured here (the bench
/// measures the device's throughput with one single-device call and passes it in).
public struct PlacementCostModel: Hashable, Sendable {
    /// Query heads (Hq).
    public var headsQ: Int
    /// Key/value heads (Hkv).
    public var headsKV: Int
    /// Head dimension (D).
    public var headDim: Int
    /// Bytes per element of K and V (4 for f32, 2 for f16).
    public var elementBytes: Int
    /// Whether the mask is causal.
    public var causal: Bool
    /// Whether the cost is the backward's (2.5 times the forward's FLOPs, fp32 dK/dV traffic).
    public var backward: Bool
    /// The device's attention throughput in FLOP/s.
    public var flopsPerSecond: Double
    /// Bytes per second between two ranks of one node.
    public var intraNodeBandwidth: Double
    /// Bytes per second between ranks of different nodes.
    public var interNodeBandwidth: Double
    /// Consecutive ranks per node.
    public var ranksPerNode: Int

    /// The op name in errors.
    public static let opName = "parallel.placementCostModel"

    /// - Parameters:
    ///   - headsQ: Query heads; at least 1.
    ///   - headsKV: Key/value heads; at least 1.
    ///   - headDim: Head dimension; at least 1.
    ///   - elementBytes: Bytes per K/V element; 2 or 4.
    ///   - causal: Whether the mask is causal.
    ///   - backward: Whether to cost the backward pass.
    ///   - flopsPerSecond: Attention throughput of one device, FLOP/s (default 100 TFLOP/s, a
    ///     current data-centre GPU's attention kernel; pass a measured value where known).
    ///   - intraNodeBandwidth: Bytes per second inside a node (default 150 GB/s, NVLink-class).
    ///   - interNodeBandwidth: Bytes per second between nodes (default 25 GB/s, 200 Gb/s links).
    ///   - ranksPerNode: Consecutive ranks per node; at least 1 (default 8).
    /// - Throws: `VkAttnError.invalidValue(op:operand:reason:)` for a count below 1, element bytes
    ///   other than 2 or 4, or a throughput or bandwidth that is not positive and finite.
    public init(headsQ: Int, headsKV: Int, headDim: Int, elementBytes: Int = 4, causal: Bool, backward: Bool = false,
                flopsPerSecond: Double = 100e12, intraNodeBandwidth: Double = 150e9, interNodeBandwidth: Double = 25e9,
                ranksPerNode: Int = 8) throws {
        let op = Self.opName
        for (name, value) in [("headsQ", headsQ), ("headsKV", headsKV), ("headDim", headDim), ("ranksPerNode", ranksPerNode)] where value < 1 {
            throw VkAttnError.invalidValue(op: op, operand: name, reason: "\(value) must be at least 1")
        }
        guard elementBytes == 2 || elementBytes == 4 else {
            throw VkAttnError.invalidValue(op: op, operand: "elementBytes", reason: "\(elementBytes) must be 2 (f16) or 4 (f32)")
        }
        for (name, value) in [("flopsPerSecond", flopsPerSecond), ("intraNodeBandwidth", intraNodeBandwidth),
                              ("interNodeBandwidth", interNodeBandwidth)] where !(value > 0 && value.isFinite) {
            throw VkAttnError.invalidValue(op: op, operand: name, reason: "\(value) must be positive and finite")
        }
        (self.headsQ, self.headsKV, self.headDim, self.elementBytes) = (headsQ, headsKV, headDim, elementBytes)
        (self.causal, self.backward, self.flopsPerSecond) = (causal, backward, flopsPerSecond)
        (self.intraNodeBandwidth, self.interNodeBandwidth, self.ranksPerNode) = (intraNodeBandwidth, interNodeBandwidth, ranksPerNode)
    }

    /// Query-key pairs a mask keeps in a sequence of `length` tokens.
    /// - Parameter length: Tokens of the sequence.
    /// - Returns: L (L + 1) / 2 under a causal mask, L² without.
    public func pairs(length: Int) -> Double {
        let l = Double(length)
        return causal ? l * (l + 1) / 2 : l * l
    }

    /// FLOPs of `pairs` query-key pairs: 4 Hq D per pair, 2.5 times that for the backward.
    /// - Parameter pairs: Query-key pairs.
    /// - Returns: FLOPs.
    public func flops(pairs: Double) -> Double {
        4 * Double(headsQ) * Double(headDim) * pairs * (backward ? 2.5 : 1)
    }

    /// Seconds of one device's attention over one whole sequence.
    /// - Parameter length: Tokens of the sequence.
    /// - Returns: Its compute time on one rank (no traffic).
    public func computeTime(length: Int) -> Double { flops(pairs: pairs(length: length)) / flopsPerSecond }

    /// Bytes one rank sends per ring step of a group of `ranks` ranks over `tokens` tokens.
    /// - Parameters:
    ///   - tokens: Tokens of the group (all of its sequences).
    ///   - ranks: The group's ranks (g).
    /// - Returns: 2 (T / g) Hkv D b, plus 2 (T / g) Hkv D 4 for the backward; 0 for one rank.
    public func bytesPerStep(tokens: Int, ranks: Int) -> Double {
        guard ranks > 1 else { return 0 }
        let block = 2 * Double(tokens) / Double(ranks) * Double(headsKV) * Double(headDim)
        return block * Double(elementBytes) + (backward ? block * 4 : 0)
    }

    /// Whether ranks `window` lie inside one node.
    /// - Parameter window: Consecutive ranks.
    /// - Returns: True when the first and last rank share a node.
    public func isInsideNode(_ window: Range<Int>) -> Bool {
        window.isEmpty || window.lowerBound / ranksPerNode == (window.upperBound - 1) / ranksPerNode
    }

    /// The slowest link between ranks of `window`.
    /// - Parameter window: Consecutive ranks.
    /// - Returns: ``intraNodeBandwidth`` inside one node, else ``interNodeBandwidth`` (the
    ///   smaller of the two where the window spans nodes and the intra-node link is slower).
    public func bandwidth(_ window: Range<Int>) -> Double {
        isInsideNode(window) ? intraNodeBandwidth : min(intraNodeBandwidth, interNodeBandwidth)
    }

    /// A rank's predicted seconds on a group: its compute plus the copies its compute does not
    /// cover, (g - 1) max(0, copy per step - compute per step).
    /// - Parameters:
    ///   - computeSeconds: The rank's compute on the group.
    ///   - tokens: Tokens of the group.
    ///   - window: The group's ranks.
    /// - Returns: Seconds.
    public func groupTime(computeSeconds: Double, tokens: Int, window: Range<Int>) -> Double {
        let g = window.count
        guard g > 1 else { return computeSeconds }
        let copy = bytesPerStep(tokens: tokens, ranks: g) / bandwidth(window)
        return computeSeconds + Double(g - 1) * max(0, copy - computeSeconds / Double(g))
    }
}
