/// Sizes computed from user input, checked: a product that overflows `Int` is a typed error
/// naming the op and the operand, never a trap.
package enum Checked {
    /// The product of `factors`, or `VkAttnError.invalidValue` when it does not fit an `Int`.
    package static func product(op: String, operand: String, _ factors: Int...) throws -> Int {
        var result = 1
        for f in factors {
            let (p, overflow) = result.multipliedReportingOverflow(by: f)
            guard !overflow else {
                throw VkAttnError.invalidValue(op: op, operand: operand, reason: "\(factors.map(String.init).joined(separator: " x ")) overflows")
            }
            result = p
        }
        return result
    }

    /// The sum of `terms`, or `VkAttnError.invalidValue` when it does not fit an `Int`.
    package static func sum(op: String, operand: String, _ terms: [Int]) throws -> Int {
        var result = 0
        for t in terms {
            let (s, overflow) = result.addingReportingOverflow(t)
            guard !overflow else { throw VkAttnError.invalidValue(op: op, operand: operand, reason: "the sum overflows") }
            result = s
        }
        return result
    }
}
