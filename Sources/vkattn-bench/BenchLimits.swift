import Foundation
#if canImport(Glibc)
import Glibc
#endif
import VkAttn

/// Sizes from options, checked before anything is allocated (issue 13): positive, their products
/// without overflow, every operand within what one binding can hold. `validate()` checks against
/// Vulkan's ceiling (no device yet); `run()` checks again against the device's
/// maxStorageBufferRange before the host data is made. Errors are one-line `OptionError`s.
enum Limits {
    /// maxStorageBufferRange is a 32-bit byte count: no operand bound whole is larger anywhere.
    static let bindableBytes = Int(UInt32.max)

    /// Throws unless every value is at least 1.
    static func positive(_ values: KeyValuePairs<String, Int>) throws {
        for (name, value) in values where value < 1 { throw OptionError("\(name) must be >= 1, got \(value)") }
    }

    /// Throws unless `value` (when given) is at least 1.
    static func positive(_ name: String, _ value: Int?) throws {
        if let value, value < 1 { throw OptionError("\(name) must be >= 1, got \(value)") }
    }

    /// The bytes of an operand of `shape` with `element`-byte elements, or an error when the
    /// product overflows.
    static func bytes(_ name: String, _ shape: [Int], element: Int) throws -> Int {
        var bytes = element
        for d in shape {
            let (p, overflow) = bytes.multipliedReportingOverflow(by: max(d, 0))
            guard !overflow else { throw OptionError("\(name) \(shape) is too large (the size overflows)") }
            bytes = p
        }
        return bytes
    }

    /// Throws unless every operand fits `limit` bytes (default: Vulkan's ceiling).
    static func require(_ operands: [(name: String, shape: [Int], element: Int)], limit: Int = bindableBytes) throws {
        for o in operands {
            let b = try bytes(o.name, o.shape, element: o.element)
            guard b <= limit else {
                throw OptionError("\(o.name) \(o.shape) would take \(b) bytes, more than one binding holds (\(limit) bytes\(limit == bindableBytes ? " in Vulkan" : " on this device"))")
            }
        }
    }

    /// `require` against the device's maxStorageBufferRange.
    static func require(_ operands: [(name: String, shape: [Int], element: Int)], on context: BenchContext) throws {
        try require(operands, limit: context.device.capabilities.maxStorageBufferRange)
    }

    /// Cumulative lengths (the packed layouts' cu_seqlens), within 32 bits.
    static func cumulative(_ lengths: [Int], _ option: String) throws -> [Int32] {
        var out: [Int32] = [0]
        var total = 0
        for l in lengths {
            total += l
            guard l >= 0, total <= Int(Int32.max) else { throw OptionError("\(option): \(total) tokens in all are more than 32-bit offsets hold") }
            out.append(Int32(total))
        }
        return out
    }

    /// In-process ranks are logical devices of this machine: more than this is a typo.
    static let maxRanks = 256

    /// `--ranks`, else `VKATTN_RANKS`, else 2; an invalid value (flag or variable) is an error.
    static func ranks(_ option: Int?) throws -> Int {
        if let option {
            guard (1...maxRanks).contains(option) else { throw OptionError("--ranks must be in 1...\(maxRanks), got \(option)") }
            return option
        }
        if let raw = EnvironmentKey.value(of: "VKATTN_RANKS") {
            guard let n = Int(raw), (1...maxRanks).contains(n) else { throw OptionError("VKATTN_RANKS must be a number in 1...\(maxRanks), got '\(raw)'") }
            return n
        }
        return 2
    }
}

/// Throws unless `path` (when given) can be created or written, checked before any work is
/// done (opened for appending, so an existing file is left as it is).
func checkWritable(_ path: String?, _ option: String) throws {
    guard let path else { return }
    let existed = FileManager.default.fileExists(atPath: path)
    guard let file = fopen(path, "a") else { throw OptionError("\(option): cannot write '\(path)' (errno \(errno))") }
    fclose(file)
    if !existed { unlink(path) }
}
