import VkAttn
import VkAttnMPI

let comm = try MPICommunicator.world()
let n = comm.size, r = comm.rank
let values = (0..<1000).map { Float($0 + 1000 * r) }
let source = try comm.device.makeBuffer(values)
let destination = try comm.device.makeBuffer(of: Float.self, count: 1000)
let stream = try comm.device.makeStream()
let s = try comm.send(source.whole, to: (r + 1) % n, tag: 5, on: stream)
let q = try comm.receive(into: destination.whole, from: (r + n - 1) % n, tag: 5, on: stream)
try comm.complete([s, q], on: stream)
let sub = try stream.submit()
while !sub.isComplete { try await Task.sleep(nanoseconds: 100_000) }
try stream.synchronize()
try await comm.wait([s, q])
let got = try destination.read(Float.self, count: 1000)
let peer = (r + n - 1) % n
print("rank \(r)/\(n): got[0] = \(got[0]) expected \(1000 * peer), ok = \(got == (0..<1000).map { Float($0 + 1000 * peer) }) traffic \(comm.traffic) device \(comm.deviceChoice)")
comm.finalize()
