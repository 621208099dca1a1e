import Testing
import VkAttn
import TestSupport

/// The cooperative-matrix (tensor-core) attention kernels against the fp64 reference, on
/// devices that offer KHR cooperative matrices (Mesa 26's lavapipe on a CPU: 8x8x8); elsewhere
/// each test ends as skipped and says why.
@Suite("Flash attention on cooperative matrices", .enabled(if: CooperativeMatrixProbe.shouldRun, CooperativeMatrixProbe.skipComment))
struct AttentionCoopmatTests {
    static let coopmat = FlashAttention(preference: .cooperativeMatrix)

    static func attention(_ mask: AttentionMask = .none, softcap: Float? = nil, outputDType: DType? = nil) -> FlashAttention {
        FlashAttention(mask: mask, softcap: softcap, outputDType: outputDType, preference: .cooperativeMatrix)
    }

    /// The forward's path on this problem, checked to be a cooperative-matrix one.
    func expectCoopmatPath(_ c: AttentionCase, _ device: Device, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let (q, k, v) = try c.tensors(device)
        let stream = try device.makeStream()
        let out = try c.attention.forward(q: q, k: k, v: v, layout: c.layout, on: stream)
        try stream.synchronize()
        #expect(out.path.contains("coopmat-"), "\(out.path)", sourceLocation: sourceLocation)
    }

    @Test(arguments: [1, 17, 333, 1023])
    func awkwardLengthsCausalAndNot(length: Int) throws {
        let seed = testSeed()
        try withDevice { device in
            try requireCooperativeMatrix(device)
            for causal in [false, true] {
                let c = AttentionCase(seed: seed, sq: length, sk: length, headsQ: 2, headDim: 64, dtype: .f16,
                                      attention: Self.attention(AttentionMask(causal: causal)))
                try checkForward(c, device)
            }
            try expectCoopmatPath(AttentionCase(seed: seed, sq: length, sk: length, headDim: 64, dtype: .f16, attention: Self.coopmat), device)
        }
    }

    /// FlashAttention-2's head-size grid, forward and backward (widths that are not a multiple
    /// of 8 are read element-wise and padded).
    @Test(arguments: [32, 40, 59, 64, 80, 96, 111, 112, 128, 160, 192, 224, 256])
    func everyHeadDim(headDim: Int) throws {
        let seed = testSeed()
        try withDevice { device in
            try requireCooperativeMatrix(device)
            let c = AttentionCase(seed: seed, sq: 37, sk: 70, headsQ: 1, headDim: headDim, dtype: .f16, attention: Self.attention(.causal))
            try checkForward(c, device)
            try expectCoopmatPath(c, device)
            try checkBackward(AttentionCase(seed: seed, sq: 21, sk: 40, headsQ: 1, headDim: headDim, dtype: .f16,
                                            attention: Self.attention(.causal)), device)
        }
    }

    /// MLA (Dk 576, Dv 512) forward and decode, and Dk != Dv in the backward.
    @Test func differentKeyAndValueWidths() throws {
        let seed = testSeed()
        try withDevice { device in
            try requireCooperativeMatrix(device)
            try checkForward(AttentionCase(seed: seed, sq: 19, sk: 45, headsQ: 2, headsKV: 1, headDim: 576, headDimV: 512,
                                           dtype: .f16, attention: Self.attention(.causal)), device)
            let path = try checkDecode(AttentionCase(seed: seed, batch: 2, sq: 1, sk: 300, headsQ: 4, headsKV: 1, headDim: 576,
                                                     headDimV: 512, dtype: .f16, attention: Self.coopmat), device)
            #expect(path.contains("coopmat-"), "\(path)")
            try checkBackward(AttentionCase(seed: seed, sq: 23, sk: 31, headsQ: 2, headsKV: 1, headDim: 96, headDimV: 40,
                                            dtype: .f16, attention: Self.attention(.causal)), device)
        }
    }

    @Test func groupedQueryHeadsWithCausalWindow() throws {
        let seed = testSeed()
        try withDevice { device in
            try requireCooperativeMatrix(device)
            let window = AttentionMask(causal: true, windowLeft: 64)
            try checkForward(AttentionCase(seed: seed, batch: 2, sq: 333, sk: 333, headsQ: 4, headsKV: 2, headDim: 128, dtype: .f16,
                                           attention: Self.attention(window)), device)
            try checkForward(AttentionCase(seed: seed, sq: 17, sk: 90, headsQ: 3, headsKV: 1, headDim: 64, dtype: .f16,
                                           attention: Self.attention()), device)
            for (left, right) in [(16, 8), (0, 0), (nil, 3)] as [(Int?, Int?)] {
                let mask = AttentionMask(causal: false, windowLeft: left, windowRight: right)
                try checkForward(AttentionCase(seed: seed, sq: 100, sk: 120, headDim: 64, dtype: .f16, attention: Self.attention(mask)), device)
            }
        }
    }

