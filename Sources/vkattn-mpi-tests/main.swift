// vkattn-mpi-tests: the MPI backend's tests, run under `mpirun -np N` (Tools/test-mpi.sh).
// Every rank checks its part against host or single-device references; rank 0 prints every
// rank's lines; the exit status is non-zero on any failure.
//   vkattn-mpi-tests [--staged]         the communicator, its collectives, every scheduler, linear
//                                       attention and the linear recurrence across ranks
//                                       (--staged: through staging buffers even where memory is mapped)
//   vkattn-mpi-tests --only NAME[,NAME] only those groups: collectives, schedulers, linear, recurrence
//   vkattn-mpi-tests --fail-rank K      rank K throws: every rank must exit with an error naming K
//   vkattn-mpi-tests --stall-rank K     rank K never joins: timeouts must end every rank
// (A rank that cannot create its device: Tools/test-mpi.sh starts one with a bad VKATTN_DEVICE.)
import Glibc
import VkAttn
import VkAttnMPI
import VkAttnParallel

func option(_ name: String) -> Int? {
    let args = CommandLine.arguments
    guard let i = args.firstIndex(of: name), i + 1 < args.count else { return nil }
    return Int(args[i + 1])
}

/// Writes a line to standard error (file descriptor 2: no shared FILE state).
func printError(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
}

func fail(_ rank: Int, _ error: any Error) -> Never {
    printError("rank \(rank): error: \(error)")
    MPIEngine.finalizeIfStarted()
    exit(1)
}

let log = ValidationLog()
let comm: MPICommunicator
do {
    comm = try MPICommunicator.world(log: log, route: CommandLine.arguments.contains("--staged") ? .staged : nil)
} catch {
    fail(MPIEngine.startedWorldRank ?? -1, error)
}
let rank = comm.rank

if let failing = option("--fail-rank") {
    do {
        try await FailureChecks.throwingRank(comm, failing: failing)
        printError("rank \(rank): error: the failure run completed")
    } catch {
        fail(rank, error)
    }
    fail(rank, MPIError.finalized)
}
if let stalled = option("--stall-rank") {
    do {
        try await FailureChecks.stalledRank(comm, stalled: stalled)
        printError("rank \(rank): error: the stalled run completed")
    } catch {
        fail(rank, error)
    }
    fail(rank, MPIError.finalized)
}

do {
    // Rank 0's seed for every rank.
    let seeds = try await comm.hostAllGather(withUnsafeBytes(of: freshSeed()) { Array($0) })
    let seed = seeds[0].withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
    let report = Report(rank: rank, seed: seed)
    if rank == 0 {
        print("vkattn-mpi-tests: \(comm.size) ranks, seed \(seed) (VKATTN_SEED replays), device: \(comm.deviceChoice), path \(comm.route.rawValue)")
        for (name, path) in MPICommunicator.collectivePaths.sorted(by: { $0.key < $1.key }) { print("  \(name): \(path)") }
    }
    let only = CommandLine.arguments.firstIndex(of: "--only").flatMap { i in
        i + 1 < CommandLine.arguments.count ? Set(CommandLine.arguments[i + 1].split(separator: ",").map(String.init)) : nil
    }
    let groups: [(String, (MPICommunicator, Report) async throws -> Void)] = [
        ("collectives", CollectiveChecks.run), ("schedulers", SchedulerChecks.run),
        ("linear", LinearChecks.run), ("recurrence", RecurrenceChecks.run), ("delta", DeltaChecks.run),
    ]
    for (name, checks) in groups where only?.contains(name) ?? true {
        try await checks(comm, report)
    }
    let messages = log.messages
    report.expect("no validation messages", messages.isEmpty, messages.first.map { "\($0)" } ?? "")
    report.expect("traffic counted", comm.traffic.bytesSent > 0 && comm.traffic.bytesReceived > 0, "\(comm.traffic)")
    let all = try await comm.hostAllGather(Array((report.lines.joined(separator: "\n") + "\n").utf8))
    let failures = try await comm.hostAllGather([UInt8(min(report.failures, 255))]).map { Int($0[0]) }.reduce(0, +)
    if rank == 0 {
        for text in all { print(String(decoding: text, as: UTF8.self), terminator: "") }
        print(failures == 0 ? "vkattn-mpi-tests: all passed (\(comm.size) ranks)" : "vkattn-mpi-tests: \(failures) FAILED (\(comm.size) ranks, seed \(seed))")
    }
    comm.finalize()
    exit(failures == 0 ? 0 : 1)
} catch {
    fail(rank, error)
}
