/// A 32-bit value that can go into a push-constant block (std430: 4-byte scalars).
public protocol PushConstantScalar: Sendable {
    var pushWord: UInt32 { get }
}
extension UInt32: PushConstantScalar { public var pushWord: UInt32 { self } }
extension Int32: PushConstantScalar { public var pushWord: UInt32 { UInt32(bitPattern: self) } }
extension Float: PushConstantScalar { public var pushWord: UInt32 { bitPattern } }
extension Bool: PushConstantScalar { public var pushWord: UInt32 { self ? 1 : 0 } }

/// The push constants of one dispatch, as 32-bit words in declaration order.
public struct PushConstants: Sendable, ExpressibleByArrayLiteral {
    public var words: [UInt32]

    public init(_ values: [any PushConstantScalar]) { words = values.map(\.pushWord) }
    public init(arrayLiteral values: any PushConstantScalar...) { self.init(values) }

    public mutating func append(_ value: some PushConstantScalar) { words.append(value.pushWord) }

    /// Appends an Int as a u32, or throws when it does not fit (negative or >= 2^32).
    public mutating func append(u32 value: Int, _ what: @autoclosure () -> String) throws {
        guard let v = UInt32(exactly: value) else {
            throw VulkanError.invalidArgument("\(what()) = \(value) does not fit in 32 bits")
        }
        words.append(v)
    }

    public var byteCount: Int { words.count * 4 }
}
