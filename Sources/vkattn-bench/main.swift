import VkAttn
let device = try Device()
let words = (128 << 20) / 4
let a = try device.makeBuffer(of: UInt32.self, count: words)
let b = try device.makeBuffer(of: UInt32.self, count: words)
for name in ["cmdcopy", "fill", "copy", "cmdcopy", "fill", "copy"] {
    let s = try device.makeStream()
    let ts0 = try s.timestamp()
    switch name {
    case "cmdcopy": try s.copy(from: a.whole, to: b.whole)
    case "fill": try ShaderFill.encode(s, a.whole, value: UInt32(3))
    default: try ShaderCopy().encode(s, from: a.whole, to: b.whole)
    }
    let ts1 = try s.timestamp()
    try s.synchronize()
    print(name, try s.nanoseconds(from: ts0, to: ts1) / 1e6, "ms")
}
