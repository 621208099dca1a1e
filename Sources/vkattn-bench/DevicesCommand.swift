import ArgumentParser
import Foundation
import VkAttn

struct Devices: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print every Vulkan device's capabilities (the selected one is marked).")

    @OptionGroup var device: DeviceOptions
    @Flag(help: "Print the report as one JSON object.") var json = false

    func run() throws {
        let instance = try Instance()
        let selected = try? instance.selectDevice(device.device).index
        if json {
            print(try DeviceReport.json(instance, selected: selected))
        } else {
            print(DeviceReport.table(instance, selected: selected))
        }
    }
}

enum DeviceReport {
    struct Document: Encodable {
        var selected: Int?
        var validation: ValidationOptions
        var shaderToolchain: ShaderToolchain
        /// Shader variants this build left out, with the reason (e.g. the cooperative-matrix ones
        /// under a glslc without GL_KHR_cooperative_matrix).
        var unavailableShaders: [String: String]
        var devices: [DeviceCapabilities]
    }

    /// Every variant this build could not compile, by name, with why.
    static var unavailableShaders: [String: String] {
        Dictionary(Shaders.all.compactMap { s in s.unavailableReason.map { (s.name, $0) } }, uniquingKeysWith: { a, _ in a })
    }

    static func json(_ instance: Instance, selected: Int?) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let document = Document(selected: selected, validation: instance.validation,
                                shaderToolchain: Shaders.toolchain, unavailableShaders: unavailableShaders,
                                devices: instance.capabilities)
        return String(decoding: try encoder.encode(document), as: UTF8.self)
    }

    static func table(_ instance: Instance, selected: Int?) -> String {
        var out: [String] = []
        for caps in instance.capabilities {
            let mark = caps.index == selected ? " (selected)" : ""
            out.append("Device \(caps.index): \(caps.name)\(mark)")
            let heaps = caps.memoryHeaps.map { heap -> String in
                var s = "\(formatBytes(heap.bytes))\(heap.deviceLocal ? " device-local" : "")"
                if let budget = heap.budgetBytes { s += ", budget \(formatBytes(budget))" }
                return s
            }.joined(separator: "; ")
            let families = caps.queueFamilies.map { f -> String in
                let kinds = [f.graphics ? "graphics" : nil, f.compute ? "compute" : nil,
                             f.isTransferOnly ? "transfer-only" : nil].compactMap { $0 }
                return "#\(f.index) \(kinds.joined(separator: "+")) x\(f.count)"
            }.joined(separator: ", ")
            func shapes(_ list: [CooperativeMatrixShape]) -> String {
                list.isEmpty ? "none" : list.map { "\($0.m)x\($0.n)x\($0.k) \($0.aType)*\($0.bType)+\($0.cType)->\($0.resultType)" }
                    .joined(separator: ", ")
            }
            let rows: [(String, String)] = [
                ("vendor", "\(caps.vendor) (0x\(String(caps.vendorID, radix: 16))), device 0x\(String(caps.deviceID, radix: 16))"),
                ("type", caps.type.rawValue),
                ("driver", "\(caps.driverName) \(caps.driverInfo)"),
                ("Vulkan", caps.apiVersion),
                ("subgroup", "\(caps.subgroupSize) (\(caps.minSubgroupSize)..\(caps.maxSubgroupSize)): \(caps.subgroupOperations.joined(separator: " "))"),
                ("compute units", caps.computeUnits.map(String.init) ?? "not reported"),
                ("shared memory", formatBytes(caps.maxComputeSharedMemoryBytes)),
                ("workgroup", "size \(caps.maxWorkgroupSize.map(String.init).joined(separator: "x")), \(caps.maxWorkgroupInvocations) invocations, count \(caps.maxWorkgroupCount.map(String.init).joined(separator: "x"))"),
                ("maxStorageBufferRange", formatBytes(caps.maxStorageBufferRange)),
                ("max allocation", formatBytes(caps.maxMemoryAllocationBytes)),
                ("memory heaps", heaps),
                ("fp16 / int8", "shaderFloat16 \(caps.shaderFloat16), shaderInt8 \(caps.shaderInt8)"),
                ("bfloat16", "type \(caps.shaderBFloat16Type), cooperative matrices \(caps.shaderBFloat16CooperativeMatrix)"),
                ("16/8-bit storage", "\(caps.storageBuffer16BitAccess) / \(caps.storageBuffer8BitAccess)"),
                ("coopmat KHR", shapes(caps.cooperativeMatrixKHR)),
                ("coopmat NV", shapes(caps.cooperativeMatrixNV)),
                ("timestamps", "\(caps.timestampPeriodNanoseconds) ns/tick, \(caps.queueFamilies.first { $0.compute }?.timestampValidBits ?? 0) valid bits"),
                ("queue families", families),
            ]
            let width = rows.map(\.0.count).max() ?? 0
            for (key, value) in rows {
                out.append("  " + key.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + value)
            }
        }
        let t = Shaders.toolchain
        out.append("Shaders built by \(t.glslcVersion): GL_NV_cooperative_matrix \(t.acceptsNVCooperativeMatrix ? "yes" : "no"), GL_KHR_cooperative_matrix \(t.acceptsKHRCooperativeMatrix ? "yes" : "no")")
        let coopmat = Shaders.all.filter { $0.name.contains("coopmat") }
        let built = coopmat.filter(\.isAvailable)
        out.append("  cooperative-matrix variants: \(built.count) of \(coopmat.count) built"
                   + (built.isEmpty ? "" : " (\(Set(built.map { $0.name.split(separator: ".")[0] }).sorted().joined(separator: ", ")))"))
        var missing: [String: [String]] = [:]
        for (name, reason) in unavailableShaders { missing[reason, default: []].append(name) }
        for (reason, names) in missing.sorted(by: { $0.key < $1.key }) {
            out.append("  left out, \(reason): \(names.count) variants (\(Set(names.map { $0.split(separator: ".")[0] }).sorted().joined(separator: ", ")))")
        }
        return out.joined(separator: "\n")
    }
}
