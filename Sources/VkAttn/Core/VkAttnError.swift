/// Errors of VkAttn's ops, thrown before anything is dispatched. Each names the op and the
/// offending operand or value, so that a user sees which call and which argument is wrong.
/// (Errors of the device layer itself arrive as `VulkanError`.)
public enum VkAttnError: Error, Equatable, Sendable, CustomStringConvertible {
    /// An operand's shape is not what the op needs.
    case shapeMismatch(op: String, operand: String, expected: String, actual: String)
    /// An operand's element type is not what the op needs.
    case dtypeMismatch(op: String, operand: String, expected: String, actual: String)
    /// A value (an option, an offset, an index) is out of range or inconsistent.
    case invalidValue(op: String, operand: String, reason: String)
    /// Sparse structure that is malformed: the first bad row is named.
    case malformedSparse(op: String, row: Int, reason: String)
    /// Operands that live on different devices.
    case deviceMismatch(op: String, operand: String)
    /// An operand larger than the device can bind or allocate.
    case tooLarge(op: String, operand: String, bytes: Int, limit: Int)
    /// A configuration this device (or this build) cannot run; the reason says why.
    case unsupported(op: String, reason: String)

    /// One line: the op, then what is wrong with which operand.
    public var description: String {
        switch self {
        case let .shapeMismatch(op, operand, expected, actual):
            return "\(op): \(operand) has shape \(actual), expected \(expected)"
        case let .dtypeMismatch(op, operand, expected, actual):
            return "\(op): \(operand) is \(actual), expected \(expected)"
        case let .invalidValue(op, operand, reason):
            return "\(op): \(operand): \(reason)"
        case let .malformedSparse(op, row, reason):
            return "\(op): malformed sparse matrix at row \(row): \(reason)"
        case let .deviceMismatch(op, operand):
            return "\(op): \(operand) belongs to a different device"
        case let .tooLarge(op, operand, bytes, limit):
            return "\(op): \(operand) needs \(bytes) bytes, the device allows \(limit)"
        case let .unsupported(op, reason):
            return "\(op): unsupported: \(reason)"
        }
    }
}
