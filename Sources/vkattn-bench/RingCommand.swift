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
            the all-gather scheme instead of p2p, --variant token TokenRing (queries travel one way, partials \
            return), --variant auto the K/V ring or TokenRing by bytes per link direction (both printed). \
            --ranks-per-node K < N runs the double ring (inner ring per node of K ranks, outer ring between \
            nodes; intra- and inter-node bytes printed). --check compares O, LSE (and gradients) with the \
            one-device run.
            """)

    @OptionGroup var options: ParallelOptions
    @OptionGroup var measure: MeasureOptions
    @Option(help: "p2p (the K/V ring), all-gather, token (TokenRing) or auto (the K/V ring or TokenRing by bytes).")
    var variant = RingVariant.p2p
    @Option(name: .customLong("head-slices"), help: "All-gather variant: KV head slices, each prefetched while the previous computes.")
    var headSlices = 2
    @Option(name: .customLong("ranks-per-node"), help: "p2p variant: ranks per node; fewer than --ranks runs the double ring (must divide --ranks).")
    var ranksPerNode: Int?

    func validate() throws {
        guard let ranksPerNode else { return }
        guard variant == .p2p else { throw OptionError("--ranks-per-node takes --variant p2p, got \(variant.rawValue)") }
        // Under MPI the world's size is known only at run time: validate checks it there.
        let n = options.backend == .mpi ? ranksPerNode : options.rankCount
        guard ranksPerNode >= 1, ranksPerNode <= n, n % ranksPerNode == 0 else {
            throw OptionError("--ranks-per-node must divide --ranks \(n), got \(ranksPerNode)")
        }
    }

    func run() throws {
        let scheme: ContextParallelScheme
        switch variant {
        case .p2p:
            scheme = ranksPerNode.map { options.backend == .mpi || $0 < options.rankCount ? .doubleRing(ranksPerNode: $0) : .ring } ?? .ring
        case .allGather:
            scheme = .allGather(headSlices: headSlices)
        case .token:
            scheme = .tokenRing
        case .auto:
            let plan = try ShardPlan(lengths: try options.lengths(), ranks: options.rankCount, sharding: options.sharding)
            let op = ContextParallelAttention(plan: plan, attention: FlashAttention(mask: options.causal ? .causal : .none))
            let shape = ContextParallelAttention.Shape(headsQ: options.heads, headsKV: options.kvHeads ?? options.heads,
                                                       headDim: options.dim, dtype: options.storage)
            let choice = try op.ringChoice(shape, backward: options.backward)
            scheme = choice.scheme
            print("ring choice (\(options.backward ? "backward" : "forward")): kv-ring \(Int(choice.kvRing.bytes)) B/rank "
                  + "(one direction \(Int(choice.kvRingDirectionBytes)) B), token-ring \(Int(choice.tokenRing.bytes)) B/rank "
                  + "(busier direction \(Int(choice.tokenRingDirectionBytes)) B) -> \(choice.scheme)")
        }
        let name: String
        switch scheme {
        case .allGather: name = "ring.all-gather"
        case .tokenRing: name = "ring.token"
        case .doubleRing: name = "ring.double"
        default: name = "ring"
        }
        try ParallelAttentionBenchmark(options: options, measure: measure, scheme: scheme, op: name).run()
    }
}
