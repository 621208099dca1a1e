import ArgumentParser
import Foundation
import VkAttn

/// The device a bench run uses, its validation log, and how results are printed.
struct BenchContext {
    let device: Device
    let log: ValidationLog

    init(_ options: DeviceOptions) throws {
        let log = BenchTeardown.log()
        let instance = try Instance(log: log)
        self.device = try Device(physicalDevice: instance.selectDevice(options.device))
        self.log = log
        BenchTeardown.watch([device])
    }

    var deviceName: String { device.capabilities.name }

    /// Prints `rows` as a table or as JSON Lines; fails the process when a check failed or
    /// validation complained.
    func report(_ rows: [ResultRow], json: Bool) throws {
        if json {
            for row in rows { print(row.jsonLine()) }
        } else {
            print(ResultRow.table(rows))
        }
        let messages = log.drain()
        for message in messages {
            FileHandle.standardError.write(Data("validation: \(message)\n".utf8))
        }
        if rows.contains(where: { $0.check == .fail }) {
            FileHandle.standardError.write(Data("error: a --check failed\n".utf8))
            throw ExitCode.failure
        }
        if !messages.isEmpty { throw ExitCode.failure }
    }
}

/// Options of every measuring subcommand.
struct MeasureOptions: ParsableArguments {
    @Option(help: "Untimed runs before timing.") var warmup = 5
    @Option(help: "Timed runs (median, min and max are reported).") var iterations = 30
    @Flag(help: "Compare the results with the reference (check: pass or fail; exit status 1 on fail).") var check = false
    @Flag(help: "One JSON object per configuration (JSON Lines).") var json = false

    func validate() throws {
        guard (0...Timing.maxIterations).contains(warmup) else { throw OptionError("--warmup must be in 0...\(Timing.maxIterations)") }
        guard (1...Timing.maxIterations).contains(iterations) else {
            throw OptionError("--iterations must be in 1...\(Timing.maxIterations)")
        }
    }
}

/// `--bytes`: a positive multiple of 4 with an optional K, M or G suffix.
struct ByteCountOption: ParsableArguments {
    // Kept as text and parsed in `validate`, so that a bad value is a one-line error.
    @Option(name: .customLong("bytes"), help: "Bytes (a multiple of 4; suffixes K, M, G).") var bytesText = "256M"

    var bytes: Int { parseBytes(bytesText) ?? 0 }

    func validate() throws {
        guard parseBytes(bytesText) != nil else { throw OptionError("--bytes: '\(bytesText)' is not a positive size like 4096, 64K, 256M") }
        guard bytes % 4 == 0 else { throw OptionError("--bytes must be a multiple of 4, got \(bytes)") }
        try Limits.require([("--bytes", [bytes], 1)])
    }
}

/// Parses 4096, 64K, 32M, 1G (binary multiples).
func parseBytes(_ text: String) -> Int? {
    let units: [Character: Int] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30]
    var digits = Substring(text.uppercased())
    var scale = 1
    if digits.hasSuffix("B") { digits = digits.dropLast() }
    if let last = digits.last, let unit = units[last] {
        scale = unit
        digits = digits.dropLast()
    }
    guard let value = Int(digits), value > 0 else { return nil }
    let (bytes, overflow) = value.multipliedReportingOverflow(by: scale)
    return overflow ? nil : bytes
}

func formatBytes(_ bytes: Int) -> String {
    if bytes >= 1 << 30 && bytes % (1 << 30) == 0 { return "\(bytes >> 30) GiB" }
    if bytes >= 1 << 20 && bytes % (1 << 20) == 0 { return "\(bytes >> 20) MiB" }
    if bytes >= 1 << 10 && bytes % (1 << 10) == 0 { return "\(bytes >> 10) KiB" }
    return "\(bytes) B"
}

/// A line on standard error (notes that must not mix with --json output).
func note(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}
