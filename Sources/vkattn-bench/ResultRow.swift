import VkAttn
import Foundation

/// A JSON scalar for the `config` object of a result.
enum ConfigValue: Encodable, CustomStringConvertible {
    case string(String), int(Int), double(Double), bool(Bool)

    func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case let .string(v): try c.encode(v)
        case let .int(v): try c.encode(v)
        case let .double(v): try c.encode(v)
        case let .bool(v): try c.encode(v)
        }
    }

    var description: String {
        switch self {
        case let .string(v): return v
        case let .int(v): return String(v)
        case let .double(v): return String(v)
        case let .bool(v): return String(v)
        }
    }
}

enum CheckResult: String, Encodable {
    case pass, fail, skipped
}

/// One measured configuration: the bench's output contract, shared by every subcommand.
/// JSON keys: op, device, config, path, median_ms, min_ms, max_ms, gbps or tflops,
/// ratio_to_copy (memory-bound ops), check, max_rel_error (when checked).
struct ResultRow: Encodable {
    var op: String
    var device: String
    var config: [String: ConfigValue]
    var path: String
    var medianMs: Double
    var minMs: Double
    var maxMs: Double
    var gbps: Double?
    var tflops: Double?
    var ratioToCopy: Double?
    var check: CheckResult
    var maxRelError: Double?
    /// Timed runs behind median/min/max.
    var runs: Int

    enum CodingKeys: String, CodingKey {
        case op, device, config, path
        case medianMs = "median_ms", minMs = "min_ms", maxMs = "max_ms"
        case gbps, tflops
        case ratioToCopy = "ratio_to_copy"
        case check
        case maxRelError = "max_rel_error"
        case runs
    }

    func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(op, forKey: .op)
        try c.encode(device, forKey: .device)
        try c.encode(config, forKey: .config)
        try c.encode(path, forKey: .path)
        try c.encode(medianMs, forKey: .medianMs)
        try c.encode(minMs, forKey: .minMs)
        try c.encode(maxMs, forKey: .maxMs)
        try c.encodeIfPresent(gbps, forKey: .gbps)
        try c.encodeIfPresent(tflops, forKey: .tflops)
        try c.encodeIfPresent(ratioToCopy, forKey: .ratioToCopy)
        try c.encode(check, forKey: .check)
        try c.encodeIfPresent(maxRelError, forKey: .maxRelError)
        try c.encode(runs, forKey: .runs)
    }

    init(op: String, device: String, config: [String: ConfigValue], path: String, timing: Timing,
         gbps: Double? = nil, tflops: Double? = nil, ratioToCopy: Double? = nil,
         check: CheckResult, maxRelError: Double? = nil) {
        self.op = op
        self.device = device
        self.config = config
        self.path = path
        self.medianMs = timing.medianMs
        self.minMs = timing.minMs
        self.maxMs = timing.maxMs
        self.gbps = gbps
        self.tflops = tflops
        self.ratioToCopy = ratioToCopy
        self.check = check
        self.maxRelError = maxRelError
        self.runs = timing.samplesMs.count
    }

    func jsonLine() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(self) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }

    static func table(_ rows: [ResultRow]) -> String {
        let header = ["op", "path", "config", "median ms", "min ms", "max ms", "runs", "GB/s", "TFLOP/s", "ratio", "check"]
        let body = rows.map { r -> [String] in
            [r.op, r.path,
             r.config.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "),
             fixed(r.medianMs, 4), fixed(r.minMs, 4), fixed(r.maxMs, 4), String(r.runs),
             r.gbps.map { fixed($0, 2) } ?? "-", r.tflops.map { $0 < 1 ? fixed($0, 4) : fixed($0, 2) } ?? "-",
             r.ratioToCopy.map { fixed($0, 3) } ?? "-",
             r.check.rawValue + (r.maxRelError.map { " (\(String(format: "%.1e", $0)))" } ?? "")]
        }
        return renderTable(header: header, rows: body)
    }
}

func fixed(_ value: Double, _ digits: Int) -> String {
    String(format: "%.\(digits)f", value)
}

func renderTable(header: [String], rows: [[String]]) -> String {
    var widths = header.map(\.count)
    for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0) }
            .joined(separator: "  ").trimmingCharacters(in: .whitespaces)
    }
    return ([line(header), line(widths.map { String(repeating: "-", count: $0) })] + rows.map(line)).joined(separator: "\n")
}

/// The relative-L2 bound of `--check` for outputs stored as `dtype`: the rounding of the
/// stored result dominates (f16 2^-11, bf16 2^-8 per element), accumulation is fp32.
func checkBound(_ dtype: DType) -> Double {
    switch dtype {
    case .f16: return 2e-3
    case .bf16: return 8e-3
    default: return 1e-5
    }
}

/// A bad option value: one line on stderr and exit status 1 (ArgumentParser prints a
/// `ValidationError` with the whole usage text and exit status 64).
struct OptionError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
