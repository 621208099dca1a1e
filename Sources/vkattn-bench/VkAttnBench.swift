import ArgumentParser
import Foundation
import VkAttn

@main
struct VkAttnBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vkattn-bench",
        abstract: "Benchmarks and checks VkAttn's kernels on a Vulkan device.",
        discussion: """
            With no subcommand: the tour (the device report, then every op family checked and timed).
            Environment: VKATTN_DEVICE (index or name substring), VKATTN_VALIDATION (1 or sync).
            --json prints one JSON object per measured configuration (JSON Lines).
            """,
        subcommands: [Devices.self, Copy.self, Fill.self, Attention.self, Decode.self, SpMM.self, SDDMM.self, Scan.self,
                      Recurrence.self, LinearAttention.self, DeltaRuleCommand.self, Mamba.self, Ring.self, Placement.self, Ulysses.self, Hybrid.self,
                      TreeDecodeCommand.self,
                      StarAttentionCommand.self, Lasp.self, Lasp2.self, Zeco.self,
                      Suite.self, Compare.self, Tour.self],
        defaultSubcommand: Tour.self
    )

    /// ArgumentParser's entry, then the teardown check (BenchTeardown) once the command and every
    /// device it made are gone.
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            exit(withError: oneLine(error))
        }
        if !BenchTeardown.finish() { Foundation.exit(1) }
    }
}

/// Options every subcommand shares.
struct DeviceOptions: ParsableArguments {
    @Option(name: .long, help: "Device index or name substring (default: VKATTN_DEVICE, else the best GPU, else lavapipe).")
    var device: String?
}
