import VkAttn
/// Sequential CPU references for `PrefixScan`, shared by the tests and `vkattn-bench --check`.
/// Floats accumulate in fp64; integers wrap modulo 2^32 like the device.
///
/// Segments: the scan restarts at every element whose head flag is set and at the start of
/// every row of `rowLength` elements (nil: one row).
public enum ScanReference {
    /// Head flags of `count` elements from rows and explicit heads.
    /// - Parameters:
    ///   - count: Elements.
    ///   - rowLength: Elements per row; nil: one row.
    ///   - flags: Explicit head flags, one per element; nil: none.
    /// - Returns: One flag per element: set at each row start and each explicit head.
    public static func heads(count: Int, rowLength: Int? = nil, flags: [Bool]? = nil) -> [Bool] {
        (0..<count).map { i in
            (rowLength.map { i % $0 == 0 } ?? false) || (flags?[i] ?? false)
        }
    }

    /// Head flags from segment start offsets (offsets outside 0..<count are ignored).
    /// - Parameters:
    ///   - count: Elements.
    ///   - offsets: Segment starts, any order, repeats allowed.
    /// - Returns: One flag per element.
    public static func heads(count: Int, offsets: [Int]) -> [Bool] {
        var h = [Bool](repeating: false, count: count)
        for o in offsets where o >= 0 && o < count { h[o] = true }
        return h
    }

    /// The generic sequential scan: `combine(running, x)`; `identity` starts each segment.
    /// - Parameters:
    ///   - x: The values.
    ///   - identity: The operator's identity.
    ///   - exclusive: Exclusive (element i gets the combination before it) or inclusive.
    ///   - heads: Segment heads, one per element; nil: one segment.
    ///   - combine: The operator.
    /// - Returns: The scan, one value per element.
    public static func scan<T>(_ x: [T], identity: T, exclusive: Bool, heads: [Bool]? = nil,
                               _ combine: (T, T) -> T) -> [T] {
        var out: [T] = []
        out.reserveCapacity(x.count)
        var running = identity
        for i in x.indices {
            if heads?[i] ?? false { running = identity }
            let next = combine(running, x[i])
            out.append(exclusive ? running : next)
            running = next
        }
        return out
    }

    /// fp64 scan of f32 data (add or max).
    /// - Parameters:
    ///   - x: The values.
    ///   - op: Sum or maximum.
    ///   - exclusive: Exclusive or inclusive.
    ///   - rowLength: Elements per row; nil: one row.
    ///   - flags: Explicit head flags; nil: none.
    /// - Returns: The scan in fp64.
    public static func scan(_ x: [Float], op: ScanOperator, exclusive: Bool = false, rowLength: Int? = nil, flags: [Bool]? = nil) -> [Double] {
        let h = heads(count: x.count, rowLength: rowLength, flags: flags)
        let values = x.map(Double.init)
        switch op {
        case .add: return scan(values, identity: 0, exclusive: exclusive, heads: h, +)
        // NaN propagates, as in PyTorch's cummax (Swift.max would keep whichever came first).
        case .max: return scan(values, identity: -.infinity, exclusive: exclusive, heads: h) { $0.isNaN || $1.isNaN ? .nan : Swift.max($0, $1) }
        }
    }

    /// Wrapping integer sum scan.
    /// - Parameters:
    ///   - x: The values.
    ///   - exclusive: Exclusive or inclusive.
    ///   - rowLength: Elements per row; nil: one row.
    ///   - flags: Explicit head flags; nil: none.
    /// - Returns: The scan, wrapping.
    public static func scan(_ x: [Int32], exclusive: Bool = false, rowLength: Int? = nil, flags: [Bool]? = nil) -> [Int32] {
        scan(x, identity: 0, exclusive: exclusive, heads: heads(count: x.count, rowLength: rowLength, flags: flags), &+)
    }

    /// Wrapping integer sum scan.
    /// - Parameters:
    ///   - x: The values.
    ///   - exclusive: Exclusive or inclusive.
    ///   - rowLength: Elements per row; nil: one row.
    ///   - flags: Explicit head flags; nil: none.
    /// - Returns: The scan, wrapping.
    public static func scan(_ x: [UInt32], exclusive: Bool = false, rowLength: Int? = nil, flags: [Bool]? = nil) -> [UInt32] {
        scan(x, identity: 0, exclusive: exclusive, heads: heads(count: x.count, rowLength: rowLength, flags: flags), &+)
    }

    /// Running sum of |x| within segments (inclusive): the scale of the rounding error of an
    /// f32 prefix sum at each element, for error bounds.
    /// - Parameters:
    ///   - x: The values.
    ///   - rowLength: Elements per row; nil: one row.
    ///   - flags: Explicit head flags; nil: none.
    /// - Returns: One scale per element.
    public static func absoluteScale(_ x: [Float], rowLength: Int? = nil, flags: [Bool]? = nil) -> [Double] {
        scan(x.map { abs(Double($0)) }, identity: 0, exclusive: false,
             heads: heads(count: x.count, rowLength: rowLength, flags: flags), +)
    }
}
