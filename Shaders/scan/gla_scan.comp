#version 450
// Gated linear attention, the inter-chunk state pass: one invocation per (b, h, i, j), serial
// over chunks. gamma_c = exp(gcum at the chunk's last row) is the chunk's total decay.
//   MODE 0 (forward): S_0 = initial (or 0); S_{c+1} = gamma_c * S_c + dS_c, with dS_c read from
//     slot c + 1 and the state written over it: slot c ends as the state before chunk c.
//   MODE 1 (backward): G_{NC-1} = final-state gradient (or 0); walking back, slot c becomes
//     the gradient of the state after chunk c, and G_{c-1} = gamma_c * G_c + dG_c; the
//     initial-state gradient is what is left (written to ds0 when requested).
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint GATE = 2;
layout(constant_id = 2) const uint MODE = 0;
#include "common/scan_gla.glsl"

layout(std430, binding = 0) buffer S { float states[]; };
layout(std430, binding = 1) readonly buffer GC { float gcum[]; };
layout(std430, binding = 2) readonly buffer Init { float init_[]; };   // [B, H, Dk, Dv]
layout(std430, binding = 3) writeonly buffer Out { float out_[]; };    // MODE 1: dS0 [B, H, Dk, Dv]

void main() {
    const uint id = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    const uint j = id % pc.Dv;
    const uint i = (id / pc.Dv) % pc.Dk;
    const uint bh = id / (pc.Dv * pc.Dk);
    if (bh >= pc.B * pc.H) return;
    const uint b = bh / pc.H, h = bh % pc.H;
    const uint at0 = (bh * pc.Dk + i) * pc.Dv + j;
    if (MODE == 0u) {
        float s = (pc.flags & 1u) != 0u ? init_[at0] : 0.0;
        states[state_index(b, h, 0u, i, j)] = s;
        for (uint c = 0u; c < pc.NC; ++c) {
            const float gamma = GATE != 0u ? exp(gcum[gate_index(b, c * pc.C + chunk_rows(c) - 1u, h, i)]) : 1.0;
            const uint at = state_index(b, h, c + 1u, i, j);
            s = gamma * s + states[at];
            states[at] = s;
        }
    } else {
        float g = (pc.flags & 2u) != 0u ? init_[at0] : 0.0;
        for (uint cc = 0u; cc < pc.NC; ++cc) {
            const uint c = pc.NC - 1u - cc;
            const float gamma = GATE != 0u ? exp(gcum[gate_index(b, c * pc.C + chunk_rows(c) - 1u, h, i)]) : 1.0;
            const uint at = state_index(b, h, c, i, j);
            const float d = states[at];
            states[at] = g;
            g = gamma * g + d;
        }
        if ((pc.flags & 4u) != 0u) out_[at0] = g;
    }
}
