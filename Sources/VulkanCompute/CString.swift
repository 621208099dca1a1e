/// Reads a fixed-size C `char[N]` array (imported by Swift as a tuple) as a String.
func string<T>(fromCArray tuple: T) -> String {
    withUnsafeBytes(of: tuple) { raw in
        let bytes = raw.bindMemory(to: UInt8.self)
        let end = bytes.firstIndex(of: 0) ?? bytes.count
        return String(decoding: bytes[0..<end], as: UTF8.self)
    }
}

/// Calls `body` with a C array of NUL-terminated strings that lives for the duration of the call.
func withCStringArray<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) throws -> R) rethrows -> R {
    if strings.isEmpty { return try body(nil) }
    let array = UnsafeMutablePointer<UnsafePointer<CChar>?>.allocate(capacity: strings.count)
    var owned: [UnsafeMutableBufferPointer<CChar>] = []
    defer {
        owned.forEach { $0.deallocate() }
        array.deallocate()
    }
    for (i, s) in strings.enumerated() {
        let utf8 = s.utf8CString
        let copy = UnsafeMutableBufferPointer<CChar>.allocate(capacity: utf8.count)
        _ = copy.initialize(from: utf8)
        owned.append(copy)
        (array + i).initialize(to: UnsafePointer(copy.baseAddress))
    }
    return try body(UnsafePointer(array))
}
