import Testing
@testable import VulkanCompute
import CVulkan
import TestSupport

@Suite("Devices: enumeration, capability report, selection")
struct DeviceTests {
    @Test func enumeratesDevicesWithRealLimits() throws {
        let log = ValidationLog()
        do {
            let instance = try Instance(log: log)
            #expect(!instance.capabilities.isEmpty)
            for caps in instance.capabilities {
                #expect(!caps.name.isEmpty)
                #expect(caps.subgroupSize > 0 && caps.subgroupSize & (caps.subgroupSize - 1) == 0)
                #expect(caps.minSubgroupSize <= caps.subgroupSize && caps.subgroupSize <= caps.maxSubgroupSize)
                #expect(caps.maxComputeSharedMemoryBytes >= 16384)
                #expect(caps.maxStorageBufferRange >= 1 << 27)
                #expect(caps.maxWorkgroupInvocations >= 128)
                #expect(caps.maxWorkgroupSize.count == 3 && caps.maxWorkgroupCount.count == 3)
                #expect(!caps.memoryHeaps.isEmpty)
                #expect(caps.queueFamilies.contains { $0.compute })
                #expect(caps.timestampPeriodNanoseconds > 0)
                #expect(caps.extensions == caps.extensions.sorted())
            }
        }
        expectClean(log)
    }

    @Test func lavapipeReportsItsKnownLimits() throws {
        let instance = try Instance(validation: .off)
        guard let caps = instance.capabilities.first(where: { $0.driverName == "llvmpipe" }) else { return }
        #expect(caps.type == .cpu)
        #expect(caps.vendor == "Mesa")
        // One lane per 32 bits of the vector width the name reports: "(LLVM 15.0.6, 256 bits)"
        // is 8 lanes (the default), 4 with LP_NATIVE_VECTOR_WIDTH=128, 16 with 512.
        let bits = caps.name.split(separator: " ").firstIndex(of: "bits)").flatMap { i in
            Int(caps.name.split(separator: " ")[i - 1])
        }
        #expect(bits != nil && caps.subgroupSize == (bits ?? 0) / 32, "\(caps.name): subgroup size \(caps.subgroupSize)")
        #expect(caps.maxComputeSharedMemoryBytes == 32768)
        #expect(caps.maxStorageBufferRange == 128 << 20)
        // Cooperative matrices exactly where the driver offers the extension (Mesa 26: 8x8x8 with
        // f16 inputs, f16 or f32 accumulators; not Mesa 22), never NVIDIA's.
        if caps.extensions.contains("VK_KHR_cooperative_matrix") {
            #expect(caps.cooperativeMatrixKHR.contains { $0.m == 8 && $0.n == 8 && $0.k == 8 && $0.aType == "f16" && $0.cType == "f32" })
        } else {
            #expect(caps.cooperativeMatrixKHR.isEmpty)
        }
        #expect(caps.cooperativeMatrixNV.isEmpty)
        #expect(caps.shaderFloat16 && caps.storageBuffer16BitAccess && caps.timelineSemaphore)
        #expect(caps.subgroupOperations.contains("arithmetic"))
        #expect(caps.unsupportedReason == nil)
    }

    @Test func selectsByIndexAndByNameSubstring() throws {
        let instance = try Instance(validation: .off)
        let first = try instance.selectDevice("0")
        #expect(first.index == 0)
        let word = String(first.name.split(separator: " ")[0]).uppercased()
        let byName = try instance.selectDevice(word)
        #expect(byName.name.uppercased().contains(word))
    }

    @Test func badSelectorListsTheDevices() throws {
        let instance = try Instance(validation: .off)
        for selector in ["no-such-gpu-anywhere", "99", "-1"] {
            do {
                _ = try instance.selectDevice(selector)
                Issue.record("selector \(selector) matched a device")
            } catch let VulkanError.noMatchingDevice(s, available) {
                #expect(s == selector)
                #expect(available.count == instance.capabilities.count)
                #expect(available.first?.contains(instance.capabilities[0].name) == true)
                let message = VulkanError.noMatchingDevice(selector: s, available: available).description
                #expect(message.contains(instance.capabilities[0].name))
            }
        }
    }

