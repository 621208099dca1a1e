import Testing
import VkAttn
import VkAttnParallel
import TestSupport

/// Ring attention (forward and backward) against the single-device kernel: 1 to 4 ranks,
/// every sharding, causal and not, ragged packed sequences (one empty), GQA.
@Suite("Parallel: ring attention")
struct ParallelRingTests {
    @Test(arguments: SequenceSharding.allCases)
    func ringMatchesOneDeviceForEveryRankCount(sharding: SequenceSharding) async throws {
        let seed = testSeed()
        try await withGroup { group in
            for causal in [true, false] {
                let c = ParallelCase(seed: seed, lengths: [37, 0, 50, 9], causal: causal)
                let want = try c.single(group.devices[0], backward: true)
                // The same bound for every rank count: merging more partials must not add error.
                for n in 1...4 {
                    let got = try await c.parallel(try group.communicators(first: n), sharding: sharding, scheme: .ring, backward: true)
                    for (name, err) in ParallelCase.errors(got, want) {
                        #expect(err <= c.tolerance, "\(name) error \(err), ranks \(n), \(sharding): \(c)")
                    }
                }
            }
        }
    }

    /// The ring over the imported-host path: each message's staging is one host allocation
    /// both devices import; the GPUs copy in and out, no host copy.
    @Test func ringOverImportedHostMemoryMatchesOneDevice() async throws {
        let seed = testSeed()
        try await withGroup(path: .importedHost) { group in
            #expect(group.route == .importedHost)
            let c = ParallelCase(seed: seed, lengths: [37, 0, 50, 9], causal: true)
            let want = try c.single(group.devices[0], backward: true)
            for n in [2, 4] {
                let got = try await c.parallel(try group.communicators(first: n), sharding: .zigzag, scheme: .ring, backward: true)
                for (name, err) in ParallelCase.errors(got, want) {
                    #expect(err <= c.tolerance, "\(name) error \(err), ranks \(n), imported-host: \(c)")
                }
            }
        }
    }
}
