import VkAttn
import VkAttnParallel

/// Bytes one rank sends per call by the formulas of the schemes' papers (even split: T = S / N
/// tokens per rank, b bytes per element), and the number of communication steps.
enum Traffic {
    static func expected(_ scheme: ContextParallelScheme, backward: Bool, plan: ShardPlan, heads: (q: Int, kv: Int, d: Int),
                         dtype: DType, outputDType: DType, ranks n: Int, causalMask: Bool) -> (bytes: Double, steps: Int, formula: String) {
        let t = Double(plan.totalTokens) / Double(n)
        let b = Double(dtype.byteSize), hq = Double(heads.q), hkv = Double(heads.kv), d = Double(heads.d)
        func ring(_ r: Int, tokens: Double, kvHeads: Double) -> (Double, Int, String) {
            guard r > 1 else { return (0, 1, "one member: no ring traffic") }
            let kv = 2 * tokens * kvHeads * d * b
            if !backward {
                return (Double(r - 1) * kv, r - 1, "ring (Liu et al.): per step one K and one V block, 2 (S/N) Hkv D b")
            }
            let dkv = 2 * tokens * kvHeads * d * 4
            return (Double(r - 1) * kv + Double(r) * dkv, r,
                    "ring backward: (N-1) K/V blocks 2 (S/N) Hkv D b + N fp32 dK/dV blocks 2 (S/N) Hkv D 4, over N steps")
        }
        func ulysses(_ u: Int) -> (Double, String) {
            guard u > 1 else { return (0, "") }
            let share = Double(u - 1)
            let kvPer = heads.kv % u == 0 ? hkv / Double(u) : 1
            let q = share * t * (hq / Double(u)) * d
            let kv = share * t * kvPer * d
            if !backward {
                return (q * b + 2 * kv * b + q * b + share * t * (hq / Double(u)) * 4,
                        "Ulysses (DeepSpeed): each all-to-all sends (N-1)/N of a rank's tensor; in Q, K, V, out O and LSE")
            }
            return (2 * q * b + 2 * kv * b + q * b + share * t * (hq / Double(u)) * 4 + q * 4 + 2 * kv * 4,
                    "Ulysses backward: in Q, K, V, O, dO, LSE; out fp32 dQ, dK, dV; each (N-1)/N of a rank's tensor")
        }
        switch scheme {
        case .ring:
            return ring(n, tokens: t, kvHeads: hkv)
        case .allToAll:
            let (bytes, formula) = ulysses(n)
            return (bytes, 2, formula)
        case let .hierarchical(u):
            let (a2a, f1) = ulysses(u)
            let kvPer = heads.kv % u == 0 ? hkv / Double(u) : 1
            let (ringBytes, ringSteps, f2) = ring(n / u, tokens: t * Double(u), kvHeads: kvPer)
            return (a2a + ringBytes, ringSteps + (u > 1 ? 2 : 0), "\(f1); \(f2) with S/N -> u S/N tokens and Hkv/u heads")
        case let .allGather(slices):
            guard n > 1 else { return (0, slices, "one rank: no traffic") }
            // Llama 3 gathers everything, 2 (N-1) (S/N) Hkv D b; here only the pieces a rank's
            // queries attend move (under a causal mask, those before them): counted on the plan.
            let causal = causalMask
            let needed = (0..<n).map { (try? plan.keyPieces(neededBy: $0, causal: causal)) ?? [] }
            func tokens(_ r: Int, _ c: Int) -> Double { Double(plan.pieces(rank: r)[c].tokens) }
            let perRank = (0..<n).map { r -> Double in
                let sent = needed.enumerated().filter { $0.offset != r }.reduce(0.0) { total, entry in
                    total + entry.element.filter { $0.rank == r }.reduce(0.0) { $0 + tokens($1.rank, $1.piece) }
                }
                let received = needed[r].reduce(0.0) { $0 + tokens($1.rank, $1.piece) }
                return 2 * hkv * d * (sent * b + (backward ? received * 4 : 0))
            }
            let full = Double(n - 1) * 2 * t * hkv * d * b
            return (perRank.max() ?? 0, slices,
                    (backward ? "all-gather backward: the gather again plus fp32 dK/dV partials of every received piece back to its owner; " : "")
                    + "Llama 3 CP gathers 2 (N-1) (S/N) Hkv D b = \(Int(full)) B per rank; this scheme sends each piece only to the ranks whose queries attend it")
        }
    }
}
