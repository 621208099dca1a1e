// Build-tool plugin: plans the compilation of every Shaders/**/*.comp (one glslc run per
// variant) into generated Swift files that embed the SPIR-V.
//
// Directives read from the top of a .comp file (lines starting with `//!`):
//   //! variant NAME -DKEY=VALUE ...   one more build of the file with these defines; the Swift
//                                      symbol gets NAME as suffix. No variant line: one build.
//   //! requires GL_EXT_name           the variant needs a GLSL extension this glslc may lack;
//                                      when it does, the shader is embedded as unavailable.
//   //! target vulkan1.3               glslc --target-env (default vulkan1.2).
import Foundation
import PackagePlugin

@main
struct ShaderPlugin: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) async throws -> [Command] {
        let shaderRoot = context.package.directoryURL.appending(path: "Shaders")
        let glslc = try findGLSLC()
        let tool = try context.tool(named: "vkattn-shaderc").url
        let out = context.pluginWorkDirectoryURL

        let allFiles = try filesUnder(shaderRoot)
        // Every file under Shaders/ is an input of every compile: an edit to an #included
        // .glsl must rebuild what includes it, and SwiftPM has no depfile support.
        let comps = allFiles.filter { $0.pathExtension == "comp" }
            .sorted { $0.path < $1.path }

        var commands: [Command] = []
        var symbols: [String] = []
        for comp in comps {
            let relative = String(comp.path.dropFirst(shaderRoot.path.count + 1))
            let baseName = String(relative.dropLast(".comp".count))
            let text = try String(contentsOf: comp, encoding: .utf8)
            let directives = parseDirectives(text)
            let variants = directives.variants.isEmpty ? [Variant(name: "", defines: [])] : directives.variants
            for variant in variants {
                let name = variant.name.isEmpty ? baseName : "\(baseName).\(variant.name)"
                let symbol = swiftSymbol(baseName: baseName, variant: variant.name)
                symbols.append(symbol)
                let output = out.appending(path: "Shader_\(symbol).swift")
                var args = [
                    "compile",
                    "--glslc", glslc.path,
                    "--input", comp.path,
                    "--include", shaderRoot.path,
                    "--name", name,
                    "--symbol", symbol,
                    "--target-env", directives.targetEnv,
                    "--output", output.path,
                    "--scratch", out.appending(path: "\(symbol).spv").path,
                ]
                for ext in directives.requires { args += ["--requires", ext] }
                args += variant.defines.map { "--define=\($0)" }
                commands.append(.buildCommand(
                    displayName: "Compiling shader \(name)",
                    executable: tool,
                    arguments: args,
                    inputFiles: allFiles + [glslc],
                    outputFiles: [output]
                ))
            }
        }

        let index = out.appending(path: "ShaderIndex.swift")
        commands.append(.buildCommand(
            displayName: "Indexing \(symbols.count) shaders",
            executable: tool,
            arguments: ["index", "--output", index.path] + symbols,
            inputFiles: [],
            outputFiles: [index]
        ))

        let features = out.appending(path: "ShaderToolchain.swift")
        commands.append(.buildCommand(
            displayName: "Probing glslc features",
            executable: tool,
            arguments: ["probe", "--glslc", glslc.path, "--output", features.path,
                        "--scratch", out.appending(path: "probe").path],
            inputFiles: [glslc],
            outputFiles: [features]
        ))
        return commands
    }
}

struct Variant {
    var name: String
    var defines: [String]
}

struct Directives {
    var variants: [Variant] = []
    var requires: [String] = []
    var targetEnv = "vulkan1.2"
}

func parseDirectives(_ text: String) -> Directives {
    var result = Directives()
    for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
        let trimmed = line.trimmingCharacters(in: .whitespaces)
        guard trimmed.hasPrefix("//!") else { continue }
        let words = trimmed.dropFirst(3).split(separator: " ").map(String.init)
        guard let keyword = words.first else { continue }
        switch keyword {
        case "variant" where words.count >= 2:
            let defines = words.dropFirst(2).map { $0.hasPrefix("-D") ? String($0.dropFirst(2)) : $0 }
            result.variants.append(Variant(name: words[1], defines: Array(defines)))
        case "requires":
            result.requires += words.dropFirst()
        case "target" where words.count == 2:
            result.targetEnv = words[1]
        default:
            continue
        }
    }
    return result
}

/// `attention/forward.comp` variant `f16` -> `attentionForwardF16`.
func swiftSymbol(baseName: String, variant: String) -> String {
    let parts = (baseName + "_" + variant).split(whereSeparator: { "/_-. ".contains($0) })
    var symbol = ""
    for (i, part) in parts.enumerated() {
        let word = String(part)
        symbol += i == 0 ? word.prefix(1).lowercased() + word.dropFirst()
                         : word.prefix(1).uppercased() + word.dropFirst()
    }
    return symbol
}

func filesUnder(_ root: URL) throws -> [URL] {
    guard let enumerator = FileManager.default.enumerator(
        at: root, includingPropertiesForKeys: [.isRegularFileKey]) else { return [] }
    var files: [URL] = []
    for case let url as URL in enumerator {
        let values = try url.resourceValues(forKeys: [.isRegularFileKey])
        if values.isRegularFile == true { files.append(url) }
    }
    return files.sorted { $0.path < $1.path }
}

struct GLSLCNotFound: Error, CustomStringConvertible {
    var description: String {
        "glslc not found: install the Debian package `glslc` (apt-get install glslc), "
            + "put glslc on PATH, or set GLSLC to its path"
    }
}

/// SwiftPM's `context.tool(named:)` does not search PATH, so look it up here.
func findGLSLC() throws -> URL {
    let env = ProcessInfo.processInfo.environment
    if let explicit = env["GLSLC"], !explicit.isEmpty {
        guard FileManager.default.isExecutableFile(atPath: explicit) else { throw GLSLCNotFound() }
        return URL(fileURLWithPath: explicit)
    }
    let path = env["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
    for dir in path.split(separator: ":") {
        let candidate = URL(fileURLWithPath: String(dir)).appending(path: "glslc")
        if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
    }
    throw GLSLCNotFound()
}
