import Testing
@testable import VulkanCompute
import VkAttn
import VkAttnTestShaders
import TestSupport

let testAffineShader = TestShaders.affine

func affineDescriptor(workgroup: Int = 64, scale: Float, step: UInt32) -> KernelDescriptor {
    KernelDescriptor(shader: testAffineShader, bindings: 2,
                     specialization: ["local_size_x": .int(workgroup), "SCALE": .f32(scale), "STEP": .u32(step)])
}

/// Tests/TestShaders/affine.comp's push constants.
struct AffinePush: PushConstantBlock {
    var n: UInt32
    var bias: Float
}

@Suite("Kernels: specialization, push constants, cache, argument checks")
struct KernelTests {
    @Test(arguments: [1, 2, 63, 64, 65, 257, 1000])
    func specializationAndPushConstantsReachTheShader(n: Int) throws {
        let seed = testSeed()
        var rng = SeededRandomForTests(seed: seed)
        try withDevice { device in
            let x = rng.floats(n)
            let scale: Float = 2.5, step: UInt32 = 3, bias: Float = -0.75
            let padded = n + 13
            let xb = try device.makeBuffer(x)
            let yb = try device.makeBuffer([Float](repeating: .nan, count: padded))
            let kernel = try device.kernel(affineDescriptor(scale: scale, step: step))
            let stream = try device.makeStream()
            try stream.dispatch(kernel, bindings: [xb.whole, yb.whole], push: AffinePush(n: UInt32(n), bias: bias),
                                groups: ((n + 63) / 64, 1, 1))
            try stream.synchronize()
            let y = try yb.read(Float.self, count: padded)
            for i in 0..<n {
                let expected = x[i] * scale + bias + Float(UInt32(i) * step)
                #expect(abs(y[i] - expected) <= 1e-5 * max(1, abs(expected)), "i \(i) n \(n) seed \(seed)")
            }
            #expect(y[n...].allSatisfy { $0.isNaN }, "kernel wrote past n = \(n)")
        }
    }

    @Test func pipelinesAreCachedBySpecialization() throws {
        try withDevice { device in
            let before = device.cachedKernelCount
            _ = try device.kernel(affineDescriptor(scale: 1, step: 0))
            _ = try device.kernel(affineDescriptor(scale: 1, step: 0))
            #expect(device.cachedKernelCount == before + 1)
            _ = try device.kernel(affineDescriptor(scale: 2, step: 0))
            _ = try device.kernel(affineDescriptor(workgroup: 128, scale: 1, step: 0))
            #expect(device.cachedKernelCount == before + 3)
        }
    }

