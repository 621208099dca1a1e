#version 450
// Mamba-1 selective scan, middle pass: one invocation per (sequence s, channel d, state n)
// walks the sequence's chunk maps. Forward: from the initial state, writes each chunk's start
// state (states plane 0), then the final state. BACKWARD: in reverse from dL/d(final state),
// writes each chunk's incoming adjoint a_{t+1} g_{t+1} at its last row (states plane 1), then
// dL/d(initial state). A sequence without rows passes its initial value straight through.
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const bool BACKWARD = false;
#include "common/mamba_selective.glsl"

layout(std430, binding = 0) readonly buffer MP { float maps[]; };   // [3][nChunks][Dch][N]: P, U, Q
layout(std430, binding = 1) writeonly buffer ST { float states[]; };
layout(std430, binding = 2) readonly buffer IN { float init[]; };   // [nSeq][Dch][N]
layout(std430, binding = 3) writeonly buffer FI { float final_[]; };
layout(std430, binding = 4) readonly buffer TB { uint table[]; };

void main() {
    const uint id = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    const uint DN = pc.Dch * pc.N;
    if (id >= pc.nSeq * DN) return;
    const uint s = id / DN, e = id % DN;
    const uint c0 = table[4u * pc.nChunks + s], c1 = table[4u * pc.nChunks + s + 1u];
    float v = has(HAS_INIT) ? init[id] : 0.0;
    if (!BACKWARD) {
        for (uint k = c0; k < c1; ++k) {
            states[k * DN + e] = v;
            v = maps[k * DN + e] * v + maps[pc.plane + k * DN + e];
        }
    } else {
        for (uint j = c1; j > c0; --j) {
            const uint k = j - 1u;
            states[pc.plane + k * DN + e] = v;
            v = maps[k * DN + e] * v + maps[2u * pc.plane + k * DN + e];
        }
    }
    if (has(HAS_FINAL)) final_[id] = v;
}
