#version 450
// Mamba-2 SSD backward, the per-head reductions over every token (no float atomics):
//   MODE 0, one invocation per (block, h, w): partials[block][h][w] = the sum of rows[t][h][w]
//     over the block's pc.rows tokens;
//   MODE 1, one invocation per (h, w): the sum over blocks, into dA (w = 0), dD (w = 1, when
//     D is given) or the dt bias gradient (w = 2, when wanted).
// Loops: pc.rows (MODE 0) or pc.blocks (MODE 1) iterations.
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint MODE = 0;
#include "mamba_ssd/ssd_common.glsl"

layout(std430, binding = 0) readonly buffer Rows { float rows[]; };   // [T, H, 3]
layout(std430, binding = 1) buffer Partials { float partials[]; };    // [blocks, H, 3]
layout(std430, binding = 2) writeonly buffer DA { float dA[]; };
layout(std430, binding = 3) writeonly buffer DDs { float dD[]; };
layout(std430, binding = 4) writeonly buffer DBias { float dBias[]; };

void main() {
    const uint id = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    const uint w = id % 3u;
    if (MODE == 0u) {
        const uint h = (id / 3u) % pc.H, block = id / (3u * pc.H);
        if (block >= pc.blocks) return;
        const uint t0 = block * pc.rows, t1 = min(t0 + pc.rows, pc.T);
        float acc = 0.0;
        for (uint t = t0; t < t1; ++t) acc += rows[(t * pc.H + h) * 3u + w];
        partials[id] = acc;
        return;
    }
    const uint h = id / 3u;
    if (h >= pc.H) return;
    float acc = 0.0;
    for (uint b = 0u; b < pc.blocks; ++b) acc += partials[(b * pc.H + h) * 3u + w];
    if (w == 0u) dA[h] = acc;
    else if (w == 1u) { if ((pc.flags & 1u) != 0u) dD[h] = acc; }
    else if ((pc.flags & 8u) != 0u) dBias[h] = acc;
}
