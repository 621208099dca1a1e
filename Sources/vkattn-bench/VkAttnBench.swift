import ArgumentParser
import Foundation
import VkAttn

@main
struct VkAttnBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vkattn-bench",
        abstract: "Benchmarks and checks VkAttn's kernels on a Vulkan device.",
        discussion: """
            With no subcommand: the device report and a short copy benchmark.
            Environment: VKATTN_DEVICE (index or name substring), VKATTN_VALIDATION (1 or sync).
            --json prints one JSON object per measured configuration (JSON Lines).
            """,
        subcommands: [Devices.self, Copy.self, Fill.self, Attention.self, Decode.self, SpMM.self, SDDMM.self, Scan.self,
                      Recurrence.self, LinearAttention.self, Ring.self, Ulysses.self, Hybrid.self, TreeDecodeCommand.self,
                      Lasp.self, Lasp2.self, Zeco.self,
                      Suite.self, Compare.self]
    )

    @OptionGroup var device: DeviceOptions

    /// ArgumentParser's entry, then the teardown check (BenchTeardown) once the command and every
    /// device it made are gone.
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            exit(withError: error)
        }
        if !BenchTeardown.finish() { Foundation.exit(1) }
    }

    func run() throws {
        let context = try BenchContext(device)
        print(DeviceReport.table(context.device.physicalDevice.instance, selected: context.device.physicalDevice.index))
        print("")
        let bytes = 32 << 20
        print("Copy bandwidth, \(formatBytes(bytes)) (run `vkattn-bench copy --help` for options)")
        let rows = try CopyBenchmark(bytes: bytes, warmup: 3, iterations: 10, check: true).run(context)
        try context.report(rows, json: false)
    }
}

/// Options every subcommand shares.
struct DeviceOptions: ParsableArguments {
    @Option(name: .long, help: "Device index or name substring (default: VKATTN_DEVICE, else the best GPU, else lavapipe).")
    var device: String?
}
