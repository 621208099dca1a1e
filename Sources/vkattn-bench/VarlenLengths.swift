import VkAttnReference

/// Sequence lengths for every bench's `--varlen`: the `batch` x `length` tokens of the dense
/// problem cut into sequences of seeded random lengths (each at most 2 `length`), with one of
/// length 1 and one empty among them whenever there are two tokens or more, shuffled. The
/// packed batch moves as many tokens as the dense one, and always holds the awkward cases.
enum VarlenLengths {
    static func make(batch: Int, length: Int, rng: inout SeededRandom) -> [Int] {
        let total = batch * length
        guard total > 1 else { return [total] }
        var lengths = [1, 0]
        var left = total - 1
        while left > 0 {
            let n = min(left, 1 + Int(rng.next() % UInt64(2 * max(1, length))))
            lengths.append(n)
            left -= n
        }
        lengths.shuffle(using: &rng)
        return lengths
    }

    static func cumulative(_ lengths: [Int]) -> [Int32] { lengths.reduce(into: [Int32(0)]) { $0.append($0.last! + Int32($1)) } }
}
