import ArgumentParser
import Dispatch
import Foundation
import Synchronization
import VkAttn
import VkAttnParallel
import VkAttnReference

/// Options of the context-parallel subcommands (ring, ulysses, hybrid).
struct ParallelOptions: ParsableArguments {
    @Option(help: "Ranks (logical devices; default VKATTN_RANKS, else 2).") var ranks: Int?
    @Option(help: "Sequence length.") var seq = 4096
    @Option(help: "Sequences in the batch (each --seq long).") var batch = 1
    @Option(help: "Packed variable-length batch: comma-separated lengths (overrides --seq/--batch).") var varlen: String?
    @Option(help: "Query heads.") var heads = 2
    @Option(name: .customLong("kv-heads"), help: "Key/value heads (default: --heads).") var kvHeads: Int?
    @Option(help: "Head dimension (32, 64, 96, 128, 256).") var dim = 64
    @Option(help: "Storage type.") var dtype = ParallelStorageType.f32
    @Flag(help: "Causal mask.") var causal = false
    @Option(help: "Sliding window: keys kept before each query's diagonal (the keys after it stay unbounded unless --causal or --window-right).")
    var window: Int?
    @Option(name: .customLong("window-right"), help: "Sliding window: keys kept after each query's diagonal.") var windowRight: Int?
    @Option(name: .customLong("block-sparse"), help: """
        Block-sparse mask SIZE:LOCAL: query block r attends key blocks r-LOCAL+1 ... r and a reproducible random half of the \
        LOCAL blocks before those (SIZE 16, 32, 64, 128 or 256; every chunk must start on a block boundary: zigzag needs \
        sequences of a multiple of 2N SIZE tokens, contiguous of N SIZE).
        """)
    var blockSparse: String?
    @Option(help: "Sharding of each sequence over the ranks.") var sharding = SequenceSharding.zigzag
    @Option(help: "Transfer path (default: host-mapped where all memory is host-visible, else imported-host where offered, else staged).") var path: TransferRoute?
    @Flag(help: "Also time the backward pass.") var backward = false
    @Option(help: "Write a Chrome trace (chrome://tracing, Perfetto) of the last timed run to FILE.") var timeline: String?
    @Option(help: "local (ranks are devices of this process) or mpi (one process per rank: mpirun -np N vkattn-bench ...).")
    var backend = Backend.local

    func validate() throws {
        if backend == .local { _ = try Limits.ranks(ranks) }
        try Limits.positive(["--seq": seq, "--batch": batch, "--heads": heads, "--dim": dim])
        try Limits.positive("--kv-heads", kvHeads)
        let tokens = Int(try Limits.cumulative(try lengths(), varlen == nil ? "--seq x --batch" : "--varlen").last ?? 0)
        let e = storage.byteSize
        try Limits.require([("Q", [tokens, heads, dim], e), ("K", [tokens, kvHeads ?? heads, dim], e)])
        try checkWritable(timeline, "--timeline")
        for (name, value) in [("--window", window), ("--window-right", windowRight)] {
            if let value, value < 0 || value > AttentionMask.unboundedWindow {
                throw OptionError("\(name) must be in 0...\(AttentionMask.unboundedWindow), got \(value)")
            }
        }
        _ = try blockPattern()
    }

    /// `--block-sparse SIZE:LOCAL`, parsed (nil without it).
    func blockPattern() throws -> (size: Int, local: Int)? {
        guard let blockSparse else { return nil }
        let parts = blockSparse.split(separator: ":", omittingEmptySubsequences: false).map { Int($0) }
        guard parts.count == 2, let size = parts[0], let local = parts[1], [16, 32, 64, 128, 256].contains(size), (1...(1 << 20)).contains(local) else {
            throw OptionError("--block-sparse takes SIZE:LOCAL (SIZE 16, 32, 64, 128 or 256; LOCAL in 1...\(1 << 20)), got '\(blockSparse)'")
        }
        return (size, local)
    }

    /// The global mask of --causal, --window, --window-right and --block-sparse for sequences
    /// of `lengths` tokens.
    func mask(lengths: [Int]) throws -> AttentionMask {
        var blocks: BlockMask?
        if let (size, local) = try blockPattern() {
            let rows = ((lengths.max() ?? 0) + size - 1) / size
            var rng = SeededRandom(seed: 0x5EED)
            var keep: [[Bool]] = []
            for r in 0..<rows {
                keep.append((0..<rows).map { c in
                    let far = rng.next() % 2 == 0
                    return c <= r && (r - c < local || (r - c < 2 * local && far))
                })
            }
            blocks = BlockMask(blockSize: size, queryBlocks: rows, keyBlocks: rows) { keep[$0][$1] }
        }
        return AttentionMask(causal: causal, windowLeft: window, windowRight: windowRight, blocks: blocks)
    }

