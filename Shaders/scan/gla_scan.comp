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
#define GLA_TABLE_BINDING 4
#include "common/scan_gla.glsl"

layout(std430, binding = 0) buffer S { float states[]; };
layout(std430, binding = 1) readonly buffer GC { float gcum[]; };
layout(std430, binding = 2) readonly buffer Init { float init_[]; };   // [B, H, Dk, Dv]
layout(std430, binding = 3) writeonly buffer Out { float out_[]; };    // MODE 1: dS0; MODE 0 (flag 8): final states [B or NSEQ, H, Dk, Dv]

// exp of the chunk's total log gate for key dimension i (1 ungated).
float chunk_gamma(uint b, uint h, uint c, uint i) {
    return GATE != 0u ? exp(gcum[gate_index(b, chunk_t0(c) + chunk_len(c) - 1u, h, i)]) : 1.0;
}

void main() {
    const uint id = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    const uint j = id % pc.Dv;
    const uint i = (id / pc.Dv) % pc.Dk;
    const uint bh = id / (pc.Dv * pc.Dk);
    if (bh >= pc.B * pc.H) return;
    const uint b = bh / pc.H, h = bh % pc.H;
    // Dense: one run of NC chunks per (b, h) from slot 0. Packed: one run per sequence n
    // (B = 1), its chunks from its first slot, with its own initial state (or gradient).
    const uint runs = packed_seqs() ? pc.NSEQ : 1u;
    for (uint n = 0u; n < runs; ++n) {
        const uint c0 = packed_seqs() ? seq_first_chunk(n) : 0u;
        const uint nc = packed_seqs() ? seq_chunks(n) : pc.NC;
        const uint slot0 = packed_seqs() ? c0 + n : 0u;
        const uint at0 = packed_seqs() ? ((n * pc.H + h) * pc.Dk + i) * pc.Dv + j : (bh * pc.Dk + i) * pc.Dv + j;
        if (MODE == 0u) {
            float s = (pc.flags & 1u) != 0u ? init_[at0] : 0.0;
            states[state_index(b, h, slot0, i, j)] = s;
            for (uint k = 0u; k < nc; ++k) {
                const uint at = state_index(b, h, slot0 + k + 1u, i, j);
                s = chunk_gamma(b, h, c0 + k, i) * s + states[at];
                states[at] = s;
            }
            if ((pc.flags & 8u) != 0u) out_[at0] = s;  // packed: the sequence's final state
        } else {
            float g = (pc.flags & 2u) != 0u ? init_[at0] : 0.0;
            for (uint kk = 0u; kk < nc; ++kk) {
                const uint k = nc - 1u - kk;
                const uint at = state_index(b, h, slot0 + k, i, j);
                const float d = states[at];
                states[at] = g;
                g = chunk_gamma(b, h, c0 + k, i) * g + d;
            }
            if ((pc.flags & 4u) != 0u) out_[at0] = g;
        }
    }
}
