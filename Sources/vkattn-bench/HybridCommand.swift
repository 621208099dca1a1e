import ArgumentParser
import VkAttn

struct Hybrid: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "2-D hybrid (heads x context): Ulysses inside groups of --ulysses ranks, ring between groups.",
        discussion: "Columns as `ring`. --ulysses must divide --ranks (1: ring, N: Ulysses).")

    @OptionGroup var options: ParallelOptions
    @OptionGroup var measure: MeasureOptions
    @Option(help: "Ranks per Ulysses group (default 2).") var ulysses = 2

    func run() throws {
        try ParallelAttentionBenchmark(options: options, measure: measure, scheme: .hierarchical(ulysses: ulysses), op: "hybrid").run()
    }
}