    /// The mask in words, for the output.
    func maskLabel(_ mask: AttentionMask) -> String {
        var parts: [String] = []
        if mask.causal { parts.append("causal") }
        if mask.windowLeft != nil || mask.windowRight != nil {
            parts.append("window(\(mask.windowLeft.map(String.init) ?? "inf"),\(mask.windowRight.map(String.init) ?? "inf"))")
        }
        if let b = mask.blocks, let p = try? blockPattern() {
            parts.append("block-sparse \(b.blockSize):\(p.local) (\(b.columnIndices.count) of \(b.queryBlocks * b.queryBlocks) blocks)")
        }
        return parts.isEmpty ? "none" : parts.joined(separator: " ")
    }

    /// `--ranks`, else VKATTN_RANKS, else 2 (validated in `validate`).
    var rankCount: Int { (try? Limits.ranks(ranks)) ?? 2 }
    var storage: DType { dtype.dtype }

    func lengths() throws -> [Int] {
        if let varlen { return try parseList(varlen, "--varlen") }
        guard batch <= 1 << 20 else { throw OptionError("--batch must be at most 2^20, got \(batch)") }
        return [Int](repeating: seq, count: batch)
    }
}

/// Runs an async body from a synchronous command (the main thread waits; the body runs on
/// the cooperative pool).
func blocking<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
    let box = Mutex<Result<T, any Error>?>(nil)
    // The task takes the body out of `work` and drops it before it signals: what the body
    // captured (devices, groups) is released on that task, before the main thread goes on to
    // the teardown and exit, not while the process exits (a driver torn down under a thread
    // still destroying its device crashed at exit, intermittently).
    let work = Mutex<(@Sendable () async throws -> T)?>(body)
    let done = DispatchSemaphore(value: 0)
    Task.detached {
        let result = await runTaking(work)
        box.withLock { $0 = result }
        done.signal()
    }
    done.wait()
    guard let result = box.withLock({ $0 }) else { throw OptionError("no result") }
    return try result.get()
}

/// Runs the body held in `work`, emptying `work` first; the body is released when this returns.
private func runTaking<T: Sendable>(_ work: borrowing Mutex<(@Sendable () async throws -> T)?>) async -> Result<T, any Error> {
    guard let body = work.withLock({ held -> (@Sendable () async throws -> T)? in
        defer { held = nil }
        return held
    }) else { return .failure(OptionError("no work")) }
    do { return .success(try await body()) } catch { return .failure(error) }
}

/// One measured configuration of a parallel scheduler: the bench's JSON contract (op,
/// device, config, path, median/min/max ms, tflops, check, max_rel_error, runs) plus the
/// parallel figures.
struct ParallelRow: Encodable {
    var base: ResultRow
    var ranks: Int
    /// The same problem on one device, in the same run.
    var singleDeviceMs: Double
    var overlapEfficiency: Double
    var exposedCommMs: Double
    var copyMs: Double
    /// Bytes one rank sends per call (the largest over ranks), and per scheduler step.
    var bytesPerRank: Int
    var bytesPerRankPerStep: Double
    /// The paper's formula for the same quantity (the scheduler's `expectedTraffic`).
    var expectedBytesPerRankPerStep: Double
    var steps: Int
    var formula: String
    /// Two-level schedules: the formula's bytes per rank inside a node and between nodes.
    var expectedIntraNodeBytes: Double?
    var expectedInterNodeBytes: Double?

    enum Keys: String, CodingKey {
        case ranks, singleDeviceMs = "single_device_ms", speedup, overlapEfficiency = "overlap_efficiency"
        case exposedCommMs = "exposed_comm_ms", copyMs = "copy_ms", bytesPerRank = "bytes_per_rank"
        case bytesPerRankPerStep = "bytes_per_rank_per_step", expectedBytesPerRankPerStep = "expected_bytes_per_rank_per_step"
        case steps, formula
        case expectedIntraNodeBytes = "expected_intra_node_bytes_per_rank", expectedInterNodeBytes = "expected_inter_node_bytes_per_rank"
    }

