import ArgumentParser
import Foundation
import VkAttn
import VkAttnParallel

// Every option that takes one of a few words is an enum: ArgumentParser parses it, `--help`
// lists its values, and a word outside them is refused before `validate` (one line, exit
// status 1: see `VkAttnBench.oneLine`). Raw values are the spellings, and the JSON rows print
// the raw values, as they printed the words before.

// The library's own enums, spelled by their raw values.
extension SequenceSharding: ExpressibleByArgument {}
extension TransferRoute: ExpressibleByArgument {}
extension GatedLinearAttention.Gating: ExpressibleByArgument {}
extension KernelPreference: ExpressibleByArgument {}
extension ScanOperator: ExpressibleByArgument {}
extension LinearRecurrence.Layout: ExpressibleByArgument {
    /// `bld` and `bdl` are accepted too.
    public init?(argument: String) { self.init(rawValue: argument.uppercased()) }
}

/// `--dtype` of attention, decode, linear attention and the sparse values: the storage types
/// those kernels read.
enum StorageType: String, CaseIterable, ExpressibleByArgument {
    case f32, f16, bf16

    var dtype: DType {
        switch self {
        case .f32: return .f32
        case .f16: return .f16
        case .bf16: return .bf16
        }
    }
}

/// `--kv-dtype` of decode: a K/V cache stored as f32, f16, bf16, or int8 with per-block scales.
enum CacheStorageType: String, CaseIterable, ExpressibleByArgument {
    case f32, f16, bf16, int8
}

/// `--dtype` of the context-parallel attention commands: f32 or f16 storage.
enum ParallelStorageType: String, CaseIterable, ExpressibleByArgument {
    case f32, f16

    var dtype: DType { self == .f16 ? .f16 : .f32 }
}

/// `--dtype` of `scan`: the element types the scans run on.
enum ScanElementType: String, CaseIterable, ExpressibleByArgument {
    case f32, i32, u32

    var dtype: DType {
        switch self {
        case .f32: return .f32
        case .i32: return .i32
        case .u32: return .u32
        }
    }
}

/// `--dtype` of `recurrence`: the recurrence runs on fp32 only.
enum RecurrenceElementType: String, CaseIterable, ExpressibleByArgument {
    case f32
}

/// `--backend` of the parallel commands.
enum Backend: String, CaseIterable, ExpressibleByArgument {
    /// Ranks are devices of this process.
    case local
    /// One process per rank under mpirun.
    case mpi
}

/// `ring --variant`: the ring's point-to-point rotation or the all-gather scheme.
enum RingVariant: String, CaseIterable, ExpressibleByArgument {
    case p2p
    case allGather = "all-gather"
    /// TokenRing: queries travel, partials return.
    case token
    /// The K/V ring or TokenRing, whichever `ringChoice` picks by bytes per link direction.
    case auto
}

/// `spmm --format`.
enum SparseFormat: String, CaseIterable, ExpressibleByArgument {
    case csr, bsr
}

/// `spmm --kernel`: the plan's choice, every kernel of the format in turn, or one forced (CSR
/// and block-CSR kernels have distinct names; `SpMM.validate` checks the kernel fits --format).
enum SpMMKernelChoice: Hashable, CaseIterable, RawRepresentable, ExpressibleByArgument {
    case auto
    case all
    case csr(SpMMKernel)
    case bsr(BSRKernel)

    static var allCases: [SpMMKernelChoice] { [.auto] + SpMMKernel.allCases.map(Self.csr) + BSRKernel.allCases.map(Self.bsr) + [.all] }

    init?(rawValue: String) {
        guard let choice = Self.allCases.first(where: { $0.rawValue == rawValue }) else { return nil }
        self = choice
    }

    var rawValue: String {
        switch self {
        case .auto: return "auto"
        case .all: return "all"
        case let .csr(kernel): return kernel.rawValue
        case let .bsr(kernel): return kernel.rawValue
        }
    }

    /// The CSR kernels to run (nil: the plan's choice), or nil for a block-CSR kernel.
    var csrKernels: [SpMMKernel?]? {
        switch self {
        case .auto: return [nil]
        case .all: return SpMMKernel.allCases
        case let .csr(kernel): return [kernel]
        case .bsr: return nil
        }
    }

    /// The block-CSR kernels to run (nil: the plan's choice), or nil for a CSR kernel.
    var bsrKernels: [BSRKernel?]? {
        switch self {
        case .auto: return [nil]
        case .all: return BSRKernel.allCases
        case let .bsr(kernel): return [kernel]
        case .csr: return nil
        }
    }
}

/// `--path` of `scan` and `recurrence`: the device's choice, every path in turn, or one forced.
enum PathChoice<Path>: Hashable, CaseIterable, RawRepresentable, ExpressibleByArgument
where Path: RawRepresentable & CaseIterable & Hashable & Sendable, Path.RawValue == String {
    case deviceDefault
    case both
    case forced(Path)

    static var allCases: [PathChoice] { Path.allCases.map(Self.forced) + [.both, .deviceDefault] }

    init?(rawValue: String) {
        guard let choice = Self.allCases.first(where: { $0.rawValue == rawValue }) else { return nil }
        self = choice
    }

    var rawValue: String {
        switch self {
        case .deviceDefault: return "default"
        case .both: return "both"
        case let .forced(path): return path.rawValue
        }
    }

    /// The paths to run, in order; nil lets the device choose.
    var paths: [Path?] {
        switch self {
        case .deviceDefault: return [nil]
        case .both: return Path.allCases.map { $0 }
        case let .forced(path): return [path]
        }
    }
}

extension VkAttnBench {
    /// ArgumentParser reports a word that no case of an option's enum spells as a usage error:
    /// the message, the option's help and the usage, exit status 64 (the list of values spread
    /// over lines when it is long). The bench's contract for a bad option value is one line
    /// and exit status 1 (Tools/bench-sweep.sh), as `OptionError` gives: such an error becomes
    /// one, its text ArgumentParser's message on one line. Other errors pass unchanged.
    /// - Parameter error: what parsing or running a command threw.
    /// - Returns: the error to exit with.
    static func oneLine(_ error: any Error) -> any Error {
        guard exitCode(for: error) == .validationFailure else { return error }
        let text = message(for: error)
        guard text.hasPrefix("The value '") else { return error }
        let items = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        guard let first = items.first else { return error }
        // "...one of the following:" then "- value" lines: one comma-separated list.
        let values = items.dropFirst().map { $0.hasPrefix("- ") ? String($0.dropFirst(2)) : $0 }
        return OptionError(values.isEmpty ? first : "\(first) \(values.joined(separator: ", ")).")
    }
}
