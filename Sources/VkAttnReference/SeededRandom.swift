import VkAttn
/// A small, fast, seedable generator (SplitMix64) so that tests and the bench can print a
/// seed and reproduce the exact data of a failure.
public struct SeededRandom: RandomNumberGenerator, Sendable {
    private var state: UInt64
    /// The seed the generator started from (print it to replay a failure).
    public let seed: UInt64

    /// - Parameter seed: Any 64-bit value; equal seeds give equal sequences.
    public init(seed: UInt64) {
        self.seed = seed
        self.state = seed
    }

    /// A generator with a seed drawn from the system generator.
    /// - Returns: The generator (its ``seed`` says which).
    public static func fresh() -> SeededRandom {
        SeededRandom(seed: UInt64.random(in: 0...UInt64.max))
    }

    /// The next 64 random bits (SplitMix64).
    /// - Returns: The bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// `count` floats uniform in `range`.
    /// - Parameters:
    ///   - count: How many.
    ///   - range: The interval.
    /// - Returns: The floats.
    public mutating func floats(_ count: Int, in range: ClosedRange<Float> = -1...1) -> [Float] {
        (0..<count).map { _ in Float.random(in: range, using: &self) }
    }

    /// `count` 32-bit words, uniform over all values.
    /// - Parameter count: How many.
    /// - Returns: The words.
    public mutating func words(_ count: Int) -> [UInt32] {
        (0..<count).map { _ in UInt32(truncatingIfNeeded: next()) }
    }
}
