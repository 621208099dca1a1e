import Testing
import VkAttn
import TestSupport

/// lavapipe stops any invocation's loops after 65535 iterations in total (silently): long key
/// or query ranges must be split so that results stay exact there.
@Suite("Flash attention on devices that cap loop iterations")
struct AttentionLoopBudgetTests {
    @Test func longKeyRangeForwardAndBackward() throws {
        let seed = testSeed()
        try withDevice { device in
            let c = AttentionCase(seed: seed, sq: 6, sk: 24_000, headsQ: 1, headDim: 256,
                                  attention: FlashAttention(mask: AttentionMask(causal: true)))
            let (q, k, v) = try c.tensors(device)
            let stream = try device.makeStream()
            let out = try c.attention.forward(q: q, k: k, v: v, on: stream)
            try stream.synchronize()
            if device.capabilities.loopIterationLimit != nil {
                #expect(out.path.contains("loop-capped"), "\(out.path)")
            }
            let ref = AttentionReference.forward(try c.problem, q: c.q, k: c.k, v: c.v)
            #expect(relativeError(try out.o.readFloats(), ref.o) <= 1e-5, "seed \(seed)")
            #expect(relativeError(try out.lse.readFloats(), ref.lse) <= 1e-5, "seed \(seed)")
            try checkBackward(c, device)
        }
    }

    @Test func longQueryRangeBackwardWithGQA() throws {
        let seed = testSeed()
        try withDevice { device in
            try checkBackward(AttentionCase(seed: seed, sq: 12_000, sk: 9, headsQ: 4, headsKV: 1, headDim: 64), device)
        }
    }
}
