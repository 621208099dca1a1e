/// A 32-bit value that can go into a push-constant block (std430: 4-byte scalars).
public protocol PushConstantScalar: Sendable {
    /// The value's 32 bits as the shader reads them.
    var pushWord: UInt32 { get }
    /// The GLSL type this Swift type mirrors.
    static var glslScalar: ShaderInterface.Scalar { get }
}
/// `uint` members.
extension UInt32: PushConstantScalar {
    /// The value itself.
    public var pushWord: UInt32 { self }
    /// `uint`.
    public static var glslScalar: ShaderInterface.Scalar { .uint }
}
/// `int` members.
extension Int32: PushConstantScalar {
    /// The two's complement bits.
    public var pushWord: UInt32 { UInt32(bitPattern: self) }
    /// `int`.
    public static var glslScalar: ShaderInterface.Scalar { .int }
}
/// `float` members.
extension Float: PushConstantScalar {
    /// The IEEE 754 bits.
    public var pushWord: UInt32 { bitPattern }
    /// `float`.
    public static var glslScalar: ShaderInterface.Scalar { .float }
}
/// `bool` members (one 32-bit word, 0 or 1).
extension Bool: PushConstantScalar {
    /// 1 for true, 0 for false.
    public var pushWord: UInt32 { self ? 1 : 0 }
    /// `bool`.
    public static var glslScalar: ShaderInterface.Scalar { .bool }
}

/// The Swift twin of a GLSL `layout(push_constant)` block: a struct whose stored properties
/// are the block's members in the same order, each named as the GLSL member in camelCase
/// (`heads_q` -> `headsQ`) and typed `UInt32`, `Int32`, `Float` or `Bool` for `uint`, `int`,
/// `float`, `bool`. `Stream.dispatch` compares names, types and count with the shader's
/// `ShaderInterface` on every dispatch and throws on any difference, so a member added,
/// removed, renamed or reordered on one side only is an error, never a shifted value.
///
/// ```swift
/// struct CopyPush: PushConstantBlock { var words: UInt32 }   // GLSL: uint words;
/// try stream.dispatch(kernel, bindings: [src, dst], push: CopyPush(words: n), groups: (g, 1, 1))
/// ```
public protocol PushConstantBlock: Sendable {}

/// A block's words, checked against a shader's interface.
struct PushConstantWords {
    var words: [UInt32] = []

    var byteCount: Int { words.count * 4 }

    /// The words of `block`, or a typed error naming the first member that does not match
    /// `interface` (the shader `shader`'s).
    init(_ block: some PushConstantBlock, interface: ShaderInterface, shader: String) throws {
        let children = Array(Mirror(reflecting: block).children)
        let expected = interface.pushConstants
        let swiftNames = children.map { $0.label ?? "_" }
        guard children.count == expected.count else {
            throw VulkanError.invalidArgument("kernel \(shader): push-constant block \(type(of: block)) has \(children.count) members \(swiftNames), the shader's has \(expected.count) \(expected.map(\.swiftName))")
        }
        for (child, member) in zip(children, expected) {
            let name = member.swiftName
            guard child.label == name else {
                throw VulkanError.invalidArgument("kernel \(shader): push-constant member \(child.label ?? "_") of \(type(of: block)) stands where the shader has \(member.type.rawValue) \(member.name) (Swift: \(name))")
            }
            guard let scalar = child.value as? any PushConstantScalar, type(of: scalar).glslScalar == member.type else {
                throw VulkanError.invalidArgument("kernel \(shader): push-constant member \(name) of \(type(of: block)) is \(type(of: child.value)), the shader's \(member.name) is \(member.type.rawValue)")
            }
            words.append(scalar.pushWord)
        }
    }

    init() {}
}

/// Checked conversion of sizes and counts into `uint` push constants.
extension UInt32 {
    /// `value` as a u32 push constant, or a typed error naming it when it does not fit
    /// (negative or >= 2^32).
    /// - Parameters:
    ///   - value: a size, count or offset.
    ///   - what: its name, for the error.
    /// - Throws: `VulkanError.invalidArgument`.
    public init(pushing value: Int, _ what: @autoclosure () -> String) throws {
        guard let v = UInt32(exactly: value) else {
            throw VulkanError.invalidArgument("\(what()) = \(value) does not fit in 32 bits")
        }
        self = v
    }
}
