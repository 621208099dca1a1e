// vkattn-shaderc: the build-time half of the shader pipeline (driven by Tools/ShaderPlugin).
//
//   compile --glslc G --input F.comp --include DIR --name N --symbol S --target-env E
//           --output OUT.swift --scratch TMP.spv [--requires EXT]... [--define=K=V]...
//       Runs glslc and writes OUT.swift: `extension Shaders { static let S = ShaderSource(...) }`
//       with the SPIR-V as a base64 string literal (compiles in milliseconds, unlike an array
//       literal). glslc's diagnostics (file:line: error) pass through and fail the build.
//   probe --glslc G --output OUT.swift --scratch DIR
//       Records which cooperative-matrix GLSL extensions this glslc accepts.
//   index --output OUT.swift SYMBOL...
//       Writes `Shaders.all`, the list of every embedded shader.
import Foundation

struct ToolError: Error, CustomStringConvertible {
    var description: String
}

func parse(_ args: ArraySlice<String>) throws -> (options: [String: [String]], rest: [String]) {
    var options: [String: [String]] = [:]
    var rest: [String] = []
    var i = args.startIndex
    while i < args.endIndex {
        let arg = args[i]
        if arg.hasPrefix("--define=") {
            options["define", default: []].append(String(arg.dropFirst("--define=".count)))
        } else if arg.hasPrefix("--") {
            guard i + 1 < args.endIndex else { throw ToolError(description: "missing value for \(arg)") }
            options[String(arg.dropFirst(2)), default: []].append(args[i + 1])
            i += 1
        } else {
            rest.append(arg)
        }
        i += 1
    }
    return (options, rest)
}

func one(_ options: [String: [String]], _ key: String) throws -> String {
    guard let value = options[key]?.last else { throw ToolError(description: "missing --\(key)") }
    return value
}

