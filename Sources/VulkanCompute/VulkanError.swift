import CVulkan

/// Every failure of the device layer, thrown before anything is dispatched where it can be.
public enum VulkanError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A Vulkan call returned an error code.
    case call(String, result: Int32)
    /// No Vulkan device (or no Vulkan loader) is available.
    case noDevices(String)
    /// `VKATTN_DEVICE` (or an explicit selector) matched no device.
    case noMatchingDevice(selector: String, available: [String])
    /// The device lacks something the library requires (a Vulkan version, a feature).
    case unsupportedDevice(device: String, reason: String)
    /// `VKATTN_VALIDATION` asked for the Khronos validation layer and it is not installed.
    case validationLayerMissing
    /// An allocation larger than the device allows (one allocation or the whole heap).
    case bufferTooLarge(bytes: Int, limit: Int, what: String)
    /// A descriptor binding larger than `maxStorageBufferRange`.
    case bindingTooLarge(bytes: Int, maxStorageBufferRange: Int)
    /// A byte range that does not lie inside its buffer.
    case rangeOutOfBounds(offset: Int, bytes: Int, bufferBytes: Int)
    /// A binding offset not aligned to `minStorageBufferOffsetAlignment`.
    case misalignedOffset(offset: Int, alignment: Int)
    /// A host-allocation import whose offset or size is not a multiple of the device's
    /// minImportedHostPointerAlignment.
    case misalignedImport(offset: Int, bytes: Int, alignment: Int)
    /// A shader that this build could not embed (e.g. glslc lacked an extension).
    case shaderUnavailable(name: String, reason: String)
    /// An argument that is wrong in itself (counts, sizes, kinds); the message says which.
    case invalidArgument(String)
    /// A wait that did not finish in time.
    case timeout(String)

    /// A one-line message naming the call, value or limit involved (the device list for
    /// ``noMatchingDevice(selector:available:)``).
    public var description: String {
        switch self {
        case let .call(name, result):
            return "\(name) failed: \(resultName(result)) (\(result))"
        case let .noDevices(why):
            return "no Vulkan device: \(why)"
        case let .noMatchingDevice(selector, available):
            let list = available.enumerated().map { "  [\($0.offset)] \($0.element)" }.joined(separator: "\n")
            return "no Vulkan device matches '\(selector)'; available devices:\n\(list)"
        case let .unsupportedDevice(device, reason):
            return "device '\(device)' is not supported: \(reason)"
        case .validationLayerMissing:
            return "VKATTN_VALIDATION is set but VK_LAYER_KHRONOS_validation is not installed "
                + "(Debian package vulkan-validationlayers)"
        case let .bufferTooLarge(bytes, limit, what):
            return "buffer of \(bytes) bytes exceeds \(what) (\(limit) bytes)"
        case let .bindingTooLarge(bytes, limit):
            return "binding of \(bytes) bytes exceeds maxStorageBufferRange (\(limit) bytes)"
        case let .rangeOutOfBounds(offset, bytes, bufferBytes):
            return "range of \(bytes) bytes at offset \(offset) lies outside a buffer of \(bufferBytes) bytes"
        case let .misalignedOffset(offset, alignment):
            return "binding offset \(offset) is not a multiple of minStorageBufferOffsetAlignment (\(alignment))"
        case let .misalignedImport(offset, bytes, alignment):
            return "import of \(bytes) bytes at offset \(offset) of a host allocation: offset and allocation are not multiples of minImportedHostPointerAlignment (\(alignment))"
        case let .shaderUnavailable(name, reason):
            return "shader \(name) is unavailable: \(reason)"
        case let .invalidArgument(message):
            return message
        case let .timeout(what):
            return "timed out waiting for \(what)"
        }
    }
}

/// Throws `VulkanError.call` unless `result` is VK_SUCCESS (or another non-error code).
@inline(__always)
func check(_ result: VkResult, _ call: @autoclosure () -> String) throws {
    if result.rawValue < 0 { throw VulkanError.call(call(), result: result.rawValue) }
}

func resultName(_ code: Int32) -> String {
    switch code {
    case 0: return "VK_SUCCESS"
    case 1: return "VK_NOT_READY"
    case 2: return "VK_TIMEOUT"
    case 5: return "VK_INCOMPLETE"
    case -1: return "VK_ERROR_OUT_OF_HOST_MEMORY"
    case -2: return "VK_ERROR_OUT_OF_DEVICE_MEMORY"
    case -3: return "VK_ERROR_INITIALIZATION_FAILED"
    case -4: return "VK_ERROR_DEVICE_LOST"
    case -5: return "VK_ERROR_MEMORY_MAP_FAILED"
    case -6: return "VK_ERROR_LAYER_NOT_PRESENT"
    case -7: return "VK_ERROR_EXTENSION_NOT_PRESENT"
    case -8: return "VK_ERROR_FEATURE_NOT_PRESENT"
    case -9: return "VK_ERROR_INCOMPATIBLE_DRIVER"
    case -10: return "VK_ERROR_TOO_MANY_OBJECTS"
    case -11: return "VK_ERROR_FORMAT_NOT_SUPPORTED"
    case -12: return "VK_ERROR_FRAGMENTED_POOL"
    case -13: return "VK_ERROR_UNKNOWN"
    case -1000069000: return "VK_ERROR_OUT_OF_POOL_MEMORY"
    case -1000072003: return "VK_ERROR_INVALID_EXTERNAL_HANDLE"
    case -1000161000: return "VK_ERROR_FRAGMENTATION"
    default: return "VkResult"
    }
}
