// Shared layout of the chunked delta-rule kernels (see DeltaRule.swift). Every call is a packed
// batch: q, k [T, H, Dk]; v, o [T, H, Dv]; beta and log-decays [T, H] (a dense [B, L] call is
// the packed batch of B sequences of L rows). Sequences are cut into chunks of at most C rows
// that never cross a sequence boundary; the chunk table holds, per chunk, (first row, rows,
// sequence, state slot), the sequence table (first chunk, chunks).
// State S is [Dk, Dv] (o_t = q_t S_t):
//   S_t = a_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,   a_t = exp(logDecay_t) (1 ungated).
// Boundary states: [slots, H, Dk, Dv], slot = chunk + sequence: a sequence's chunks c0 ..< c0 + n
// use slots c0 + s ... c0 + s + n (the state before each chunk, then the final state).
// Per chunk, g is the log-decay cumulated within the chunk (inclusive), so every decay between
// two rows of a chunk is exp(g_i - g_j) <= 1 and nothing is exp() of a large positive number.
#ifndef VKATTN_DELTA_GLSL
#define VKATTN_DELTA_GLSL

layout(push_constant) uniform Push {
    uint T;        // rows (tokens) in the packed batch
    uint H, Dk, Dv;
    uint C;        // rows per chunk
    uint chunks;   // chunk-table entries
    uint seqs;     // sequences
    uint flags;    // bit 0: initial state given; bit 1: final-state gradient given; bit 2: the
                   // carry's transition columns ([I | S] carried together); bit 3: write boundaries
} pc;

layout(std430, binding = 0) readonly buffer ChunkTable { uvec4 chunk_table[]; };

uint qk_index(uint row, uint h, uint i) { return (row * pc.H + h) * pc.Dk + i; }
uint vo_index(uint row, uint h, uint j) { return (row * pc.H + h) * pc.Dv + j; }
uint gate_index(uint row, uint h) { return row * pc.H + h; }
uint state_index(uint slot, uint h, uint i, uint j) { return ((slot * pc.H + h) * pc.Dk + i) * pc.Dv + j; }

#endif
