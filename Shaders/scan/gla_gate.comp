#version 450
// Gated linear attention backward, the log-gate gradient:
//   MODE 0, one invocation per (b, h, i): walks the chunks backward; carries[c][i] is the sum
//     of the totals of the chunks after c plus F[i] = sum_j G_final[i][j] S_final[i][j] (the
//     final-state gradient's own term).
//   MODE 1, one invocation per (b, t, h, [i]): dlog g = rloc + carries of the row's chunk
//     (summed over i for per-head gates).
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint GATE = 2;
layout(constant_id = 2) const uint MODE = 0;
#define GLA_TABLE_BINDING 5
#include "common/scan_gla.glsl"

layout(std430, binding = 0) readonly buffer R { float rloc[]; };      // [B, L, H, Dk]
layout(std430, binding = 1) buffer T { float totals[]; };              // [B, H, NC, Dk]: totals in, carries out
layout(std430, binding = 2) readonly buffer S { float states[]; };    // forward boundary states (final at NC)
layout(std430, binding = 3) readonly buffer GF { float gfinal[]; };   // final-state gradient [B, H, Dk, Dv]
layout(std430, binding = 4) writeonly buffer DG { float dgate[]; };

void main() {
    const uint id = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    if (MODE == 0u) {
        const uint i = id % pc.Dk;
        const uint bh = id / pc.Dk;
        if (bh >= pc.B * pc.H) return;
        const uint b = bh / pc.H, h = bh % pc.H;
        // Dense: one run per (b, h); packed: one run per sequence n, from its own final
        // state and final-state gradient.
        const uint runs = packed_seqs() ? pc.NSEQ : 1u;
        for (uint n = 0u; n < runs; ++n) {
            const uint c0 = packed_seqs() ? seq_first_chunk(n) : 0u;
            const uint nc = packed_seqs() ? seq_chunks(n) : pc.NC;
            const uint finalSlot = packed_seqs() ? c0 + n + nc : pc.NC;
            const uint gf0 = packed_seqs() ? (n * pc.H + h) * pc.Dk + i : bh * pc.Dk + i;
            float carry = 0.0;
            if ((pc.flags & 2u) != 0u) {
                for (uint j = 0u; j < pc.Dv; ++j) carry += gfinal[gf0 * pc.Dv + j] * states[state_index(b, h, finalSlot, i, j)];
            }
            for (uint cc = 0u; cc < nc; ++cc) {
                const uint at = (bh * pc.NC + (c0 + nc - 1u - cc)) * pc.Dk + i;
                const float total = totals[at];
                totals[at] = carry;
                carry += total;
            }
        }
        return;
    }
    const uint perRow = GATE == 2u ? pc.Dk : 1u;
    const uint i = id % perRow;
    const uint row = id / perRow;  // (b * L + t) * H + h
    if (row >= pc.B * pc.L * pc.H) return;
    const uint h = row % pc.H;
    const uint t = (row / pc.H) % pc.L;
    const uint b = row / (pc.H * pc.L);
    const uint c = row_chunk(t);
    const uint bh = b * pc.H + h;
    if (GATE == 2u) {
        dgate[row * pc.Dk + i] = rloc[row * pc.Dk + i] + totals[(bh * pc.NC + c) * pc.Dk + i];
    } else {
        float acc = 0.0;
        for (uint ii = 0u; ii < pc.Dk; ++ii) acc += rloc[row * pc.Dk + ii] + totals[(bh * pc.NC + c) * pc.Dk + ii];
        dgate[row] = acc;
    }
}
