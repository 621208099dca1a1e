// Shared layout of the chunked gated-linear-attention kernels (see GatedLinearAttention.swift).
// q, k, (log) gates: [B, L, H, Dk]; v, o: [B, L, H, Dv]; per-head gates [B, L, H].
// Chunk c holds rows [c * C, min(c * C + C, L)). gcum[] holds the log gates cumulated within
// each chunk (inclusive), so decays between two rows of a chunk are exp(gcum_t - gcum_s) <= 1
// for non-positive log gates, and nothing is ever exp() of a large positive number.
// Boundary states: [B, H, NC + 1, Dk, Dv] (state before chunk c at c; the final state at NC).
#ifndef VKATTN_SCAN_GLA_GLSL
#define VKATTN_SCAN_GLA_GLSL

layout(push_constant) uniform Push {
    uint B, L, H, Dk, Dv;
    uint C;       // rows per chunk
    uint NC;      // chunks
    uint flags;   // bit 0: initial state given; bit 1: final-state gradient given
} pc;

uint qk_index(uint b, uint t, uint h, uint i) { return ((b * pc.L + t) * pc.H + h) * pc.Dk + i; }
uint vo_index(uint b, uint t, uint h, uint j) { return ((b * pc.L + t) * pc.H + h) * pc.Dv + j; }
uint gate_index(uint b, uint t, uint h, uint i) {
    return GATE == 2u ? qk_index(b, t, h, i) : (b * pc.L + t) * pc.H + h;
}
uint state_index(uint b, uint h, uint c, uint i, uint j) {
    return (((b * pc.H + h) * (pc.NC + 1u) + c) * pc.Dk + i) * pc.Dv + j;
}
uint chunk_rows(uint c) { return min(pc.C, pc.L - c * pc.C); }

#endif