    func encode(to encoder: Encoder) throws {
        try base.encode(to: encoder)
        var c = encoder.container(keyedBy: Keys.self)
        try c.encode(ranks, forKey: .ranks)
        try c.encode(singleDeviceMs, forKey: .singleDeviceMs)
        try c.encode(singleDeviceMs / max(base.medianMs, 1e-9), forKey: .speedup)
        try c.encode(overlapEfficiency, forKey: .overlapEfficiency)
        try c.encode(exposedCommMs, forKey: .exposedCommMs)
        try c.encode(copyMs, forKey: .copyMs)
        try c.encode(bytesPerRank, forKey: .bytesPerRank)
        try c.encode(bytesPerRankPerStep, forKey: .bytesPerRankPerStep)
        try c.encode(expectedBytesPerRankPerStep, forKey: .expectedBytesPerRankPerStep)
        try c.encode(steps, forKey: .steps)
        try c.encode(formula, forKey: .formula)
        try c.encodeIfPresent(expectedIntraNodeBytes, forKey: .expectedIntraNodeBytes)
        try c.encodeIfPresent(expectedInterNodeBytes, forKey: .expectedInterNodeBytes)
    }

    func jsonLine() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(self) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }

    static func table(_ rows: [ParallelRow]) -> String {
        let header = ["op", "ranks", "path", "median ms", "1-device ms", "overlap", "exposed ms", "bytes/rank/step", "expected", "check"]
        let body = rows.map { r -> [String] in
            [r.base.op, String(r.ranks), r.base.path, fixed(r.base.medianMs, 1), fixed(r.singleDeviceMs, 1),
             fixed(r.overlapEfficiency, 3), fixed(r.exposedCommMs, 2), fixed(r.bytesPerRankPerStep, 0), fixed(r.expectedBytesPerRankPerStep, 0),
             r.base.check.rawValue + (r.base.maxRelError.map { " (\(String(format: "%.1e", $0)))" } ?? "")]
        }
        return renderTable(header: header, rows: body)
    }
}

extension ParallelRow {
    /// The row of one measured call: `timing` over the timed runs beside the single-device
    /// time; the overlap figures of the median run (`copyNs` and `exposedNs` summed over
    /// `overlapRanks` ranks), the bytes its busiest rank sent and the expected traffic;
    /// `check` passes at or below `bound`.
    static func measured(op: String, device: String, config: [String: ConfigValue], path: String, timing: Timing, flops: Double,
                         check: Double?, bound: Double, ranks: Int, single: Timing, overlapEfficiency: Double, copyNs: Double,
                         exposedNs: Double, overlapRanks: Int, bytesPerRank bytes: Int,
                         expected: ExpectedTraffic) -> ParallelRow {
        let result = check.map { $0 <= bound ? CheckResult.pass : .fail } ?? .skipped
        let base = ResultRow(op: op, device: device, config: config, path: path, timing: timing,
                             tflops: flops / (timing.medianMs * 1e9), check: result, maxRelError: check)
        return ParallelRow(base: base, ranks: ranks, singleDeviceMs: single.medianMs, overlapEfficiency: overlapEfficiency,
                           exposedCommMs: exposedNs / 1e6 / Double(max(1, overlapRanks)), copyMs: copyNs / 1e6 / Double(max(1, overlapRanks)),
                           bytesPerRank: bytes, bytesPerRankPerStep: Double(bytes) / Double(max(1, expected.steps)),
                           expectedBytesPerRankPerStep: expected.bytesPerStep,
                           steps: expected.steps, formula: expected.formula,
                           expectedIntraNodeBytes: expected.intraNodeBytes, expectedInterNodeBytes: expected.interNodeBytes)
    }
}


/// Prints rows (table or JSON Lines) and fails the process on a failed check or a validation
/// message, as BenchContext.report does for single-device rows.
func reportParallel(_ rows: [ParallelRow], json: Bool, log: ValidationLog) throws {
    if json {
        for row in rows { print(row.jsonLine()) }
    } else {
        print(ParallelRow.table(rows))
        for row in rows {
            print("  \(row.base.op): \(row.formula)")
            if let intra = row.expectedIntraNodeBytes, let inter = row.expectedInterNodeBytes {
                print("  \(row.base.op): bytes_per_rank \(row.bytesPerRank) measured; expected intra-node \(Int(intra)) + inter-node \(Int(inter)) = \(Int(intra + inter))")
            }
        }
    }
    let messages = log.drain()
    for message in messages { note("validation: \(message)") }
    if rows.contains(where: { $0.base.check == .fail }) {
        note("error: a --check failed")
        throw ExitCode.failure
    }
    if !messages.isEmpty { throw ExitCode.failure }
}
