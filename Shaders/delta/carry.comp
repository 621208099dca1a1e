#version 450
// Chains the chunks' affine maps over each sequence, one workgroup per (sequence, head, block of
// columns): forward S_{c+1} = M_c S_c + Bc_c from the initial state (or 0); reversed (the
// backward's state gradients) dS_c = M_c^T dS_{c+1} + G_c from the final state's gradient (or
// 0). Columns of S are independent, so a workgroup holds a Dk-row block of columns in shared
// memory and steps through the sequence's chunks (Dk multiply-adds per chunk and thread).
// With flag bit 2 the carried matrix is [X | S] of Dk + Dv columns, X starting as I with no
// bias: after the last chunk X is the product of every map (the sequence's transition) and S
// its state from the initial one; ranks compose those pairs (ContextParallelDeltaRule).
layout(local_size_x_id = 0) in;
layout(constant_id = 3) const uint REVERSE = 0;
#include "delta/delta.glsl"

layout(std430, binding = 1) readonly buffer SeqTable { uvec2 seq_table[]; };
layout(std430, binding = 2) readonly buffer Maps { float maps[]; };     // [chunks, H, Dk, Dk + Dv]
layout(std430, binding = 3) readonly buffer Bias { float g_bias[]; };   // reversed: G [chunks, H, Dk, Dv]
layout(std430, binding = 4) readonly buffer Init { float init_state[]; };  // [seqs, H, Dk, Dv]
layout(std430, binding = 5) writeonly buffer States { float states[]; };  // [slots, H, Dk, Dv]
layout(std430, binding = 6) writeonly buffer Pairs { float pairs[]; };    // [seqs, H, Dk, Dk + Dv]

shared float sS[gl_WorkGroupSize.x];

void main() {
    const uint WG = gl_WorkGroupSize.x, lid = gl_LocalInvocationIndex;
    const bool paired = (pc.flags & 4u) != 0u, boundaries = (pc.flags & 8u) != 0u;
    const uint extra = paired ? pc.Dk : 0u;
    const uint width = extra + pc.Dv;
    const uint perGroup = WG / pc.Dk;
    const uint blocks = (width + perGroup - 1u) / perGroup;
    const uint wg = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
    if (wg >= pc.seqs * pc.H * blocks) return;  // uniform
    const uint s = wg / (pc.H * blocks), h = (wg / blocks) % pc.H, block = wg % blocks;
    const uint d = lid % pc.Dk, col = lid / pc.Dk;
    const uint x = block * perGroup + col;
    const bool live = col < perGroup && x < width;
    const bool transition = x < extra;
    const uint sx = x - extra;  // the state column, when not a transition column
    const uvec2 seq = seq_table[s];
    const uint c0 = seq.x, nc = seq.y, slot0 = seq.x + s;
    const uint mw = pc.Dk + pc.Dv;
    const bool given = (pc.flags & (REVERSE != 0u ? 2u : 1u)) != 0u;

    float cur = 0.0;
    if (live) {
        if (transition) cur = d == x ? 1.0 : 0.0;
        else if (given) cur = init_state[((s * pc.H + h) * pc.Dk + d) * pc.Dv + sx];
    }
    for (uint step = 0u; step < nc; ++step) {
        const uint c = REVERSE != 0u ? c0 + nc - 1u - step : c0 + step;
        const uint slotOut = REVERSE != 0u ? slot0 + (c - c0) + 1u : slot0 + (c - c0);
        if (live && boundaries && !transition) states[state_index(slotOut, h, d, sx)] = cur;
        sS[lid] = cur;
        barrier();
        if (live) {
            const uint base = (c * pc.H + h) * pc.Dk * mw;
            float acc = 0.0;
            const uint col0 = col * pc.Dk;
            if (REVERSE != 0u) {
                for (uint f = 0u; f < pc.Dk; ++f) acc += maps[base + f * mw + d] * sS[col0 + f];
                if (!transition) acc += g_bias[((c * pc.H + h) * pc.Dk + d) * pc.Dv + sx];
            } else {
                for (uint f = 0u; f < pc.Dk; ++f) acc += maps[base + d * mw + f] * sS[col0 + f];
                if (!transition) acc += maps[base + d * mw + pc.Dk + sx];
            }
            cur = acc;
        }
        barrier();
    }
    if (live) {
        if (boundaries && !transition) states[state_index(REVERSE != 0u ? slot0 : slot0 + nc, h, d, sx)] = cur;
        if (paired) pairs[((s * pc.H + h) * pc.Dk + d) * width + x] = cur;
    }
}
