import ArgumentParser
import Foundation
import VkAttn
import VkAttnParallel

struct Placement: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "placement",
        abstract: "Data-aware placement of a packed batch across N ranks beside the naive plan: groups, predicted and measured per-rank time, imbalance, bytes.",
        discussion: """
            The batch (--lengths 1x8192,4x2048,32x128: COUNTxLENGTH items or plain lengths) runs twice in \
            one run: placed by PlacementPlan (each sequence on a group of consecutive ranks sized to its \
            cost; short ones whole on one rank) and by the naive plan (every sequence over every rank, \
            zigzag). For each: the groups, per rank the predicted time (PlacementCostModel, with the \
            device's throughput measured by the one-device call over the whole batch and the link \
            bandwidths of --intra-node-gbps / --inter-node-gbps / --ranks-per-node), the measured busy \
            time (the union of the rank's GPU compute intervals in the median run) and the bytes it sent; \
            predicted and measured imbalance (max / mean) and the median span. --check compares O, LSE \
            (and the gradients) with the one-device packed FlashAttention over the whole batch.
            """)

    @OptionGroup var options: PlacementOptions
    @OptionGroup var measure: MeasureOptions

    func run() throws { try PlacementBenchmark(options: options, measure: measure).run() }
}

/// Options of `placement` (its own struct: the batch is a list, not --seq/--batch).
struct PlacementOptions: ParsableArguments {
    @Option(help: "Ranks (logical devices; default VKATTN_RANKS, else 2).") var ranks: Int?
    @Option(help: "The packed batch: comma-separated COUNTxLENGTH items or plain lengths.") var lengths = "1x8192,4x2048,32x128"
    @Option(help: "Query heads.") var heads = 2
    @Option(name: .customLong("kv-heads"), help: "Key/value heads (default: --heads).") var kvHeads: Int?
    @Option(help: "Head dimension (32, 64, 96, 128, 256).") var dim = 64
    @Option(help: "Storage type.") var dtype = ParallelStorageType.f32
    @Flag(help: "Causal mask.") var causal = false
    @Flag(help: "Also time the backward pass.") var backward = false
    @Option(name: .customLong("ranks-per-node"), help: "Consecutive ranks per node in the cost model (default: all ranks in one node).")
    var ranksPerNode: Int?
    @Option(name: .customLong("intra-node-gbps"), help: "Cost model: GB/s between ranks of one node.") var intraNodeGBps = 10.0
    @Option(name: .customLong("inter-node-gbps"), help: "Cost model: GB/s between nodes.") var interNodeGBps = 1.0
    @Option(help: "Transfer path (default: host-mapped where all memory is host-visible, else imported-host where offered, else staged).") var path: TransferRoute?
    @Option(help: "Write a Chrome trace (chrome://tracing, Perfetto) of the placed plan's last timed run to FILE.") var timeline: String?

    func validate() throws {
        _ = try Limits.ranks(ranks)
        try Limits.positive(["--heads": heads, "--dim": dim])
        try Limits.positive("--kv-heads", kvHeads)
        if let ranksPerNode, !(1...Limits.maxRanks).contains(ranksPerNode) {
            throw OptionError("--ranks-per-node must be in 1...\(Limits.maxRanks), got \(ranksPerNode)")
        }
        for (name, value) in [("--intra-node-gbps", intraNodeGBps), ("--inter-node-gbps", interNodeGBps)] where !(value > 0 && value <= 1e6) {
            throw OptionError("\(name) must be in (0, 1e6], got \(value)")
        }
        let tokens = Int(try Limits.cumulative(try batch(), "--lengths").last ?? 0)
        let e = dtype.dtype.byteSize
        try Limits.require([("Q", [tokens, heads, dim], e), ("K", [tokens, kvHeads ?? heads, dim], e)])
        try checkWritable(timeline, "--timeline")
    }

    var rankCount: Int { (try? Limits.ranks(ranks)) ?? 2 }

    /// `--lengths`: "3x128" is three sequences of 128 tokens; "77" one of 77.
    func batch() throws -> [Int] {
        var out: [Int] = []
        for item in lengths.split(separator: ",") {
            let parts = item.trimmingCharacters(in: .whitespaces).split(separator: "x", omittingEmptySubsequences: false)
            guard (1...2).contains(parts.count), let length = Int(parts[parts.count - 1]), length >= 0,
                  let count = parts.count == 2 ? Int(parts[0]) : 1, (0...(1 << 20)).contains(count), out.count + count <= 1 << 20 else {
                throw OptionError("--lengths takes comma-separated COUNTxLENGTH items or lengths (at most 2^20 sequences), got '\(item)'")
            }
            out += [Int](repeating: length, count: count)
        }
        guard !out.isEmpty else { throw OptionError("--lengths is empty") }
        return out
    }
}
