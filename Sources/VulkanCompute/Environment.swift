#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads an environment variable without Foundation (the library does not link it).
func environment(_ name: String) -> String? {
    guard let value = getenv(name) else { return nil }
    return String(cString: value)
}

/// The environment variables the library reads, in one place.
public enum EnvironmentKey {
    /// `1` turns on the Khronos validation layer; `sync` adds synchronization validation.
    public static let validation = "VKATTN_VALIDATION"
    /// A device index or a case-insensitive substring of its name.
    public static let device = "VKATTN_DEVICE"
    /// `1` keeps every op on its scalar kernels even where cooperative matrices are usable.
    public static let disableCooperativeMatrix = "VKATTN_DISABLE_COOPMAT"
    /// `rolled` or `unrolled`: which variant of the cooperative-matrix kernels to run (default:
    /// rolled on CPU devices, unrolled on GPUs); lets a CPU check the GPU variants.
    public static let cooperativeMatrixLoops = "VKATTN_COOPMAT_LOOPS"
}

extension EnvironmentKey {
    /// The value of the environment variable `name`, or nil when it is unset.
    /// - Parameter name: The variable's name, e.g. ``validation``.
    /// - Returns: Its value, or nil when unset.
    public static func value(of name: String) -> String? { environment(name) }
}