/// Runs a process; returns (status, stdout+stderr).
func run(_ executable: String, _ arguments: [String]) throws -> (Int32, String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

func writeIfChanged(_ text: String, to path: String) throws {
    if let old = try? String(contentsOfFile: path, encoding: .utf8), old == text { return }
    try text.write(toFile: path, atomically: true, encoding: .utf8)
}

func swiftStringLiteral(_ s: String) -> String {
    var out = "\""
    for scalar in s.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r", "\t": out += " "
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out + "\""
}

/// Tiny shaders that use each extension; glslc accepting one means the build can offer
/// variants that need it.
let probes: [(symbol: String, source: String)] = [
    ("acceptsNVCooperativeMatrix", """
    #version 450
    #extension GL_NV_cooperative_matrix : require
    #extension GL_KHR_memory_scope_semantics : require
    #extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
    layout(local_size_x = 32) in;
    layout(std430, binding = 0) buffer Data { float16_t data[]; };
    void main() {
        fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> m = fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>(0.0);
        coopMatStoreNV(m, data, 0, 16, false);
    }
    """),
    ("acceptsKHRCooperativeMatrix", """
    #version 450
    #extension GL_KHR_cooperative_matrix : require
    #extension GL_KHR_memory_scope_semantics : require
    #extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
    layout(local_size_x = 32) in;
    layout(std430, binding = 0) buffer Data { float16_t data[]; };
    void main() {
        coopmat<float16_t, gl_ScopeSubgroup, 16, 16, gl_MatrixUseA> m =
            coopmat<float16_t, gl_ScopeSubgroup, 16, 16, gl_MatrixUseA>(0.0);
        coopMatStore(m, data, 0, 16, gl_CooperativeMatrixLayoutRowMajor);
    }
    """),
]

let probeExtensions = [
    "GL_NV_cooperative_matrix": "acceptsNVCooperativeMatrix",
    "GL_KHR_cooperative_matrix": "acceptsKHRCooperativeMatrix",
]

func accepts(glslc: String, probe source: String, scratch: String) throws -> Bool {
    try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
    let input = scratch + "/probe.comp"
    try source.write(toFile: input, atomically: true, encoding: .utf8)
    let (status, _) = try run(glslc, ["--target-env=vulkan1.3", "-o", scratch + "/probe.spv", input])
    return status == 0
}

func compile(_ o: [String: [String]]) throws {
    let glslc = try one(o, "glslc"), input = try one(o, "input"), output = try one(o, "output")
    let name = try one(o, "name"), symbol = try one(o, "symbol"), scratch = try one(o, "scratch")
    let targetEnv = try one(o, "target-env"), include = try one(o, "include")

    for ext in o["requires"] ?? [] {
        guard let probeSymbol = probeExtensions[ext],
              let probe = probes.first(where: { $0.symbol == probeSymbol }) else {
            throw ToolError(description: "\(input): unknown `//! requires \(ext)` (known: \(probeExtensions.keys.sorted()))")
        }
        if try !accepts(glslc: glslc, probe: probe.source, scratch: scratch + ".probe") {
            let reason = "this build's glslc does not accept \(ext)"
            try writeIfChanged("""
            // Generated by vkattn-shaderc from \(input). Do not edit.
            import VulkanCompute
            extension Shaders {
                public static let \(symbol) = ShaderSource(name: \(swiftStringLiteral(name)), unavailable: \(swiftStringLiteral(reason)))
            }

            """, to: output)
            return
        }
    }

    var args = ["-fshader-stage=compute", "--target-env=\(targetEnv)", "-O", "-I", include]
    args += (o["define"] ?? []).map { "-D\($0)" }
    args += ["-o", scratch, input]
    let (status, log) = try run(glslc, args)
    if !log.isEmpty { FileHandle.standardError.write(Data(log.utf8)) }
    guard status == 0 else {
        throw ToolError(description: "glslc failed on \(input) (variant \(name))")
    }
    let spirv = try Data(contentsOf: URL(fileURLWithPath: scratch))
    guard spirv.count % 4 == 0, spirv.count >= 20 else {
        throw ToolError(description: "glslc wrote malformed SPIR-V for \(input)")
    }
    try writeIfChanged("""
    // Generated by vkattn-shaderc from \(input). Do not edit.
    import VulkanCompute
    extension Shaders {
        public static let \(symbol) = ShaderSource(name: \(swiftStringLiteral(name)), spirvBase64: "\(spirv.base64EncodedString())")
    }

    """, to: output)
}

func probe(_ o: [String: [String]]) throws {
    let glslc = try one(o, "glslc"), output = try one(o, "output"), scratch = try one(o, "scratch")
    let (_, versionText) = try run(glslc, ["--version"])
    let version = versionText.split(separator: "\n").first.map(String.init) ?? "unknown"
    var fields = ["glslcVersion: \(swiftStringLiteral(version))"]
    for p in probes {
        fields.append("\(p.symbol): \(try accepts(glslc: glslc, probe: p.source, scratch: scratch))")
    }
    try writeIfChanged("""
    // Generated by vkattn-shaderc: what the glslc used for this build accepts. Do not edit.
    import VulkanCompute
    extension Shaders {
        public static let toolchain = ShaderToolchain(
            \(fields.joined(separator: ",\n        "))
        )
    }

    """, to: output)
}

func index(_ o: [String: [String]], symbols: [String]) throws {
    let output = try one(o, "output")
    try writeIfChanged("""
    // Generated by vkattn-shaderc: every embedded shader. Do not edit.
    import VulkanCompute
    extension Shaders {
        public static let all: [ShaderSource] = [\(symbols.joined(separator: ", "))]
    }

    """, to: output)
}

let arguments = CommandLine.arguments
do {
    guard arguments.count >= 2 else { throw ToolError(description: "usage: vkattn-shaderc compile|probe|index ...") }
    let (options, rest) = try parse(arguments.dropFirst(2))
    switch arguments[1] {
    case "compile": try compile(options)
    case "probe": try probe(options)
    case "index": try index(options, symbols: rest)
    default: throw ToolError(description: "unknown command \(arguments[1])")
    }
} catch {
    FileHandle.standardError.write(Data("error: \(error)\n".utf8))
    exit(1)
}
