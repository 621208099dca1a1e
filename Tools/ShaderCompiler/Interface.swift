// The interface of one compiled variant, read from glslc's preprocessed source (the SPIR-V is
// optimized and carries no names): its push-constant block (member names, GLSL types, std430
// offsets) and its specialization constants (name -> constant_id). The library checks the
// Swift side against it, so that Swift and GLSL never agree by position alone.
import Foundation

struct PushMember {
    var name: String
    var type: String
    var offset: Int
}

struct ShaderInterfaceRecord {
    var pushMembers: [PushMember] = []
    var pushBytes = 0
    var specializationIDs: [(String, Int)] = []
}

/// Size and alignment of the GLSL types a push-constant block may hold (std430).
let pushTypeLayout: [String: (size: Int, align: Int)] = [
    "uint": (4, 4), "int": (4, 4), "float": (4, 4), "bool": (4, 4),
]

func readInterface(preprocessed source: String, file: String) throws -> ShaderInterfaceRecord {
    var record = ShaderInterfaceRecord()
    let text = source.replacingOccurrences(of: #"//[^\n]*"#, with: "", options: .regularExpression)
    let ns = text as NSString
    let whole = NSRange(location: 0, length: ns.length)

    let block = try NSRegularExpression(pattern: #"layout\s*\(\s*push_constant\s*\)\s*uniform\s+\w+\s*\{([^}]*)\}"#)
    let blocks = block.matches(in: text, range: whole)
    guard blocks.count <= 1 else { throw ToolError(description: "\(file): error: more than one push_constant block") }
    if let m = blocks.first {
        var offset = 0
        for declaration in ns.substring(with: m.range(at: 1)).split(separator: ";") {
            let words = declaration.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" || $0 == "," }).map(String.init)
            guard let type = words.first else { continue }
            guard let layout = pushTypeLayout[type] else {
                throw ToolError(description: "\(file): error: push-constant member type `\(type)` is not one the library's push-constant blocks can mirror (\(pushTypeLayout.keys.sorted()))")
            }
            for name in words.dropFirst() {
                guard name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
                    throw ToolError(description: "\(file): error: push-constant member `\(name)`: arrays and initializers are not supported")
                }
                offset = (offset + layout.align - 1) / layout.align * layout.align
                record.pushMembers.append(PushMember(name: name, type: type, offset: offset))
                offset += layout.size
            }
        }
        record.pushBytes = offset
    }

    let constant = try NSRegularExpression(pattern: #"layout\s*\(\s*constant_id\s*=\s*(\d+)\s*\)\s*const\s+\w+\s+(\w+)"#)
    for m in constant.matches(in: text, range: whole) {
        record.specializationIDs.append((ns.substring(with: m.range(at: 2)), Int(ns.substring(with: m.range(at: 1))) ?? -1))
    }
    let local = try NSRegularExpression(pattern: #"local_size_([xyz])_id\s*=\s*(\d+)"#)
    for m in local.matches(in: text, range: whole) {
        record.specializationIDs.append(("local_size_" + ns.substring(with: m.range(at: 1)), Int(ns.substring(with: m.range(at: 2))) ?? -1))
    }
    var seen: [String: Int] = [:]
    for (name, id) in record.specializationIDs {
        if let other = seen[name], other != id {
            throw ToolError(description: "\(file): error: specialization constant \(name) declared with ids \(other) and \(id)")
        }
        seen[name] = id
    }
    return record
}

/// The Swift expression of a record: `ShaderInterface(...)`.
func swiftInterface(_ r: ShaderInterfaceRecord) -> String {
    let members = r.pushMembers.map { "(\(swiftStringLiteral($0.name)), .\($0.type == "bool" ? "bool" : $0.type == "int" ? "int" : $0.type == "float" ? "float" : "uint"), \($0.offset))" }
    let ids = r.specializationIDs.sorted { $0.1 < $1.1 }.map { "\(swiftStringLiteral($0.0)): \($0.1)" }
    return "ShaderInterface(pushConstants: [\(members.joined(separator: ", "))], pushConstantBytes: \(r.pushBytes), specializationIDs: [\(ids.isEmpty ? ":" : ids.joined(separator: ", "))])"
}
