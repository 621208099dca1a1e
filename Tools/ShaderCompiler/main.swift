// vkattn-shaderc: the build-time half of the shader pipeline (driven by Tools/ShaderPlugin).
//
//   compile --glslc G --input F.comp --include DIR --name N --symbol S --output OUT.swift --scratch DIR
//       Compiles every variant of F.comp and writes OUT.swift: one `Shaders.<S><Variant>`
//       `ShaderSource` per variant, with the SPIR-V as a base64 string literal (compiles in
//       milliseconds, unlike an array literal) and its interface (push-constant members and
//       specialization constants, read from the preprocessed GLSL), and `Shaders.<S>Variants`. glslc's diagnostics
//       (file:line: error) pass through and fail the build.
//   probe --glslc G --output OUT.swift --scratch DIR
//       Records which cooperative-matrix GLSL extensions this glslc accepts.
//   index --output OUT.swift SYMBOL...
//       Writes `Shaders.all`, every variant of every shader file.
//
// Directives a .comp file may carry (lines starting with `//!`):
//   //! variant NAME -DKEY=VALUE ...   one build of the file with these defines, embedded as
//                                      `<name>.NAME` / `<symbol>NAME`. None: a single build.
//                                      A word `requires:GL_EXT_name` makes that one variant
//                                      depend on the extension (embedded as unavailable without).
//   //! requires GL_EXT_name           the shader needs a GLSL extension this glslc may lack;
//                                      without it the shader is embedded as unavailable, with
//                                      the reason, rather than failing the build.
//   //! target vulkan1.3               glslc --target-env (default vulkan1.2).
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
    ("acceptsBFloat16CooperativeMatrix", """
    #version 450
    #extension GL_KHR_cooperative_matrix : require
    #extension GL_KHR_memory_scope_semantics : require
    #extension GL_EXT_bfloat16 : require
    layout(local_size_x = 32) in;
    layout(std430, binding = 0) buffer Data { bfloat16_t data[]; };
    void main() {
        coopmat<bfloat16_t, gl_ScopeSubgroup, 16, 16, gl_MatrixUseA> m =
            coopmat<bfloat16_t, gl_ScopeSubgroup, 16, 16, gl_MatrixUseA>(0.0);
        coopMatStore(m, data, 0, 16, gl_CooperativeMatrixLayoutRowMajor);
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
    "GL_EXT_bfloat16": "acceptsBFloat16CooperativeMatrix",
]

func accepts(glslc: String, probe source: String, scratch: String) throws -> Bool {
    try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
    let input = scratch + "/probe.comp"
    try source.write(toFile: input, atomically: true, encoding: .utf8)
    let (status, _) = try run(glslc, ["--target-env=vulkan1.3", "-o", scratch + "/probe.spv", input])
    return status == 0
}

struct Variant {
    var name: String
    var defines: [String]
    var requires: [String] = []
}

struct Directives {
    var variants: [Variant] = []
    var requires: [String] = []
    var targetEnv = "vulkan1.2"
}

func parseDirectives(_ text: String, file: String) throws -> Directives {
    var result = Directives()
    for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
        let trimmed = line.trimmingCharacters(in: .whitespaces)
        guard trimmed.hasPrefix("//!") else { continue }
        let words = trimmed.dropFirst(3).split(separator: " ").map(String.init)
        switch (words.first, words.count) {
        case ("variant", 2...):
            let rest = words.dropFirst(2)
            let requires = rest.filter { $0.hasPrefix("requires:") }.map { String($0.dropFirst("requires:".count)) }
            let defines = rest.filter { !$0.hasPrefix("requires:") }.map { $0.hasPrefix("-D") ? String($0.dropFirst(2)) : $0 }
            result.variants.append(Variant(name: words[1], defines: Array(defines), requires: requires))
        case ("requires", 2...):
            result.requires += words.dropFirst()
        case ("target", 2):
            result.targetEnv = words[1]
        default:
            throw ToolError(description: "\(file):\(number + 1): error: unknown directive `\(trimmed)` (variant NAME -DK=V..., requires EXT, target ENV)")
        }
    }
    return result
}

/// `memoryFill` + `f32` -> `memoryFillF32`.
func variantSymbol(_ base: String, _ variant: String) -> String {
    variant.split(whereSeparator: { "_-. ".contains($0) })
        .reduce(base) { $0 + $1.prefix(1).uppercased() + $1.dropFirst() }
}

func compile(_ o: [String: [String]]) throws {
    let glslc = try one(o, "glslc"), input = try one(o, "input"), output = try one(o, "output")
    let name = try one(o, "name"), symbol = try one(o, "symbol"), scratch = try one(o, "scratch")
    let include = try one(o, "include")
    try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)

    let directives = try parseDirectives(try String(contentsOfFile: input, encoding: .utf8), file: input)
    let variants = directives.variants.isEmpty ? [Variant(name: "", defines: [])] : directives.variants
    // Why this glslc cannot build what needs `extensions`, or nil.
    func missingReason(_ extensions: [String]) throws -> String? {
        for ext in extensions {
            guard let probeSymbol = probeExtensions[ext],
                  let probe = probes.first(where: { $0.symbol == probeSymbol }) else {
                throw ToolError(description: "\(input): error: unknown `requires \(ext)` (known: \(probeExtensions.keys.sorted()))")
            }
            if try !accepts(glslc: glslc, probe: probe.source, scratch: scratch + "/probe-" + symbol) {
                return "this build's glslc does not accept \(ext)"
            }
        }
        return nil
    }
    let fileMissing = try missingReason(directives.requires)

    let namespace = o["namespace"]?.first ?? "Shaders"
    var lines = ["// Generated by vkattn-shaderc from \(input). Do not edit.", "import VulkanCompute", "extension \(namespace) {"]
    var variantSymbols: [String] = []
    for variant in variants {
        let fullName = variant.name.isEmpty ? name : "\(name).\(variant.name)"
        let fullSymbol = variant.name.isEmpty ? symbol : variantSymbol(symbol, variant.name)
        variantSymbols.append(fullSymbol)
        if let missing = try fileMissing ?? missingReason(variant.requires) {
            lines.append("    public static let \(fullSymbol) = ShaderSource(name: \(swiftStringLiteral(fullName)), unavailable: \(swiftStringLiteral(missing)))")
            continue
        }
        let spv = scratch + "/" + fullSymbol + ".spv"
        var args = ["-fshader-stage=compute", "--target-env=\(directives.targetEnv)", "-O", "-I", include]
        args += variant.defines.map { "-D\($0)" }
        args += ["-o", spv, input]
        let (status, log) = try run(glslc, args)
        if !log.isEmpty { FileHandle.standardError.write(Data(log.utf8)) }
        guard status == 0 else {
            throw ToolError(description: "glslc failed on \(input) (variant \(fullName))")
        }
        let spirv = try Data(contentsOf: URL(fileURLWithPath: spv))
        guard spirv.count % 4 == 0, spirv.count >= 20 else {
            throw ToolError(description: "glslc wrote malformed SPIR-V for \(input) (variant \(fullName))")
        }
        // The interface comes from the same preprocessing as the SPIR-V (same defines).
        let preprocessed = scratch + "/" + fullSymbol + ".i.comp"
        var preArgs = ["-E", "-fshader-stage=compute", "--target-env=\(directives.targetEnv)", "-I", include]
        preArgs += variant.defines.map { "-D\($0)" }
        preArgs += ["-o", preprocessed, input]
        let (preStatus, preLog) = try run(glslc, preArgs)
        guard preStatus == 0 else {
            throw ToolError(description: "glslc -E failed on \(input) (variant \(fullName)): \(preLog)")
        }
        let interface = try readInterface(preprocessed: try String(contentsOfFile: preprocessed, encoding: .utf8), file: input)
        lines.append("    public static let \(fullSymbol) = ShaderSource(name: \(swiftStringLiteral(fullName)), spirvBase64: \"\(spirv.base64EncodedString())\",")
        lines.append("        interface: \(swiftInterface(interface)))")
    }
    lines.append("    static let \(symbol)Variants: [ShaderSource] = [\(variantSymbols.joined(separator: ", "))]")
    lines.append("}")
    try writeIfChanged(lines.joined(separator: "\n") + "\n", to: output)
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
    let namespace = o["namespace"]?.first ?? "Shaders"
    try writeIfChanged("""
    // Generated by vkattn-shaderc: every embedded shader. Do not edit.
    import VulkanCompute
    extension \(namespace) {
        public static let all: [ShaderSource] = [\(symbols.map { "\($0)Variants" }.joined(separator: ", "))].flatMap { $0 }
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
