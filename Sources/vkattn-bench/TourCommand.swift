import ArgumentParser
import Foundation
import VkAttn

/// `vkattn-bench` with no subcommand: what the library does, in about a minute on lavapipe.
/// The device report, then each op family once at a small size, checked against its reference
/// and timed. Every step runs the subcommand itself (parsed from the arguments it prints), so
/// the tour shows exactly what those commands do and each heading is the command that
/// reproduces its rows at any size.
struct Tour: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A short tour of the library: the device report, then one checked, timed run per op family.",
        discussion: """
            Attention forward and backward, decode, CSR SpMM, prefix scan, linear recurrence and gated \
            linear attention on one device, then ring attention and LASP-2 over 2 ranks, each at a small \
            size with --check (the fp64 references; the 2-rank runs against the same problem on one \
            device, as their --check does). --device applies to the one-device steps; the 2-rank steps place their \
            ranks as `ring` and `lasp2` do (VKATTN_DEVICE, else every GPU, else the default device). \
            The exit status is 1 when a check fails or the validation layer (VKATTN_VALIDATION) reports \
            anything; the remaining steps still run.
            """)

    @OptionGroup var device: DeviceOptions

    /// One op family: the subcommand and its (small) problem.
    struct Step {
        var title: String
        var command: String
        var arguments: [String]
        /// Whether the subcommand takes `--device` (the multi-rank ones place their ranks
        /// themselves: VKATTN_DEVICE, else every GPU, else the default device).
        var takesDevice = true
    }

    /// Sizes chosen for about a minute in all on lavapipe (2 cores) in a debug build, where the
    /// fp64 references and the host side of the multi-rank schedulers cost as much as the
    /// kernels.
    static let steps: [Step] = [
        Step(title: "Attention forward and backward", command: "attention",
             arguments: ["--seq", "1024", "--heads", "4", "--kv-heads", "2", "--dim", "64", "--causal", "--backward"]),
        Step(title: "Attention decode (split-KV + merge)", command: "decode",
             arguments: ["--heads", "8", "--kv-heads", "2", "--dim", "64", "--cache", "16384"]),
        Step(title: "SpMM, CSR x dense", command: "spmm",
             arguments: ["--rows", "16384", "--cols", "16384", "--density", "0.001", "--distribution", "power-law", "--n", "64"]),
        Step(title: "Prefix scan", command: "scan", arguments: ["--count", "2M"]),
        Step(title: "Linear recurrence", command: "recurrence",
             arguments: ["--batch", "2", "--length", "4096", "--channels", "256"]),
        Step(title: "Gated linear attention", command: "linear-attention",
             arguments: ["--batch", "1", "--length", "2048", "--heads", "2", "--dk", "64", "--dv", "64"]),
        Step(title: "Ring attention over 2 ranks", command: "ring",
             arguments: ["--ranks", "2", "--seq", "2048", "--heads", "2", "--dim", "64", "--causal"],
             takesDevice: false),
        Step(title: "LASP-2 over 2 ranks", command: "lasp2",
             arguments: ["--ranks", "2", "--seq", "2048", "--heads", "2", "--dk", "64", "--dv", "64"],
             takesDevice: false),
    ]

    /// Timing for a tour: a glance, not a measurement (the subcommands' defaults are 5 and 30).
    static let measureArguments = ["--check", "--warmup", "1", "--iterations", "5"]

    func run() throws {
        let clock = ContinuousClock()
        let started = clock.now
        var failed: [String] = []

        // The `devices` report, with the device the steps will use marked (a selector that
        // matches nothing ends the tour here, with the list of devices).
        let log = BenchTeardown.log()
        let instance = try Instance(log: log)
        let selected = try instance.selectDevice(device.device)
        print(DeviceReport.table(instance, selected: selected.index))
        let messages = log.drain()
        for message in messages { note("validation: \(message)") }
        if !messages.isEmpty { failed.append("device report") }

        var seconds: [(String, Double)] = []
        for step in Self.steps {
            var arguments = [step.command] + step.arguments + Self.measureArguments
            if let selector = device.device, step.takesDevice { arguments += ["--device", selector] }
            print("\n== \(step.title): vkattn-bench \(arguments.joined(separator: " "))")
            let stepStart = clock.now
            do {
                var command = try VkAttnBench.parseAsRoot(arguments)
                try command.run()
            } catch let code as ExitCode {
                // The step has said why (a failed check, validation messages) on stderr.
                if code != .success { failed.append(step.title) }
            } catch {
                failed.append(step.title)
                note("error: \(step.title): \(VkAttnBench.message(for: error))")
            }
            seconds.append((step.command, Self.seconds(stepStart.duration(to: clock.now))))
        }

        let total = Self.seconds(started.duration(to: clock.now))
        print("\nTour: \(Self.steps.count) op families in \(fixed(total, 1)) s ("
              + seconds.map { "\($0.0) \(fixed($0.1, 1))" }.joined(separator: ", ") + ").")
        print(failed.isEmpty ? "Every check passed." : "FAILED: \(failed.joined(separator: "; ")).")
        print("`vkattn-bench --help` lists the subcommands; each `==` line above reruns its step at any size.")
        if !failed.isEmpty { throw ExitCode.failure }
    }

    static func seconds(_ duration: Duration) -> Double {
        let (s, attoseconds) = duration.components
        return Double(s) + Double(attoseconds) / 1e18
    }
}
