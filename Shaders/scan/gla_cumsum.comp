#version 450
// Gated linear attention: log gates cumulated within each chunk (inclusive), one invocation
// per (b, h, key dimension or head, chunk), serial over the chunk's rows.
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint GATE = 2;  // 1: per head, 2: per key dimension
#define GLA_TABLE_BINDING 2
#include "common/scan_gla.glsl"

layout(std430, binding = 0) readonly buffer G { float gates[]; };
layout(std430, binding = 1) writeonly buffer GC { float gcum[]; };

void main() {
    const uint G_ = GATE == 2u ? pc.Dk : 1u;
    const uint id = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    const uint i = id % G_;
    const uint rest = id / G_;
    const uint c = rest % pc.NC;
    const uint bh = rest / pc.NC;
    if (bh >= pc.B * pc.H) return;
    const uint b = bh / pc.H, h = bh % pc.H;
    float acc = 0.0;
    const uint t0 = chunk_t0(c), rows = chunk_len(c);
    for (uint r = 0u; r < rows; ++r) {
        const uint at = gate_index(b, t0 + r, h, i);
        acc += gates[at];
        gcum[at] = acc;
    }
}
