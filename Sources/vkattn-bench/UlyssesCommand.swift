import ArgumentParser
import VkAttn

struct Ulysses: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ulysses (all-to-all sequence -> heads, local attention, all-to-all back) across N ranks.",
        discussion: "Columns as `ring`. Query heads must be divisible by the ranks; KV heads divisible by, or a divisor of, the ranks.")

    @OptionGroup var options: ParallelOptions
    @OptionGroup var measure: MeasureOptions

    func run() throws {
        try ParallelAttentionBenchmark(options: options, measure: measure, scheme: .allToAll, op: "ulysses").run()
    }
}
