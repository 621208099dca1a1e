import VkAttn

// The error measures that tests, the MPI test harness and `vkattn-bench --check` share, so a
// result judged in one place is judged the same way everywhere.

/// ||a - b|| / max(||b||, floor * sqrt(n)) against an fp64 reference. NaN anywhere, a size
/// mismatch, or a mismatch in where the infinities are is an infinite error. The floor keeps
/// all-but-zero references (a gradient that cancels exactly, like dQ of a single key) from
/// turning rounding noise into a huge ratio.
/// - Parameters:
///   - a: the values under test.
///   - b: the reference, same length.
///   - floor: the smallest per-element norm the denominator may assume.
/// - Returns: The relative error; 0 for equal arrays, infinity for a NaN or a mismatch.
public func relativeError(_ a: [Float], _ b: [Double], floor: Double = 1e-3) -> Double {
    guard a.count == b.count else { return .infinity }
    var num = 0.0, den = 0.0
    for (x, y) in zip(a, b) {
        if x.isNaN || y.isNaN { return .infinity }
        if y.isInfinite || x.isInfinite {
            if Double(x) != y { return .infinity }
            continue
        }
        num += (Double(x) - y) * (Double(x) - y)
        den += y * y
    }
    return (num / max(den, floor * floor * Double(a.count))).squareRoot()
}

/// ||a - b|| / ||b|| in fp64 between two fp32 results (a sharded run against the one-device
/// op); infinite for a size mismatch or a NaN.
/// - Parameters:
///   - a: the values under test.
///   - b: the reference, same length.
///   - infinitiesMatch: equal infinities (the LSE of a fully masked row) agree and others are
///     an infinite error; when false, infinities enter the sums as they are.
/// - Returns: The relative L2 error; infinity for a NaN or a size mismatch.
public func relativeL2(_ a: [Float], _ b: [Float], infinitiesMatch: Bool) -> Double {
    guard a.count == b.count else { return .infinity }
    var num = 0.0, den = 0.0
    for (x, y) in zip(a, b) {
        if infinitiesMatch, x.isInfinite || y.isInfinite {
            if x != y { return .infinity }
            continue
        }
        let diff = Double(x) - Double(y)
        num += diff.isNaN ? .infinity : diff * diff
        den += Double(y) * Double(y)
    }
    return (num / max(den, 1e-30)).squareRoot()
}

/// The largest |a - b| / max(|b|, floor) over two arrays; a NaN anywhere or a size mismatch
/// is an infinite error.
/// - Parameters:
///   - a: the values under test.
///   - b: the reference, same length.
///   - floor: the smallest magnitude a reference element is taken to have.
/// - Returns: The largest elementwise relative error; infinity for a NaN or a size mismatch.
public func maxRelativeError(_ a: [Float], _ b: [Float], floor: Float = 1e-6) -> Float {
    guard a.count == b.count else { return .infinity }
    var worst: Float = 0
    for (x, y) in zip(a, b) {
        if x.isNaN || y.isNaN { return .infinity }
        worst = max(worst, abs(x - y) / max(abs(y), floor))
    }
    return worst
}
