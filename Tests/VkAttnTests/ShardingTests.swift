import Testing
import VkAttn
import VkAttnParallel
import TestSupport

/// The host-side sharding every caller uses (tests, the bench, the MPI harness): `ShardPlan`
/// for packed sequences and `ContiguousSplit` for one contiguous axis, each with `unshard` as
/// the inverse of `shard`. Random sizes and values; messages carry the seed.
@Suite("Sharding: shard and unshard")
struct ShardingTests {
    /// Values that name their own position, so a misplaced element shows.
    static func iota(_ count: Int) -> [Int] { Array(0..<count) }

    @Test func contiguousSplitRoundTripsAndMatchesTheLayout() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        for trial in 0..<40 {
            let ranks = Int.random(in: 1...5, using: &rng)
            // Empty ranges included.
            let lengths = (0..<ranks).map { _ in Int.random(in: 0...7, using: &rng) }
            let outer = Int.random(in: 0...3, using: &rng), inner = Int.random(in: 1...4, using: &rng)
            let split = try ContiguousSplit(lengths: lengths)
            let total = lengths.reduce(0, +)
            #expect(split.ranks == ranks && split.total == total)
            let global = Self.iota(outer * total * inner)
            var parts: [[Int]] = []
            var start = 0
            for r in 0..<ranks {
                let part = try split.shard(global, outer: outer, inner: inner, rank: r)
                #expect(try split.range(rank: r) == start..<(start + lengths[r]))
                // Element (o, t, i) of the part is element (o, start + t, i) of the whole.
                var want: [Int] = []
                for o in 0..<outer {
                    for t in 0..<lengths[r] {
                        for i in 0..<inner { want.append((o * total + start + t) * inner + i) }
                    }
                }
                #expect(part == want, "trial \(trial) lengths \(lengths) outer \(outer) inner \(inner) rank \(r), seed \(seed)")
                parts.append(part)
                start += lengths[r]
            }
            #expect(try split.unshard(parts, outer: outer, inner: inner) == global, "trial \(trial) lengths \(lengths), seed \(seed)")
        }
    }

    @Test func contiguousSplitEvenLengths() throws {
        for (total, ranks) in [(10, 3), (3, 5), (0, 2), (64, 4)] {
            let split = try ContiguousSplit(total: total, ranks: ranks)
            #expect(split.lengths == ContextParallelLinearAttention.evenLengths(total: total, ranks: ranks))
            #expect(split.total == total)
        }
    }

    @Test func contiguousSplitRefusesWhatDoesNotFit() throws {
        func expectError(_ needle: String, _ body: () throws -> Void) {
            do {
                try body()
                Issue.record("expected an error containing \(needle)")
            } catch {
                #expect("\(error)".contains("parallel.contiguousSplit") && "\(error)".contains(needle), "\(error)")
            }
        }
        expectError("lengths") { _ = try ContiguousSplit(lengths: []) }
        expectError("lengths") { _ = try ContiguousSplit(lengths: [2, -1]) }
        expectError("lengths") { _ = try ContiguousSplit(lengths: [Int.max, 1]) }
        expectError("ranks") { _ = try ContiguousSplit(total: 4, ranks: 0) }
        let split = try ContiguousSplit(lengths: [2, 3])
        expectError("global") { _ = try split.shard([1, 2, 3], outer: 1, inner: 1, rank: 0) }
        expectError("rank") { _ = try split.shard([1, 2, 3, 4, 5], outer: 1, inner: 1, rank: 2) }
        expectError("inner") { _ = try split.shard([Int](), outer: 1, inner: -1, rank: 0) }
        expectError("outer x length x inner") { _ = try split.shard([1], outer: Int.max, inner: 2, rank: 0) }
        expectError("parts") { _ = try split.unshard([[1, 2]], outer: 1, inner: 1) }
        expectError("parts[1]") { _ = try split.unshard([[1, 2], [3, 4]], outer: 1, inner: 1) }
    }

    /// Every sharding on ragged packed lengths (an empty sequence, lengths that do not divide):
    /// the ranks' tokens partition the whole, and unshard inverts shard for rows and columns.
    @Test(arguments: SequenceSharding.allCases)
    func shardPlanRoundTrips(sharding: SequenceSharding) throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        for trial in 0..<20 {
            let ranks = Int.random(in: 1...4, using: &rng)
            var lengths = (0..<Int.random(in: 1...4, using: &rng)).map { _ in Int.random(in: 0...23, using: &rng) }
            lengths[0] += 2 * ranks  // every rank gets a token under every sharding
            let plan = try ShardPlan(lengths: lengths, ranks: ranks, sharding: sharding)
            let width = Int.random(in: 1...3, using: &rng), heads = Int.random(in: 1...3, using: &rng)
            let what = "trial \(trial) \(sharding) lengths \(lengths) ranks \(ranks), seed \(seed)"
            let owned = (0..<ranks).flatMap { plan.globalTokens(rank: $0) }
            #expect(owned.sorted() == Array(0..<plan.totalTokens), "\(what)")
            let rows = Self.iota(plan.totalTokens * width)
            let rowParts = (0..<ranks).map { plan.shard(rows, width: width, rank: $0) }
            for r in 0..<ranks { #expect(rowParts[r].count == plan.tokens(rank: r) * width, "\(what)") }
            #expect(plan.unshard(rowParts, width: width, fill: -1) == rows, "\(what)")
            let columns = Self.iota(heads * plan.totalTokens)
            let columnParts = (0..<ranks).map { plan.shardColumns(columns, heads: heads, rank: $0) }
            #expect(plan.unshardColumns(columnParts, heads: heads, fill: -1) == columns, "\(what)")
        }
    }

    /// A contiguous plan of equal lengths is the contiguous split of each sequence.
    @Test func contiguousPlanAgreesWithContiguousSplit() throws {
        let (sequences, length, ranks, width) = (3, 12, 4, 2)
        let plan = try ShardPlan(lengths: [Int](repeating: length, count: sequences), ranks: ranks, sharding: .contiguous)
        let split = try ContiguousSplit(total: length, ranks: ranks)
        let global = Self.iota(sequences * length * width)
        for r in 0..<ranks {
            #expect(plan.shard(global, width: width, rank: r) == (try split.shard(global, outer: sequences, inner: width, rank: r)))
        }
    }
}
