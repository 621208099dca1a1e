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
    uint NSEQ;    // 0: dense [B, L]; else packed sequences (B = 1) cut by the chunk table
} pc;

uint qk_index(uint b, uint t, uint h, uint i) { return ((b * pc.L + t) * pc.H + h) * pc.Dk + i; }
uint vo_index(uint b, uint t, uint h, uint j) { return ((b * pc.L + t) * pc.H + h) * pc.Dv + j; }
uint gate_index(uint b, uint t, uint h, uint i) {
    return GATE == 2u ? qk_index(b, t, h, i) : (b * pc.L + t) * pc.H + h;
}
// State slots per (b, h): NC + 1 dense; NC + NSEQ packed (each sequence n has its chunks + 1).
uint state_slots() { return pc.NC + max(pc.NSEQ, 1u); }
uint state_index(uint b, uint h, uint slot, uint i, uint j) {
    return (((b * pc.H + h) * state_slots() + slot) * pc.Dk + i) * pc.Dv + j;
}
uint chunk_rows(uint c) { return min(pc.C, pc.L - c * pc.C); }

// Packed sequences (pc.NSEQ > 0, B = 1): the chunk table at binding GLA_TABLE_BINDING holds
//   [4 c + 0..3]: chunk c's first row, rows, sequence and state slot (the slot of the state
//                 before it; the state after it is at slot + 1), chunks of a sequence in order;
//   [4 NC + 2 n + 0..1]: sequence n's first chunk and chunk count (0 for an empty sequence,
//                 whose one slot, first chunk + n, is its initial and final state);
//   [4 NC + 2 NSEQ + t]: the chunk of row t.
// Chunks never cross a sequence boundary. Dense calls (NSEQ = 0) never read the table.
#ifdef GLA_TABLE_BINDING
layout(std430, binding = GLA_TABLE_BINDING) readonly buffer ChunkTable { uint chunk_table[]; };
bool packed_seqs() { return pc.NSEQ != 0u; }
uint chunk_t0(uint c) { return packed_seqs() ? chunk_table[4u * c] : c * pc.C; }
uint chunk_len(uint c) { return packed_seqs() ? chunk_table[4u * c + 1u] : chunk_rows(c); }
uint chunk_slot(uint c) { return packed_seqs() ? chunk_table[4u * c + 3u] : c; }
uint seq_first_chunk(uint n) { return chunk_table[4u * pc.NC + 2u * n]; }
uint seq_chunks(uint n) { return chunk_table[4u * pc.NC + 2u * n + 1u]; }
uint row_chunk(uint t) { return packed_seqs() ? chunk_table[4u * pc.NC + 2u * pc.NSEQ + t] : t / pc.C; }
#endif

#endif
