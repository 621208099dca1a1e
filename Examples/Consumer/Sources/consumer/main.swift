// Copies random data with VkAttn's shader copy and checks it: proves the SPIR-V travels
// inside the binary (this program runs from a directory unrelated to any build folder).
import VkAttn
import VkAttnReference

#if canImport(Glibc)
import Glibc
#endif

let device = try Device()
var rng = SeededRandom.fresh()
let words = 1_000_003
let values = rng.words(words)
let source = try device.makeBuffer(values)
let destination = try device.makeBuffer(of: UInt32.self, count: words)
let stream = try device.makeStream()
try ShaderCopy().encode(from: source.whole, to: destination.whole, on: stream)
try stream.synchronize()
let copied = try destination.read(UInt32.self, count: words)
if copied == values {
    print("consumer: shader copy of \(words * 4) bytes on \(device.capabilities.name): ok")
} else {
    print("consumer: shader copy MISMATCH (seed \(rng.seed))")
    exit(1)
}
