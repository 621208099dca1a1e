import Testing
import VulkanCompute
import VkAttnTestShaders
import TestSupport

/// Subgroup-scope barriers in control flow that differs between the subgroups of a workgroup
/// (legal: such a barrier concerns its own subgroup). Mesa 26's lavapipe loses the writes of
/// some subgroups here, the defect behind the CSR transpose's one-subgroup workgroups and the
/// cooperative-matrix kernels' uniform matrix-op counts on llvmpipe (docs/ARCHITECTURE.md).
@Suite("Kernels: subgroup barriers in subgroup-divergent control flow")
struct SubgroupBarrierTests {
    /// 3 workgroups of 256 invocations (32 subgroups each on lavapipe); subgroup s of its
    /// workgroup runs s mod 7 rounds, each marking one slot. On Mesa 26.2's lavapipe every
    /// subgroup stops after the third round; Mesa 22.3's lands them all.
    @Test func everySubgroupsWritesLandWhateverItsBarrierCount() throws {
        try withDevice { device in
            let caps = device.capabilities
            let groups = 3, rounds = 6
            let workgroup = min(256, caps.maxWorkgroupInvocations)
            let maxSubgroups = groups * max(1, workgroup / caps.minSubgroupSize)
            let marks = try device.makeBuffer([UInt32](repeating: 0, count: maxSubgroups * rounds))
            let info = try device.makeBuffer([UInt32](repeating: 0, count: 1))
            let kernel = try device.kernel(KernelDescriptor(shader: TestShaders.subgroupBarrier, bindings: 2,
                                                            specialization: ["local_size_x": .int(workgroup)]))
            let stream = try device.makeStream()
            try stream.dispatch(kernel, bindings: [marks.whole, info.whole], push: RoundsPush(rounds: UInt32(rounds)), groups: (groups, 1, 1))
            try stream.synchronize()
            let perGroup = Int(try info.read(UInt32.self, count: 1)[0])
            let got = try marks.read(UInt32.self, count: maxSubgroups * rounds)
            var missing: [String] = []
            for s in 0..<(groups * perGroup) {
                let mine = s % perGroup % (rounds + 1)
                for r in 0..<rounds {
                    let want = r < mine ? UInt32(r + 1) : 0
                    if got[s * rounds + r] != want { missing.append("subgroup \(s) round \(r): \(got[s * rounds + r]) (want \(want))") }
                }
            }
            let message: Comment = "\(caps.name) \(caps.driverInfo), \(perGroup) subgroups per workgroup: \(missing.count) marks missing, \(missing.prefix(6))"
            withKnownIssue("Mesa 26's lavapipe drops the writes of subgroups that run more subgroup barriers than others") {
                #expect(missing.isEmpty, message)
            } when: {
                // Only where it was seen: a later Mesa that fixes it fails here ("known issue not
                // recorded"), and Mesa 23-25 were never tried.
                caps.name.hasPrefix("llvmpipe") && caps.driverInfo.hasPrefix("Mesa 26.")
            }
        }
    }
}

/// Tests/TestShaders/subgroup_barrier.comp's push constants.
struct RoundsPush: PushConstantBlock {
    var rounds: UInt32
}
