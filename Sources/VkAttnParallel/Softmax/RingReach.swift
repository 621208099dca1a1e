import VkAttn

/// How far each member's K/V block travels along a ring under the mask. At step i member m
/// holds the block of member m - i; `needs[m][s]` says whether m's queries attend any key of
/// s's block. A block travels from its owner s only as far as the last member that needs it,
/// `reach[s]` hops (0: it never leaves its owner); members in between that do not need it
/// still relay it. In the backward its fp32 dK/dV accumulator travels with it and the last
/// member sends it straight back to the owner.
struct RingReach: Sendable {
    let needs: [[Bool]]
    let reach: [Int]

    var size: Int { reach.count }

    /// - Parameters:
    ///   - members: The K/V pieces of each member.
    ///   - queries: The query pieces of each member; nil: `members` (a ring whose members
    ///     hold their own queries; the double ring's inner ring carries another node's K/V).
    ///   - pairs: The piece-pair attention (its mask decides `needs`).
    ///   - wholeRing: Every block visits every member (the double ring, whose traffic is its
    ///     formula's); `needs` still skips the compute of steps the mask empties.
    init(members: [PieceSet], queries: [PieceSet]? = nil, pairs: PairAttention, wholeRing: Bool = false) throws {
        let n = members.count
        let needs = try (queries ?? members).map { q in try members.map { keys in !(try pairs.pairs(queries: q, keys: keys).isEmpty) } }
        self.needs = needs
        reach = (0..<n).map { s in wholeRing ? n - 1 : ((0..<n).last { i in needs[(s + i) % n][s] } ?? 0) }
    }

    /// The hop of the block of `source` when member `m` holds it: m - source mod N.
    func hop(member m: Int, source s: Int) -> Int { (m - s + size) % size }

    /// Whether member m sends the block of `source` on to m + 1.
    func sendsBlock(member m: Int, source s: Int) -> Bool { hop(member: m, source: s) < reach[s] }

    /// Whether member m sends the dK/dV accumulator of `source` (to m + 1, or home when m is
    /// the block's last member).
    func sendsAccumulator(member m: Int, source s: Int) -> Bool { reach[s] > 0 && hop(member: m, source: s) <= reach[s] }

    /// (member, step) pairs whose every piece pair the mask skips: they compute nothing.
    var skippedSteps: Int { needs.reduce(0) { $0 + $1.filter { !$0 }.count } }

    /// Bytes member m sends per call: K and V blocks of `bytesPerToken` each per token, and in
    /// the backward fp32 dK/dV accumulators of `gradientBytesPerToken` each per token.
    func bytes(member m: Int, tokens: [Int], bytesPerToken: Int, gradientBytesPerToken: Int, backward: Bool) -> Int {
        (0..<size).reduce(0) { total, s in
            total + (sendsBlock(member: m, source: s) ? 2 * tokens[s] * bytesPerToken : 0)
                + (backward && sendsAccumulator(member: m, source: s) ? 2 * tokens[s] * gradientBytesPerToken : 0)
        }
    }

    /// Communication steps: the longest travel, plus the trip home in the backward.
    func steps(backward: Bool) -> Int {
        let longest = reach.max() ?? 0
        return max(1, backward && longest > 0 ? longest + 1 : longest)
    }
}
