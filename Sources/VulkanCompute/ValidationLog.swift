import CVulkan
import Synchronization

/// One message from the validation layer (or the loader) at warning or error severity.
public struct ValidationMessage: Sendable, CustomStringConvertible {
    /// How serious a message is (info and verbose messages are not collected).
    public enum Severity: String, Sendable { case warning, error }
    /// Warning or error.
    public let severity: Severity
    /// The VUID or message name, e.g. `VUID-vkCmdDispatch-None-02697`.
    public let id: String
    /// The layer's message.
    public let text: String

    /// `[severity] id: text`.
    public var description: String { "[\(severity.rawValue)] \(id): \(text)" }
}

/// Collects every validation warning and error of an instance, so tests can fail on them.
/// Outlives the instance when the caller keeps a reference: messages about objects leaked at
/// device or instance teardown are still readable afterwards.
public final class ValidationLog: Sendable {
    private let storage = Mutex<[ValidationMessage]>([])
    private let known = Mutex<(ids: Set<String>, count: Int)>(([], 0))

    /// The old layers' false positive on host-signaled timeline semaphores (see `Instance`).
    static let semaphoreStateTimeout = "UNASSIGNED-VkSemaphore-state-timeout"

    /// An empty log.
    public init() {}

    /// The messages collected so far (known layer bugs excluded).
    public var messages: [ValidationMessage] { storage.withLock { $0 } }

    /// Message ids this log counts as known bugs of the installed layer instead of keeping them
    /// (set by `Instance` for old layers only).
    var knownLayerBugs: Set<String> {
        get { known.withLock { $0.ids } }
        set { known.withLock { $0.ids = newValue } }
    }

    /// How many messages were known layer bugs (not findings), so far.
    public var knownLayerBugCount: Int { known.withLock { $0.count } }

    /// Returns the messages collected so far and forgets them.
    /// - Returns: The messages collected since the last drain.
    public func drain() -> [ValidationMessage] {
        storage.withLock { messages in
            defer { messages.removeAll() }
            return messages
        }
    }

    func append(_ message: ValidationMessage) {
        let isKnown = known.withLock { state in
            guard state.ids.contains(message.id) else { return false }
            state.count += 1
            return true
        }
        if !isKnown { storage.withLock { $0.append(message) } }
    }
}

/// The debug-utils callback: runs on whatever thread made the Vulkan call.
let debugCallback: PFN_vkDebugUtilsMessengerCallbackEXT = { severity, _, data, userData in
    guard let userData, let data else { return VkBool32(VK_FALSE) }
    let log = Unmanaged<ValidationLog>.fromOpaque(userData).takeUnretainedValue()
    let isError = (severity.rawValue & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT.rawValue) != 0
    let id = data.pointee.pMessageIdName.map { String(cString: $0) } ?? "\(data.pointee.messageIdNumber)"
    let text = data.pointee.pMessage.map { String(cString: $0) } ?? ""
    log.append(ValidationMessage(severity: isError ? .error : .warning, id: id, text: text))
    return VkBool32(VK_FALSE)
}

func messengerCreateInfo(_ log: ValidationLog) -> VkDebugUtilsMessengerCreateInfoEXT {
    var info = VkDebugUtilsMessengerCreateInfoEXT()
    info.sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT
    info.messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT.rawValue
        | VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT.rawValue
    info.messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT.rawValue
        | VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT.rawValue
        | VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT.rawValue
    info.pfnUserCallback = debugCallback
    info.pUserData = Unmanaged.passUnretained(log).toOpaque()
    return info
}
