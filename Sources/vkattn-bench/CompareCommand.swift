import ArgumentParser
import Foundation

struct Compare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ratio table of two result files (JSON Lines from --json, or from Tools/peers).",
        discussion: """
            Rows are matched by op and config (ignoring entries that describe a run, such as seeds), \
            preferring the same path. The ratio is A / B of TFLOP/s where both have it, \
            else of GB/s, else B / A of the median time. A geometric mean per op ends the table.
            """)

    @Argument(help: "Results A (e.g. vkattn-bench suite --json).") var a: String
    @Argument(help: "Results B (e.g. the peer script's output).") var b: String

    func run() throws {
        let left = try ResultFile.load(a), right = try ResultFile.load(b)
        var rows: [[String]] = []
        var logs: [String: [Double]] = [:]
        for x in left {
            let candidates = right.filter { $0.op == x.op && $0.configKey == x.configKey }
            guard let y = candidates.first(where: { $0.path == x.path }) ?? candidates.first else { continue }
            guard let ratio = x.ratio(to: y) else { continue }
            logs[x.op, default: []].append(log(ratio.value))
            rows.append([x.op, x.configKey, x.path, y.path, String(format: "%.4g", ratio.a), String(format: "%.4g", ratio.b),
                         ratio.unit, fixed(ratio.value, 3)])
        }
        guard !rows.isEmpty else {
            throw OptionError("no configuration appears in both \(a) and \(b)")
        }
        print(renderTable(header: ["op", "config", "path A", "path B", "A", "B", "unit", "A/B"], rows: rows))
        print("")
        for (op, values) in logs.sorted(by: { $0.key < $1.key }) {
            print("\(op): geometric mean A/B = \(fixed(exp(values.reduce(0, +) / Double(values.count)), 3)) over \(values.count) configurations")
        }
    }
}

/// One line of a results file, as much of the bench contract as comparing needs.
struct ResultFile {
    let op: String
    let configKey: String
    let path: String
    let medianMs: Double
    let tflops: Double?
    let gbps: Double?

    /// Reads JSON Lines, skipping lines that are not result objects.
    static func load(_ path: String) throws -> [ResultFile] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw OptionError("compare: cannot read '\(path)'")
        }
        let text = String(decoding: data, as: UTF8.self)
        return text.split(separator: "\n").compactMap { line in
            guard let data = line.data(using: .utf8),
                  let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let op = object["op"] as? String, let median = object["median_ms"] as? Double else { return nil }
            let config = (object["config"] as? [String: Any] ?? [:]).filter { !derivedKeys.contains($0.key) }
            let key = config.keys.sorted().map { "\($0)=\(describe(config[$0]))" }.joined(separator: " ")
            return ResultFile(op: op, configKey: key, path: object["path"] as? String ?? "",
                              medianMs: median, tflops: object["tflops"] as? Double, gbps: object["gbps"] as? Double)
        }
    }

    /// Config entries that describe a run rather than the problem (seeds, measured structure,
    /// the kernel picked): ignored when matching rows.
    static let derivedKeys: Set<String> = ["seed", "nnz", "row_cv", "row_max", "validated_on", "kernel", "kept_fraction"]

    static func describe(_ value: Any?) -> String {
        switch value {
        case let v as Bool: return String(v)
        case let v as Int: return String(v)
        case let v as Double: return v == v.rounded() && abs(v) < 1e15 ? String(Int(v)) : String(v)
        case let v as String: return v
        default: return "?"
        }
    }

    func ratio(to other: ResultFile) -> (a: Double, b: Double, unit: String, value: Double)? {
        if let x = tflops, let y = other.tflops, y > 0 { return (x, y, "TFLOP/s", x / y) }
        if let x = gbps, let y = other.gbps, y > 0 { return (x, y, "GB/s", x / y) }
        guard medianMs > 0 else { return nil }
        return (medianMs, other.medianMs, "ms (B/A)", other.medianMs / medianMs)
    }
}
