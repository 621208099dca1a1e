/// What a compiled shader variant expects from the host, read by the build tool from the
/// preprocessed GLSL of that variant: the members of its push-constant block and the names of
/// its specialization constants. `Stream.dispatch` checks every `PushConstantBlock` against
/// it and `Device.kernel` resolves specialization constants by name through it, so Swift and
/// GLSL never agree by position alone.
public struct ShaderInterface: Hashable, Sendable {
    /// The GLSL scalar type of a push-constant member (std430, 4 bytes each).
    public enum Scalar: String, Hashable, Sendable {
        /// The GLSL scalar types: `uint`, `int`, `float`, `bool`.
        case uint, int, float, bool
    }

    /// One member of the push-constant block.
    public struct Member: Hashable, Sendable {
        /// The GLSL name (`heads_q`); the Swift twin is its camelCase (`headsQ`).
        public let name: String
        /// The GLSL type.
        public let type: Scalar
        /// Byte offset in the block.
        public let offset: Int
        /// The Swift twin's property name (`headsQ` for `heads_q`), spelled once here rather
        /// than on every dispatch.
        public let swiftName: String
    }

    /// The push-constant block's members in declaration order (empty: the shader has none).
    public let pushConstants: [Member]
    /// The block's size in bytes.
    public let pushConstantBytes: Int
    /// Specialization constants by GLSL name (`local_size_x` for `local_size_x_id`) -> constant_id.
    public let specializationIDs: [String: UInt32]

    /// An interface as the build tool writes it.
    /// - Parameters:
    ///   - pushConstants: (GLSL name, type, byte offset) of each member, in declaration order.
    ///   - pushConstantBytes: the block's size.
    ///   - specializationIDs: constant_id of each specialization constant, by name.
    public init(pushConstants: [(String, Scalar, Int)], pushConstantBytes: Int, specializationIDs: [String: UInt32]) {
        self.pushConstants = pushConstants.map { Member(name: $0.0, type: $0.1, offset: $0.2, swiftName: Self.swiftName($0.0)) }
        self.pushConstantBytes = pushConstantBytes
        self.specializationIDs = specializationIDs
    }

    /// The interface of a shader with neither push constants nor specialization constants.
    public static let empty = ShaderInterface(pushConstants: [], pushConstantBytes: 0, specializationIDs: [:])

    /// The Swift spelling of a GLSL member name: `heads_q` -> `headsQ`, `Dk` -> `Dk`.
    /// - Parameter glslName: A GLSL member name.
    /// - Returns: The camelCase name its `PushConstantBlock` property must have.
    public static func swiftName(_ glslName: String) -> String {
        var out = ""
        var upper = false
        for c in glslName {
            if c == "_" && !out.isEmpty {
                upper = true
            } else {
                out.append(upper ? Character(c.uppercased()) : c)
                upper = false
            }
        }
        return out
    }
}