    @Test func crossLengthsSoftcapAndFloatOutput() throws {
        let seed = testSeed()
        try withDevice { device in
            try requireCooperativeMatrix(device)
            for (sq, sk) in [(17, 333), (333, 17), (1, 127), (64, 1)] {
                try checkForward(AttentionCase(seed: seed, sq: sq, sk: sk, headDim: 64, dtype: .f16,
                                               attention: Self.attention(.causal)), device)
            }
            try checkForward(AttentionCase(seed: seed, sq: 50, sk: 61, headDim: 64, dtype: .f16,
                                           attention: Self.attention(.causal, softcap: 1.5)), device)
            try checkForward(AttentionCase(seed: seed, sq: 40, sk: 131, headDim: 128, dtype: .f16,
                                           attention: Self.attention(outputDType: .f32)), device)
        }
    }

    @Test func blockSparseMask() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        try withDevice { device in
            try requireCooperativeMatrix(device)
            let sq = 70, sk = 90
            let blocks = randomBlockMask(sq: sq, sk: sk, block: 16, emptyRow: true, &rng)
            for causal in [false, true] {
                try checkForward(AttentionCase(seed: seed, batch: 2, sq: sq, sk: sk, headDim: 64, dtype: .f16,
                                               attention: Self.attention(AttentionMask(causal: causal, blocks: blocks))), device)
            }
        }
    }

    @Test func packedVariableLengthWithEmptySequences() throws {
        let seed = testSeed()
        try withDevice { device in
            try requireCooperativeMatrix(device)
            for causal in [false, true] {
                try checkForward(AttentionCase(seed: seed, packedQ: [5, 0, 35, 1, 70], packedK: [5, 3, 40, 0, 90],
                                               headsQ: 4, headsKV: 2, headDim: 64, dtype: .f16,
                                               attention: Self.attention(AttentionMask(causal: causal))), device)
            }
        }
    }

    /// Decode (split-KV over a long cache, GQA rows packed) on cooperative matrices.
    @Test(arguments: [1, 4, 16])
    func decodeAgainstALongCache(queries: Int) throws {
        let seed = testSeed()
        try withDevice { device in
            try requireCooperativeMatrix(device)
            let c = AttentionCase(seed: seed, batch: 2, sq: queries, sk: 1000, headsQ: 8, headsKV: 2, headDim: 128, dtype: .f16,
                                  attention: Self.attention(.causal))
            for splits in [nil, 1, 3] as [Int?] {
                let path = try checkDecode(c, device, splits: splits)
                #expect(path.contains("coopmat-"), "\(path)")
            }
        }
    }

    /// The same inputs give the same bits twice, and scalar and cooperative-matrix kernels agree
    /// within the f16 bound.
    @Test func deterministicAndAgreesWithScalar() throws {
        let seed = testSeed()
        try withDevice { device in
            try requireCooperativeMatrix(device)
            var c = AttentionCase(seed: seed, sq: 129, sk: 129, headsQ: 4, headsKV: 1, headDim: 64, dtype: .f16,
                                  attention: Self.attention(.causal))
            let (q, k, v) = try c.tensors(device)
            func run(_ attention: FlashAttention) throws -> [Float] {
                let stream = try device.makeStream()
                let out = try attention.forward(q: q, k: k, v: v, on: stream)
                try stream.synchronize()
                return try out.o.readFloats()
            }
            let first = try run(c.attention), second = try run(c.attention)
            #expect(first.map(\.bitPattern) == second.map(\.bitPattern), "two runs differ: \(c)")
            c.attention.preference = .scalar
            let scalar = try run(c.attention)
            #expect(relativeError(first, scalar.map(Double.init)) <= 2e-3, "coopmat and scalar disagree: \(c)")
        }
    }

    /// f32 inputs are never rounded to 16 bits behind the caller's back: automatic stays scalar
    /// (saying why), and an explicit request is a typed error.
    @Test func floatInputsStayScalar() throws {
        try withDevice { device in
            try requireCooperativeMatrix(device)
            let c = AttentionCase(seed: 1, sq: 8, sk: 8, headDim: 64, dtype: .f32)
            let (q, k, v) = try c.tensors(device)
            let stream = try device.makeStream()
            let out = try FlashAttention().forward(q: q, k: k, v: v, on: stream)
            #expect(out.path.hasPrefix("scalar-f32") && out.path.contains("no coopmat"), "\(out.path)")
            #expect(throws: VkAttnError.self) { try Self.coopmat.forward(q: q, k: k, v: v, on: stream) }
            try stream.synchronize()
        }
    }

    /// bf16 on bf16 matrix types (VK_KHR_shader_bfloat16), where the device has them: forward,
    /// backward and decode against the fp64 reference.
    @Test func bfloat16MatrixTypesWhereOffered() throws {
        let seed = testSeed()
        try withDevice { device in
            try skipUnlessCooperativeMatrix(device, input: .bf16)
            let c = AttentionCase(seed: seed, sq: 333, sk: 333, headsQ: 4, headsKV: 2, headDim: 128, dtype: .bf16,
                                  attention: Self.attention(AttentionMask(causal: true, windowLeft: 64)))
            try checkForward(c, device)
            try checkBackward(c, device)
            try expectCoopmatPath(c, device)
        }
    }

    // MARK: Backward

    @Test(arguments: [1, 17, 333, 1023])
    func backwardAwkwardLengths(length: Int) throws {
        let seed = testSeed()
        try withDevice { device in
            try requireCooperativeMatrix(device)
            for causal in [false, true] {
                try checkBackward(AttentionCase(seed: seed, sq: length, sk: length, headsQ: 2, headDim: 64, dtype: .f16,
                                                attention: Self.attention(AttentionMask(causal: causal))), device)
            }
        }
    }

    @Test func backwardGroupedHeadsWindowAndEveryHeadDim() throws {
        let seed = testSeed()
        try withDevice { device in
            try requireCooperativeMatrix(device)
            try checkBackward(AttentionCase(seed: seed, sq: 200, sk: 200, headsQ: 4, headsKV: 2, headDim: 128, dtype: .f16,
                                            attention: Self.attention(AttentionMask(causal: true, windowLeft: 64))), device)
            for d in [32, 96, 256] {
                try checkBackward(AttentionCase(seed: seed, sq: 45, sk: 70, headsQ: 2, headsKV: 1, headDim: d, dtype: .f16,
                                                attention: Self.attention(.causal)), device)
            }
            for (sq, sk) in [(17, 90), (90, 17)] {
                try checkBackward(AttentionCase(seed: seed, sq: sq, sk: sk, headDim: 64, dtype: .f16,
                                                attention: Self.attention(.causal, softcap: 2)), device, gradientDType: .f32)
            }
        }
    }

    @Test func backwardPackedAndBlockSparse() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        try withDevice { device in
            try requireCooperativeMatrix(device)
            try checkBackward(AttentionCase(seed: seed, packedQ: [5, 0, 35, 1, 70], packedK: [5, 3, 40, 0, 90],
                                            headsQ: 4, headsKV: 2, headDim: 64, dtype: .f16, attention: Self.attention(.causal)), device)
            let sq = 70, sk = 90
            let blocks = randomBlockMask(sq: sq, sk: sk, block: 16, emptyRow: false, &rng)
            try checkBackward(AttentionCase(seed: seed, batch: 2, sq: sq, sk: sk, headDim: 64, dtype: .f16,
                                            attention: Self.attention(AttentionMask(causal: true, blocks: blocks))), device)
        }
    }

    /// Many keys: P and dS sink toward 1 / keys, below f16's normal range without the per-tile
    /// power-of-two scaling.
    @Test func backwardOverManyKeysKeepsSmallGradients() throws {
        let seed = testSeed()
        try withDevice { device in
            try requireCooperativeMatrix(device)
            try checkBackward(AttentionCase(seed: seed, sq: 24, sk: 4100, headsQ: 1, headDim: 64, dtype: .f16,
                                            attention: Self.attention()), device, gradientDType: .f32)
        }
    }

    @Test func backwardPathsSayCooperativeMatrix() throws {
        try withDevice { device in
            try requireCooperativeMatrix(device)
            let c = AttentionCase(seed: 7, sq: 40, sk: 40, headsQ: 2, headDim: 64, dtype: .f16, attention: Self.attention(.causal))
            let (q, k, v) = try c.tensors(device)
            let stream = try device.makeStream()
            let out = try c.attention.forward(q: q, k: k, v: v, on: stream)
            let dO = try device.makeTensor(c.dO, shape: c.qShape, dtype: .f16)
            try stream.barrier()
            let grads = try c.attention.backward(q: q, k: k, v: v, o: out.o, lse: out.lse, dO: dO, on: stream)
            try stream.synchronize()
            #expect(grads.path.contains("dQ coopmat-f16") && grads.path.contains("dKdV coopmat-f16"), "\(grads.path)")
        }
    }
}