    @Test func defaultSelectionPrefersDiscreteThenIntegratedThenCPU() throws {
        let instance = try Instance(validation: .off)
        var base = instance.capabilities[0]
        base.type = .cpu
        var integrated = base
        integrated.type = .integratedGPU
        var discrete = base
        discrete.type = .discreteGPU
        var unsupported = base
        unsupported.type = .discreteGPU
        unsupported.timelineSemaphore = false
        #expect(Instance.defaultChoice([base, integrated, discrete]) == 2)
        #expect(Instance.defaultChoice([base, integrated]) == 1)
        #expect(Instance.defaultChoice([unsupported, base]) == 1)
        #expect(Instance.defaultChoice([unsupported]) == nil)
        #expect(Instance.defaultChoice([base, base]) == 0)
    }

    @Test func environmentParsesValidationRequest() {
        #expect(ValidationOptions(enabled: false, synchronization: true).synchronization == false)
        #expect(ValidationOptions(enabled: true, synchronization: true).synchronization)
    }

    @Test func validationMessagesReachTheLog() throws {
        guard validationEnabled else { return }
        let log = ValidationLog()
        do {
            let device = try Device(log: log)
            // A deliberate misuse through the raw API: a zero-sized buffer.
            var info = VkBufferCreateInfo()
            info.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO
            info.size = 0
            info.usage = VkBufferUsageFlags(VK_BUFFER_USAGE_STORAGE_BUFFER_BIT.rawValue)
            var buffer: VkBuffer?
            _ = vkCreateBuffer(device.handle, &info, nil, &buffer)
            if let buffer { vkDestroyBuffer(device.handle, buffer, nil) }
        }
        let messages = log.drain()
        #expect(messages.contains { $0.severity == .error && $0.id.contains("VkBufferCreateInfo-size") },
                "got: \(messages)")
    }

    @Test func twoLogicalDevicesOnOnePhysicalDeviceWorkAtOnce() async throws {
        let log = ValidationLog()
        do {
            let instance = try Instance(log: log)
            let physical = try instance.selectDevice()
            let a = try Device(physicalDevice: physical)
            let b = try Device(physicalDevice: physical)
            #expect(a !== b)
            let seed = testSeed()
            try await withThrowingTaskGroup(of: Bool.self) { group in
                for (i, device) in [a, b].enumerated() {
                    group.addTask {
                        var rng = SeededRandomForTests(seed: seed &+ UInt64(i))
                        let values = rng.words(10_007)
                        let src = try device.makeBuffer(values)
                        let dst = try device.makeBuffer(of: UInt32.self, count: values.count)
                        for _ in 0..<5 {
                            let stream = try device.makeStream()
                            try stream.copy(from: src.whole, to: dst.whole)
                            try stream.synchronize()
                        }
                        return try dst.read(UInt32.self, count: values.count) == values
                    }
                }
                for try await ok in group { #expect(ok, "seed \(seed)") }
            }
        }
        expectClean(log)
    }
}

/// The device-layer tests do not link VkAttn's generator on purpose: a local SplitMix64.
struct SeededRandomForTests {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func words(_ n: Int) -> [UInt32] { (0..<n).map { _ in UInt32(truncatingIfNeeded: next()) } }
    mutating func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8(truncatingIfNeeded: next()) } }
    mutating func floats(_ n: Int) -> [Float] { (0..<n).map { _ in Float(Int64(bitPattern: next()) >> 40) / Float(1 << 23) } }
}

/// A buffer kept past its device's scope keeps the device alive, and is reported.
@Suite("Leaks are reported")
struct LeakTests {
    @Test func aLeakedBufferIsReported() throws {
        nonisolated(unsafe) var kept: [Buffer] = []
        let leaks = try deviceLeaks { device in
            kept.append(try device.makeBuffer(byteCount: 64))
            _ = try device.makeStream()  // released: not a leak
        }
        #expect(leaks == ["buffer": 1], "\(String(describing: leaks))")
        kept.removeAll()
        #expect(try deviceLeaks { device in _ = try device.makeBuffer(byteCount: 64) } == nil)
    }

    @Test func liveObjectsCountWhatIsAlive() throws {
        try withDevice { device in
            let buffer = try device.makeBuffer(byteCount: 16)
            let stream = try device.makeStream()
            #expect(device.liveObjects["buffer"] == 1 && device.liveObjects["stream"] == 1)
            _ = (buffer, stream)
        }
    }
}
