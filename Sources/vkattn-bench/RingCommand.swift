import VkAttnParallel
import ArgumentParser
import VkAttn

struct Ring: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ring attention across N ranks (logical devices): time per call, one device in the same run, overlap, bytes per rank.",
        discussion: """
            median_ms is the span of the GPU intervals of every rank on one host clock (first start to last \
            end) for one call; single_device_ms the same problem on rank 0's device alone. overlap_efficiency \
            = 1 - exposed / copy time (copy time not covered by the rank's compute). bytes_per_rank_per_step \
            is measured; expected_bytes_per_rank_per_step is the paper's formula. --variant all-gather runs \
            the all-gather scheme instead of p2p. --check compares O, LSE (and gradients) with the one-device run.
            """)

    @OptionGroup var options: ParallelOptions
    @OptionGroup var measure: MeasureOptions
    @Option(help: "p2p (the ring) or all-gather.") var variant = RingVariant.p2p
    @Option(name: .customLong("head-slices"), help: "All-gather variant: KV head slices, each prefetched while the previous computes.")
    var headSlices = 2

    func run() throws {
        let scheme: ContextParallelScheme = variant == .p2p ? .ring : .allGather(headSlices: headSlices)
        try ParallelAttentionBenchmark(options: options, measure: measure, scheme: scheme,
                                       op: variant == .p2p ? "ring" : "ring.all-gather").run()
    }
}
