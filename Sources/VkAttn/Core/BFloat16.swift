/// bfloat16: the upper 16 bits of an IEEE float32 (8 exponent bits, 7 fraction bits), the
/// training format. Swift has no such type; VkAttn stores it as `UInt16` words and converts
/// here, as the shaders do (Shaders/common/dtype.glsl).
public enum BFloat16 {
    /// The bf16 word nearest `value` (ties to even); infinities stay infinite, NaN stays NaN.
    /// - Parameter value: A float32.
    /// - Returns: Its bf16 word.
    public static func bits(_ value: Float) -> UInt16 {
        let u = value.bitPattern
        if value.isNaN { return UInt16(truncatingIfNeeded: u >> 16) | 0x40 }
        return UInt16(truncatingIfNeeded: (u &+ 0x7FFF &+ ((u >> 16) & 1)) >> 16)
    }

    /// The float a bf16 word holds (exact).
    /// - Parameter bits: A bf16 word.
    /// - Returns: The float32 it holds.
    public static func float(_ bits: UInt16) -> Float { Float(bitPattern: UInt32(bits) << 16) }

    /// `value` rounded to bf16.
    /// - Parameter value: A float32.
    /// - Returns: The nearest float32 that bf16 can hold.
    public static func rounded(_ value: Float) -> Float { float(bits(value)) }
}
