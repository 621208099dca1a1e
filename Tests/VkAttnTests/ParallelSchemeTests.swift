import Testing
import VkAttn
import VkAttnParallel
import TestSupport

/// Ulysses, the 2-D hybrid and the all-gather variant against the single-device kernel, and
/// the odd shapes (5 heads, 3824 tokens, f16).
@Suite("Parallel: Ulysses, hybrid, all-gather")
struct ParallelSchemeTests {
    @Test(arguments: [SequenceSharding.zigzag, .contiguous])
    func ulyssesMatchesOneDevice(sharding: SequenceSharding) async throws {
        let seed = testSeed()
        try await withGroup { group in
            for causal in [true, false] {
                // Hkv = 2: divided over 2 ranks, replicated over 4 (GQA).
                let c = ParallelCase(seed: seed, lengths: [41, 0, 30], causal: causal)
                let want = try c.single(group.devices[0], backward: true)
                for n in [1, 2, 4] {
                    let got = try await c.parallel(try group.communicators(first: n), sharding: sharding, scheme: .allToAll, backward: true)
                    for (name, err) in ParallelCase.errors(got, want) {
                        #expect(err <= c.tolerance, "\(name) error \(err), ranks \(n), \(sharding): \(c)")
                    }
                }
            }
            // Three ranks: 6 query heads, KV heads divided (3) and shared by all (MQA).
            for kvHeads in [3, 1] {
                let c = ParallelCase(seed: seed, lengths: [25, 14], headsQ: 6, headsKV: kvHeads, causal: true)
                let want = try c.single(group.devices[0], backward: true)
                let got = try await c.parallel(try group.communicators(first: 3), sharding: sharding, scheme: .allToAll, backward: true)
                for (name, err) in ParallelCase.errors(got, want) {
                    #expect(err <= c.tolerance, "\(name) error \(err), ranks 3, \(sharding): \(c)")
                }
            }
        }
    }

    @Test(arguments: [(4, 2), (4, 1), (4, 4), (2, 2), (3, 1)])
    func hybridMatchesOneDeviceForEveryFactorisation(ranks: Int, ulysses: Int) async throws {
        let seed = testSeed()
        try await withGroup { group in
            let c = ParallelCase(seed: seed, lengths: [29, 44], headsQ: 4, headsKV: 4, causal: true)
            let want = try c.single(group.devices[0], backward: true)
            let got = try await c.parallel(try group.communicators(first: ranks), sharding: .zigzag,
                                           scheme: .hierarchical(ulysses: ulysses), backward: true)
            for (name, err) in ParallelCase.errors(got, want) {
                #expect(err <= c.tolerance, "\(name) error \(err), ranks \(ranks) ulysses \(ulysses): \(c)")
            }
        }
    }

    @Test(arguments: [SequenceSharding.zigzag, .striped])
    func allGatherMatchesOneDevice(sharding: SequenceSharding) async throws {
        let seed = testSeed()
        try await withGroup { group in
            for causal in [true, false] {
                let c = ParallelCase(seed: seed, lengths: [33, 20, 0], headsQ: 4, headsKV: 2, causal: causal)
                let want = try c.single(group.devices[0], backward: true)
                for n in 1...4 {
                    let got = try await c.parallel(try group.communicators(first: n), sharding: sharding,
                                                   scheme: .allGather(headSlices: 2), backward: true)
                    for (name, err) in ParallelCase.errors(got, want) {
                        #expect(err <= c.tolerance, "\(name) error \(err), ranks \(n), \(sharding): \(c)")
                    }
                }
            }
        }
    }

    @Test func oddShapesFiveHeadsAndALongSequence() async throws {
        let seed = testSeed()
        try await withGroup { group in
            let long = ParallelCase(seed: seed, lengths: [3824], headsQ: 5, headsKV: 5, causal: true)
            let want = try long.single(group.devices[0], backward: false)
            for (n, sharding) in [(3, SequenceSharding.zigzag), (4, .striped)] {
                let got = try await long.parallel(try group.communicators(first: n), sharding: sharding, scheme: .ring, backward: false)
                for (name, err) in ParallelCase.errors(got, want) {
                    #expect(err <= long.tolerance, "\(name) error \(err), ranks \(n) \(sharding): \(long)")
                }
            }
            let five = ParallelCase(seed: seed, lengths: [17, 61, 5], headsQ: 5, headsKV: 1, causal: true)
            let wantFive = try five.single(group.devices[0], backward: true)
            for scheme in [ContextParallelScheme.ring, .allGather(headSlices: 1)] {
                let got = try await five.parallel(try group.communicators(first: 3), sharding: .zigzag, scheme: scheme, backward: true)
                for (name, err) in ParallelCase.errors(got, wantFive) {
                    #expect(err <= five.tolerance, "\(name) error \(err), \(scheme): \(five)")
                }
            }
        }
    }

    @Test func halfPrecisionStorageKeepsPartialsInFloat() async throws {
        let seed = testSeed()
        try await withGroup { group in
            guard group.devices[0].enabled.shaderFloat16 && group.devices[0].enabled.storageBuffer16BitAccess else { return }
            let c = ParallelCase(seed: seed, lengths: [70, 26], headsQ: 2, headsKV: 2, headDim: 64, causal: true, dtype: .f16)
            let want = try c.single(group.devices[0], backward: true)
            for scheme in [ContextParallelScheme.ring, .allToAll] {
                let got = try await c.parallel(try group.communicators(first: 2), sharding: .zigzag, scheme: scheme, backward: true)
                for (name, err) in ParallelCase.errors(got, want) {
                    #expect(err <= c.tolerance, "\(name) error \(err), \(scheme): \(c)")
                }
            }
        }
    }
}

extension ParallelSchemeTests {
    /// Device -> staging -> host -> staging -> device, with the GPU copies on the rank's
    /// queue: every scheme, forward and backward.
    @Test func stagedTransfersGiveTheSameResults() async throws {
        let seed = testSeed()
        try await withGroup(ranks: 4, path: .staged) { group in
            #expect(group.route == .staged)
            let c = ParallelCase(seed: seed, lengths: [45, 12], headsQ: 4, headsKV: 2, causal: true)
            let want = try c.single(group.devices[0], backward: true)
            for (n, scheme) in [(3, ContextParallelScheme.ring), (4, .hierarchical(ulysses: 2)), (2, .allToAll), (3, .allGather(headSlices: 2))] {
                let got = try await c.parallel(try group.communicators(first: n), sharding: .zigzag, scheme: scheme, backward: true)
                for (name, err) in ParallelCase.errors(got, want) {
                    #expect(err <= c.tolerance, "\(name) error \(err), ranks \(n) \(scheme) staged: \(c)")
                }
            }
        }
    }
}
