import ArgumentParser
import Foundation

struct Suite: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The standard shapes of every op, one after another, with a progress line on stderr.",
        discussion: """
            The shapes are the ones Tools/peers measures, so one run on a GPU machine gives both \
            sides of `vkattn-bench compare`. --quick runs small shapes (lavapipe, CI smoke runs).
            """)

    @OptionGroup var device: DeviceOptions
    @Flag(help: "Small shapes (for CPU devices).") var quick = false
    @Flag(help: "Compare every result with the reference.") var check = false
    @Flag(help: "One JSON object per configuration (JSON Lines).") var json = false
    @Option(help: "Timed runs per configuration.") var iterations = 20
    @Flag(name: .customLong("plan-json"), help: "Print the plan (subcommand and arguments per step) as JSON and exit; Tools/peers reads it.")
    var planJSON = false

    func validate() throws {
        guard (1...Timing.maxIterations).contains(iterations) else { throw OptionError("--iterations must be in 1...\(Timing.maxIterations)") }
    }

    /// (subcommand, arguments) for every configuration of the suite.
    func plan() -> [(String, [String])] {
        var steps: [(String, [String])] = []
        let dims = quick ? [64] : [64, 128]
        steps.append(("copy", ["--bytes", quick ? "16M" : "1G"]))
        // The tensor-core targets: f16 and bf16, S = 4K..64K; f32 (scalar kernels) at 4K.
        for dtype in quick ? ["f32"] : ["f16", "bf16", "f32"] {
            let seqs = quick ? [256, 512] : dtype == "f32" ? [4096] : [4096, 16384, 65536]
            for d in dims {
                for s in seqs {
                    for causal in [false, true] {
                        let heads = d == 64 ? (quick ? 2 : 16) : (quick ? 2 : 8)
                        var args = ["--seq", String(s), "--heads", String(heads), "--dim", String(d), "--dtype", dtype, "--backward"]
                        if causal { args.append("--causal") }
                        steps.append(("attention", args))
                    }
                }
            }
        }
        for dtype in quick ? ["f32"] : ["f16", "bf16"] {
            steps.append(("decode", quick ? ["--heads", "8", "--kv-heads", "2", "--cache", "2048"]
                                          : ["--heads", "32", "--kv-heads", "8", "--dim", "128", "--cache", "32768", "--batch", "4", "--dtype", dtype]))
        }
        steps.append(("scan", ["--count", quick ? "1048576" : "268435456"]))
        if !quick {
            // No PyTorch peer: checked and timed for the record.
            for backward in [false, true] {
                steps.append(("linear-attention", ["--batch", "2", "--length", "16384", "--heads", "8", "--dk", "128", "--dv", "128",
                                                   "--dtype", "f16"] + (backward ? ["--backward"] : [])))
            }
            for backward in [false, true] {
                steps.append(("mamba", ["--batch", "2", "--seq", "16384", "--channels", "1536", "--state", "16", "--dtype", "f16"]
                                       + (backward ? ["--backward"] : [])))
                steps.append(("mamba", ["--variant", "ssd", "--batch", "2", "--seq", "16384", "--heads", "24", "--head-dim", "64",
                                        "--state", "128", "--dtype", "f16"] + (backward ? ["--backward"] : [])))
            }
            steps.append(("spmm", ["--format", "bsr", "--dtype", "f16", "--rows", "16384", "--density", "0.01", "--n", "256"]))
        }
        for n in quick ? [16] : [64, 256, 512] {
            for distribution in ["uniform", "power-law"] {
                for density in quick ? ["0.01"] : ["0.0005", "0.01", "0.05"] {
                    steps.append(("spmm", ["--rows", quick ? "2048" : "65536", "--cols", quick ? "2048" : "65536",
                                           "--density", density, "--distribution", distribution, "--n", String(n)]))
                }
            }
        }
        return steps
    }

    func run() throws {
        let steps = plan()
        if planJSON {
            let objects = steps.map { ["command": $0.0, "args": $0.1] as [String: Any] }
            let data = try JSONSerialization.data(withJSONObject: objects, options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        for (index, step) in steps.enumerated() {
            note("[\(index + 1)/\(steps.count)] vkattn-bench \(step.0) \(step.1.joined(separator: " "))")
            var args = [step.0] + step.1 + ["--iterations", String(iterations), "--warmup", "3"]
            if let d = device.device { args += ["--device", d] }
            if check { args.append("--check") }
            if json { args.append("--json") }
            var command = try VkAttnBench.parseAsRoot(args)
            try command.run()
        }
    }
}
