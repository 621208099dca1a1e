#version 450
//! variant f16 -DIN_T=float16_t -DO_T=float16_t -DUSE_F16
//! variant f16o32 -DIN_T=float16_t -DO_T=float -DUSE_F16
// Gated linear attention backward, the gate gradient's chunk-local sums from the finished dq
// and dk (after gla_grads_coopmat.comp, which leaves them out): one invocation per (b, h, chunk,
// key dimension), walking the chunk's rows backward:
//   rloc_t[i] = sum_{u >= t in the chunk} q_u[i] dq_u[i] - k_u[i] dk_u[i],  totals[c][i] = rloc of
//   the chunk's first row. gla_gate.comp completes dlog g from them, as after gla_grads.comp.
#extension GL_EXT_shader_16bit_storage : require
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint GATE = 2;
#define GLA_TABLE_BINDING 6
#include "common/scan_gla.glsl"
#include "common/dtype.glsl"

layout(std430, binding = 0) readonly buffer Q { IN_T q[]; };
layout(std430, binding = 1) readonly buffer K { IN_T k[]; };
layout(std430, binding = 2) readonly buffer DQ { O_T dq[]; };
layout(std430, binding = 3) readonly buffer DK { O_T dk[]; };
layout(std430, binding = 4) writeonly buffer R { float rloc[]; };     // [B, L, H, Dk]
layout(std430, binding = 5) writeonly buffer T { float totals[]; };   // [B, H, NC, Dk]

void main() {
    const uint id = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    const uint i = id % pc.Dk;
    const uint rest = id / pc.Dk;
    const uint c = rest % pc.NC;
    const uint bh = rest / pc.NC;
    if (bh >= pc.B * pc.H) return;
    const uint b = bh / pc.H, h = bh % pc.H;
    const uint rows = chunk_len(c), t0 = chunk_t0(c);
    float run = 0.0;
    for (uint rr = 0u; rr < rows; ++rr) {
        const uint at = qk_index(b, t0 + rows - 1u - rr, h, i);
        run += LOAD_IN(q[at]) * LOAD_O(dq[at]) - LOAD_IN(k[at]) * LOAD_O(dk[at]);
        rloc[at] = run;
    }
    totals[(bh * pc.NC + c) * pc.Dk + i] = run;
}
