// Shared by the attention kernels: the push constants, the sequence geometry (dense or packed
// variable-length), the band mask, ALiBi and attention sinks. Include after the specialization
// constants VARLEN and PACK_GQA and the cu_q / cu_k buffers are declared; a kernel that reads
// ALiBi slopes or sink logits defines ALIBI_BINDING / SINKS_BINDING first.
#ifndef VKATTN_ATTENTION_PARAMS_GLSL
#define VKATTN_ATTENTION_PARAMS_GLSL

layout(push_constant) uniform Params {
    uint batch;         // sequences
    uint heads_q;       // Hq
    uint heads_kv;      // Hkv
    uint seq_q;         // dense: Sq; packed: longest query sequence
    uint seq_k;         // dense: Sk; packed: longest key sequence
    uint total_q;       // tokens of Q (packed LSE layout [Hq, total_q])
    float scale_log2;   // softmax scale * log2(e)
    float softcap;      // logit cap (natural units), used when SOFTCAP
    int window_left;    // keys allowed down to diagonal - window_left; < 0: unbounded
    int window_right;   // keys allowed up to diagonal + window_right; < 0: unbounded
    uint split_keys;    // keys per split when SPLIT (a multiple of BC)
    uint splits;        // splits of the key range (>= 1)
    uint mask_block;    // block-mask block size (positions), when BLOCK_MASK
    uint mask_rows;     // query blocks of the block mask (per head when MASK_PER_HEAD)
    int diag_offset;    // added to the diagonal (AttentionMask.diagonalOffset)
    uint top_left;      // 1: the diagonal of query i is key i (+ offset), not i + sk - sq
    uint page_size;     // tokens per K/V page, when PAGED
    uint table_stride;  // block-table entries per sequence, when PAGED
} pc;

const float LOG2E = 1.4426950408889634;
const float LN2 = 0.6931471805599453;
const float NEG_INF = -1.0 / 0.0;

layout(constant_id = 19) const bool ALIBI = false;  // per-head ALiBi slopes (alibi_slopes)
layout(constant_id = 20) const bool SINKS = false;  // per-head sink logits (sink_logits)
layout(constant_id = 21) const bool PAGED = false;  // K/V in pages listed by block_table
layout(constant_id = 22) const bool MASK_PER_HEAD = false;  // block mask: one pattern per query head

// Row of the block mask's CSR arrays for block `blk` (a query block; the dK/dV pass's
// transpose: a key block) of query head h: per-head patterns sit head-major, mask_rows each.
uint mask_row(uint h, uint blk) { return (MASK_PER_HEAD ? h * pc.mask_rows : 0u) + blk; }
#ifdef ALIBI_BINDING
layout(std430, binding = ALIBI_BINDING) readonly buffer AlibiSlopes { float alibi_slopes[]; };
// Query head h's ALiBi slope in log2 units (0 without ALiBi).
float alibi_slope_log2(uint h) { return ALIBI ? alibi_slopes[h] * LOG2E : 0.0; }
#endif
#ifdef SINKS_BINDING
layout(std430, binding = SINKS_BINDING) readonly buffer SinkLogits { float sink_logits[]; };
#endif
#ifdef PAGES_BINDING
// [batch, table_stride] page ids: page p of sequence b holds its keys p * page_size ....
layout(std430, binding = PAGES_BINDING) readonly buffer BlockTable { int block_table[]; };
#endif

// Start token and length of sequence b (queries or keys).
uint q_start(uint b) { return VARLEN ? uint(cu_q[b]) : b * pc.seq_q; }
uint q_len(uint b)   { return VARLEN ? uint(cu_q[b + 1] - cu_q[b]) : pc.seq_q; }
uint k_start(uint b) { return VARLEN ? uint(cu_k[b]) : b * pc.seq_k; }
uint k_len(uint b)   { return VARLEN ? uint(cu_k[b + 1] - cu_k[b]) : pc.seq_k; }

#ifdef PAGES_BINDING
// Row (token * heads_kv + head) of K/V holding key j of sequence b (keys of b start at k0 when
// contiguous; when PAGED, key j sits at row j % page_size of page block_table[b][j / page_size]
// of a [pages, page_size, heads_kv, D] cache).
uint kv_row(uint b, uint k0, uint j, uint hkv) {
    if (PAGED) {
        const uint page = uint(block_table[b * pc.table_stride + j / pc.page_size]);
        return (page * pc.page_size + j % pc.page_size) * pc.heads_kv + hkv;
    }
    return (k0 + j) * pc.heads_kv + hkv;
}
#endif

// Index of LSE (and of the backward's row sums D) for query i of sequence b, head h:
// dense [B, Hq, Sq], packed [Hq, total_q].
uint lse_index(uint b, uint h, uint i) {
    return VARLEN ? h * pc.total_q + q_start(b) + i : (b * pc.heads_q + h) * pc.seq_q + i;
}

// Key on the diagonal of query 0: bottom-right aligned (sk - sq) or top-left (0), plus the
// per-call offset (a scheduler's block whose keys sit before or after its queries).
int diagonal_shift(int sq, int sk) { return (pc.top_left != 0u ? 0 : sk - sq) + pc.diag_offset; }

// Keys [lo, hi] (inclusive, possibly empty) that query i may see in a sequence of sq queries
// and sk keys: the band around the diagonal, clipped to the sequence.
ivec2 key_band(int i, int sq, int sk) {
    int diagonal = i + diagonal_shift(sq, sk);
    int lo = pc.window_left < 0 ? 0 : max(0, diagonal - pc.window_left);
    int hi = pc.window_right < 0 ? sk - 1 : min(sk - 1, diagonal + pc.window_right);
    return ivec2(lo, hi);
}

// Queries [lo, hi] that may see key j: the same band seen from the key side.
ivec2 query_band(int j, int sq, int sk) {
    int shift = diagonal_shift(sq, sk);  // query i sits on diagonal i + shift
    int lo = pc.window_right < 0 ? 0 : max(0, j - shift - pc.window_right);
    int hi = pc.window_left < 0 ? sq - 1 : min(sq - 1, j - shift + pc.window_left);
    return ivec2(lo, hi);
}

// ALiBi's bias in log2 units for key j of a query whose diagonal key is `diag`:
// -slope * |j - diag| (natural units), added after the softcap. Zero without ALiBi.
float alibi_log2(float slope_log2, int diag, int j) { return ALIBI ? -slope_log2 * abs(float(j - diag)) : 0.0; }

// Folds a sink logit (log2 units) into a row's softmax state: the sink joins the denominator
// and adds nothing to O. Updates the running max m and sum l (l = 0: the row saw no key) and
// returns the factor that rescales the row's accumulated output.
float fold_sink(float sink_log2, inout float m, inout float l) {
    const float m_new = max(m, sink_log2);
    const float rescale = l > 0.0 ? exp2(m - m_new) : 0.0;
    l = l * rescale + exp2(sink_log2 - m_new);
    m = m_new;
    return rescale;
}

// Logit in log2 units from a raw dot product q.k.
float logit_log2(float dot_qk) {
    if (SOFTCAP) {
        float s = dot_qk * (pc.scale_log2 * LN2);
        return pc.softcap * tanh(s / pc.softcap) * LOG2E;
    }
    return dot_qk * pc.scale_log2;
}

#endif