    @Test func concurrentKernelRequestsShareOnePipeline() async throws {
        try await withDevice { device in
            let before = device.cachedKernelCount
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<16 {
                    group.addTask { _ = try device.kernel(affineDescriptor(scale: 7, step: 1)) }
                }
                try await group.waitForAll()
            }
            #expect(device.cachedKernelCount == before + 1)
        }
    }

    @Test func wrongArgumentsAreRejectedBeforeRecording() throws {
        try withDevice { device in
            let kernel = try device.kernel(affineDescriptor(scale: 1, step: 0))
            let x = try device.makeBuffer(byteCount: 256)
            let stream = try device.makeStream()
            #expect(throws: VulkanError.self) {  // one buffer short
                try stream.dispatch(kernel, bindings: [x.whole], push: AffinePush(n: UInt32(1), bias: Float(0)), groups: (1, 1, 1))
            }
            #expect(throws: VulkanError.self) {  // push constants short
                try stream.dispatch(kernel, bindings: [x.whole, x.whole], push: ShortPush(n: 1), groups: (1, 1, 1))
            }
            #expect(throws: VulkanError.self) {  // too many workgroups
                let limit = device.capabilities.maxWorkgroupCount[0]
                try stream.dispatch(kernel, bindings: [x.whole, x.whole], push: AffinePush(n: UInt32(1), bias: Float(0)), groups: (limit + 1, 1, 1))
            }
            #expect(throws: VulkanError.self) {  // a specialization constant the shader does not declare
                _ = try device.kernel(KernelDescriptor(shader: testAffineShader, bindings: 2, specialization: ["SCALES": .f32(1)]))
            }
            try stream.synchronize()  // nothing was recorded: a no-op
        }
    }

    /// Swift and GLSL agree by name and type, never by position alone: a block whose members
    /// are swapped, renamed, retyped or missing is refused before anything is recorded, and
    /// the error names the member.
    @Test func pushConstantBlocksMustMirrorTheShader() throws {
        let interface = testAffineShader.interface
        #expect(interface.pushConstants.map(\.name) == ["n", "bias"])
        #expect(interface.pushConstants.map(\.type) == [.uint, .float])
        #expect(interface.pushConstantBytes == 8)
        #expect(interface.specializationIDs == ["local_size_x": 0, "SCALE": 1, "STEP": 2])
        try withDevice { device in
            let kernel = try device.kernel(affineDescriptor(scale: 1, step: 0))
            let x = try device.makeBuffer(byteCount: 256)
            let stream = try device.makeStream()
            func refusal(_ block: some PushConstantBlock) -> String {
                do {
                    try stream.dispatch(kernel, bindings: [x.whole, x.whole], push: block, groups: (1, 1, 1))
                    return "accepted"
                } catch {
                    return "\(error)"
                }
            }
            #expect(refusal(SwappedPush(bias: 0, n: 1)).contains("bias"))
            #expect(refusal(RenamedPush(count: 1, bias: 0)).contains("count"))
            #expect(refusal(RetypedPush(n: 1, bias: 0)).contains("bias"))
            #expect(refusal(LongPush(n: 1, bias: 0, extra: 0)).contains("3 members"))
            #expect(refusal(ShortPush(n: 1)).contains("1 members"))
            try stream.dispatch(kernel, bindings: [x.whole, x.whole], push: AffinePush(n: 0, bias: 0), groups: (1, 1, 1))
            try stream.synchronize()
        }
        #expect(ShaderInterface.swiftName("heads_q") == "headsQ")
        #expect(ShaderInterface.swiftName("items_per_segment") == "itemsPerSegment")
        #expect(ShaderInterface.swiftName("Dk") == "Dk")
    }

    @Test func aShaderThisBuildLacksIsATypedError() throws {
        try withDevice { device in
            let missing = ShaderSource(name: "example.coopmat", unavailable: "this build's glslc does not accept GL_KHR_cooperative_matrix")
            #expect(throws: VulkanError.shaderUnavailable(name: "example.coopmat", reason: "this build's glslc does not accept GL_KHR_cooperative_matrix")) {
                _ = try device.kernel(KernelDescriptor(shader: missing, bindings: 1))
            }
        }
    }

    @Test func kernelsAndBuffersOfAnotherDeviceAreRejected() throws {
        let log = ValidationLog()
        do {
            let instance = try Instance(log: log)
            let physical = try instance.selectDevice()
            let a = try Device(physicalDevice: physical)
            let b = try Device(physicalDevice: physical)
            let kernelA = try a.kernel(affineDescriptor(scale: 1, step: 0))
            let xb = try b.makeBuffer(byteCount: 64)
            let xa = try a.makeBuffer(byteCount: 64)
            let streamB = try b.makeStream()
            #expect(throws: VulkanError.self) {
                try streamB.dispatch(kernelA, bindings: [xb.whole, xb.whole], push: AffinePush(n: UInt32(1), bias: Float(0)), groups: (1, 1, 1))
            }
            #expect(throws: VulkanError.self) { try streamB.copy(from: xa.whole, to: xb.whole) }
        }
        expectClean(log)
    }

    @Test func everyEmbeddedShaderIsValidSPIRV() throws {
        #expect(!Shaders.all.isEmpty)
        #expect(Set(Shaders.all.map(\.name)).count == Shaders.all.count)
        for shader in Shaders.all where shader.isAvailable {
            let words = try shader.spirv()
            #expect(words[0] == 0x0723_0203, "\(shader.name)")
        }
        #expect(Shaders.named("memory/copy.u64x2") == Shaders.memoryCopyU64x2)
        #expect(Shaders.named("memory/fill.f32") == Shaders.memoryFillF32)
        #expect(!Shaders.toolchain.glslcVersion.isEmpty)
    }
}

struct ShortPush: PushConstantBlock { var n: UInt32 }
struct SwappedPush: PushConstantBlock { var bias: Float; var n: UInt32 }
struct RenamedPush: PushConstantBlock { var count: UInt32; var bias: Float }
struct RetypedPush: PushConstantBlock { var n: UInt32; var bias: UInt32 }
struct LongPush: PushConstantBlock { var n: UInt32; var bias: Float; var extra: UInt32 }
