import VkAttn

/// The host reference of `KVQuantization` (int8 values, one fp32 scale per block of 32
/// elements along each row), shared by the tests and by anyone checking a quantized cache.
/// It states the rule the device follows bit for bit:
/// - `scale = max |x| / 127` over the block, correctly rounded (Float division); 0 for a block of
///   zeros; the block's NaN (with the largest payload, sign cleared) when it holds one, else
///   `+inf` when it holds an infinity;
/// - `q` = the integer nearest the exact quotient `x / scale` (computed in fp64, which decides
///   every rounding of two floats' quotient correctly), ties away from zero, clamped to
///   -127...127; 0 where the scale is 0 or not finite;
/// - dequantized: `Float(q) * scale`, rounded to the output type.
///
/// Arrays are flat and row-major: rows of `rowWidth` elements (D), `ceil(D / 32)` scales per row.
public enum QuantizationReference {
    /// Elements per scale: 32, as `KVQuantization.blockSize`.
    public static let blockSize = 32

    /// The scale of one block.
    /// - Parameter block: The block's elements (at most 32).
    /// - Returns: `max |x| / 127` rounded to nearest; 0 for zeros; NaN or `+inf` for a block
    ///   holding one (the largest magnitude by bits: NaN above infinity above every number).
    public static func scale<C: Collection>(of block: C) -> Float where C.Element == Float {
        var maxBits: UInt32 = 0
        for x in block { maxBits = max(maxBits, x.bitPattern & 0x7FFF_FFFF) }
        guard maxBits != 0 else { return 0 }
        let m = Float(bitPattern: maxBits)
        return m.isFinite ? m / 127 : m
    }

    /// The quantized value of `x` under `scale`.
    /// - Parameters:
    ///   - x: The element.
    ///   - scale: Its block's scale.
    /// - Returns: The integer nearest `x / scale` (ties away from zero) in -127...127; 0 when
    ///   the scale is 0 or not finite.
    public static func level(_ x: Float, scale: Float) -> Int8 {
        guard scale > 0, scale.isFinite else { return 0 }
        let n = (Double(x) / Double(scale)).rounded(.toNearestOrAwayFromZero)
        return Int8(min(max(n, -127), 127))
    }

    /// Quantizes rows of `rowWidth` elements.
    /// - Parameters:
    ///   - x: The elements, row-major (f16 or bf16 inputs as the floats they widen to).
    ///   - rowWidth: D, the elements per row (>= 1); a count that is not a multiple of it ends in
    ///     a shorter row. Below 1: no rows.
    /// - Returns: One value per element and `ceil(D / 32)` scales per row.
    public static func quantize(_ x: [Float], rowWidth: Int) -> (values: [Int8], scales: [Float]) {
        guard rowWidth >= 1 else { return ([], []) }
        var values = [Int8](repeating: 0, count: x.count)
        var scales: [Float] = []
        for rowStart in stride(from: 0, to: x.count, by: rowWidth) {
            let rowEnd = min(rowStart + rowWidth, x.count)
            for blockStart in stride(from: rowStart, to: rowEnd, by: blockSize) {
                let block = blockStart..<min(blockStart + blockSize, rowEnd)
                let s = scale(of: x[block])
                scales.append(s)
                for i in block { values[i] = level(x[i], scale: s) }
            }
        }
        return (values, scales)
    }

    /// Dequantizes rows of `rowWidth` elements: `Float(q) * scale`, rounded to `dtype`.
    /// - Parameters:
    ///   - values: The quantized values, row-major.
    ///   - scales: `ceil(D / 32)` scales per row (missing ones read as NaN).
    ///   - rowWidth: D (>= 1; below 1: no rows).
    ///   - dtype: The output type the result is rounded to (f32: exact).
    /// - Returns: One float per value.
    public static func dequantize(values: [Int8], scales: [Float], rowWidth: Int, dtype: DType = .f32) -> [Float] {
        guard rowWidth >= 1 else { return [] }
        let blocksPerRow = (rowWidth + blockSize - 1) / blockSize
        return values.indices.map { i in
            let b = i / rowWidth * blocksPerRow + i % rowWidth / blockSize
            let s = b < scales.count ? scales[b] : .nan
            return dtype.rounded(Float(values[i]) * s)
        }
    }
}
