// Build-tool plugin: plans one command per Shaders/**/*.comp that compiles all of its
// variants with glslc into a generated Swift file embedding the SPIR-V (see
// Tools/ShaderCompiler for the directives a .comp file may carry).
//
// The shaders are the files of the VkAttnShaders target, so SwiftPM re-plans (re-runs this
// plugin) when one is added or removed. Everything read from inside a file (its variants,
// its required extensions) is read by the compile command at build time, so editing a
// directive needs no re-plan.
import Foundation
import PackagePlugin

@main
struct ShaderPlugin: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) async throws -> [Command] {
        guard let module = target.sourceModule else { return [] }
        let shaderRoot = module.directoryURL
        let glslc = try findGLSLC()
        let tool = try context.tool(named: "vkattn-shaderc").url
        let out = context.pluginWorkDirectoryURL
        // The generated members extend the module's one hand-written enum, named after the
        // module: VkAttnShaders -> Shaders, VkAttnTestShaders -> TestShaders.
        let namespace = target.name.hasPrefix("VkAttn") ? String(target.name.dropFirst("VkAttn".count)) : target.name

        // Every GLSL file is an input of every compile: an edit to an #included .glsl must
        // rebuild what includes it, and build commands have no depfiles.
        let glslFiles = module.sourceFiles.map(\.url).filter { ["comp", "glsl"].contains($0.pathExtension) }
            .sorted { $0.path < $1.path }
        let comps = glslFiles.filter { $0.pathExtension == "comp" }

        var commands: [Command] = []
        var symbols: [String] = []
        for comp in comps {
            let relative = String(comp.path.dropFirst(shaderRoot.path.count + 1))
            let baseName = String(relative.dropLast(".comp".count))
            let symbol = swiftSymbol(baseName)
            symbols.append(symbol)
            let output = out.appending(path: "Shader_\(symbol).swift")
            commands.append(.buildCommand(
                displayName: "Compiling shader \(relative)",
                executable: tool,
                arguments: [
                    "compile",
                    "--glslc", glslc.path,
                    "--input", comp.path,
                    "--include", shaderRoot.path,
                    "--name", baseName,
                    "--symbol", symbol,
                    "--namespace", namespace,
                    "--output", output.path,
                    "--scratch", out.appending(path: "spv").path,
                ],
                inputFiles: glslFiles + [glslc],
                outputFiles: [output]
            ))
        }

        let index = out.appending(path: "ShaderIndex.swift")
        commands.append(.buildCommand(
            displayName: "Indexing \(symbols.count) shader files",
            executable: tool,
            arguments: ["index", "--output", index.path, "--namespace", namespace] + symbols,
            inputFiles: [],
            outputFiles: [index]
        ))

        // What the compiler accepts is reported once, by the library's shaders.
        guard namespace == "Shaders" else { return commands }
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

/// `attention/forward` -> `attentionForward`.
func swiftSymbol(_ name: String) -> String {
    let parts = name.split(whereSeparator: { "/_-. ".contains($0) })
    var symbol = ""
    for (i, part) in parts.enumerated() {
        let word = String(part)
        symbol += i == 0 ? word.prefix(1).lowercased() + word.dropFirst()
                         : word.prefix(1).uppercased() + word.dropFirst()
    }
    return symbol
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
