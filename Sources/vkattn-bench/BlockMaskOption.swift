import VkAttn
import VkAttnReference

/// `attention --block-mask`: a random block-sparse pattern shared by every head (SIZE:DENSITY),
/// or S2-Attention's per-head sharding (s2:LOCAL:STRIDE[:SIZE]). Parsed in `validate()`, so a bad
/// value is a one-line error before any device work.
enum BlockMaskOption {
    case random(size: Int, density: Double)
    case s2(local: Int, stride: Int, size: Int)

    static let usage = "--block-mask takes SIZE:DENSITY (density in 0...1) or s2:LOCAL:STRIDE[:SIZE] (local >= 0 blocks, stride in 1...heads, "
        + "SIZE one of \(BlockMask.supportedBlockSizes), 64 unless given)"

    init(_ text: String, heads: Int) throws {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        if parts.first == "s2" {
            guard parts.count == 3 || parts.count == 4, let local = Int(parts[1]), let stride = Int(parts[2]),
                  let size = parts.count == 4 ? Int(parts[3]) : 64 else {
                throw OptionError("\(Self.usage), got '\(text)'")
            }
            guard local >= 0, stride >= 1, stride <= heads, BlockMask.supportedBlockSizes.contains(size) else {
                throw OptionError("\(Self.usage) (--heads \(heads)), got '\(text)'")
            }
            self = .s2(local: local, stride: stride, size: size)
            return
        }
        guard parts.count == 2, let size = Int(parts[0]), let density = Double(parts[1]), BlockMask.supportedBlockSizes.contains(size),
              (0...1).contains(density) else {
            throw OptionError("\(Self.usage), got '\(text)'")
        }
        self = .random(size: size, density: density)
    }

    /// ceil(positions / size) without overflow for any size.
    private func blocks(_ positions: Int, _ size: Int) -> Int { positions / size + (positions % size == 0 ? 0 : 1) }

    /// The mask over `maxQ` x `maxK` positions for `heads` query heads (random blocks drawn from `rng`).
    func mask(maxQ: Int, maxK: Int, heads: Int, causal: Bool, _ rng: inout SeededRandom) throws -> BlockMask {
        switch self {
        case let .random(size, density):
            return BlockMask(blockSize: size, queryBlocks: blocks(maxQ, size), keyBlocks: blocks(maxK, size)) { r, c in
                r == c || Double(rng.next() % 1_000_000) / 1e6 < density
            }
        case let .s2(local, stride, size):
            return try BlockMask.s2Attention(blockSize: size, queryBlocks: blocks(maxQ, size), keyBlocks: blocks(maxK, size),
                                             heads: heads, localBlocks: local, stride: stride, causal: causal)
        }
    }
}
