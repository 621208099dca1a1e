#version 450
//! variant f32 -DIN_T=float -DOUT_T=float
//! variant f16 -DIN_T=float16_t -DOUT_T=float16_t -DUSE_F16
//! variant f16o32 -DIN_T=float16_t -DOUT_T=float -DUSE_F16
// Flash attention forward (FlashAttention-2 schedule). A workgroup owns BR query rows of one
// (sequence, head) -- with PACK_GQA, BR rows of (query, head) pairs that share one key/value
// head -- and streams K and V through shared memory BC keys at a time, keeping per row the
// running max m, the running sum l and the output accumulator (online softmax, log2 domain).
// It writes O = acc / l and LSE = ln(sum exp(logits)) (natural log, fp32).
//
// Invocation (r, t) = (row r of the tile, lane t of TPR lanes per row): it scores keys
// t, t + TPR, ... of each tile and accumulates output dims t, t + TPR, ...; row reductions
// are subgroup shuffles over the TPR lanes. Tiles outside the mask's band (causal, window),
// the split's key range (decode) or the listed key blocks (block mask) are never loaded.
// With SPLIT, each of `splits` workgroups per row block covers `split_keys` keys and writes
// fp32 partials (O_s, LSE_s) at split-major offsets, merged by attention/merge.comp.
#extension GL_KHR_shader_subgroup_shuffle : require
#ifdef USE_F16
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_shader_16bit_storage : require
#endif

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint D = 64;
layout(constant_id = 2) const uint BR = 16;
layout(constant_id = 3) const uint BC = 32;
layout(constant_id = 4) const uint TPR = 8;
layout(constant_id = 5) const bool VARLEN = false;
layout(constant_id = 6) const bool PACK_GQA = false;
layout(constant_id = 7) const bool BLOCK_MASK = false;
layout(constant_id = 8) const bool SOFTCAP = false;
layout(constant_id = 9) const bool SPLIT = false;

layout(std430, binding = 0) readonly buffer QBuf { IN_T q_buf[]; };
layout(std430, binding = 1) readonly buffer KBuf { IN_T k_buf[]; };
layout(std430, binding = 2) readonly buffer VBuf { IN_T v_buf[]; };
layout(std430, binding = 3) writeonly buffer OBuf { OUT_T o_buf[]; };
layout(std430, binding = 4) writeonly buffer LseBuf { float lse_buf[]; };
layout(std430, binding = 5) readonly buffer CuQ { int cu_q[]; };
layout(std430, binding = 6) readonly buffer CuK { int cu_k[]; };
layout(std430, binding = 7) readonly buffer MaskRows { int mask_offsets[]; };
layout(std430, binding = 8) readonly buffer MaskCols { int mask_cols[]; };

#include "attention/params.glsl"

const uint WG = BR * TPR;
const uint DPT = D / TPR;   // output dims per invocation
const uint KPT = BC / TPR;  // keys scored per invocation per tile
const uint QS = D + 1;      // padded row stride of the Q and K/V tiles (no bank conflicts)
const uint PS = BC + 1;     // padded row stride of the probability tile

// AttentionTiling.forwardSharedBytes mirrors these three declarations.
shared float sQ[BR * QS];
shared float sKV[BC * QS];
shared float sP[BR * PS];

float o_acc[DPT];
float m_run = NEG_INF;  // running max of logits (log2 units)
float l_run = 0.0;      // running sum of exp2(logit - m_run)

float row_max(float x) {
    for (uint o = TPR >> 1; o > 0u; o >>= 1) x = max(x, subgroupShuffleXor(x, o));
    return x;
}

float row_sum(float x) {
    for (uint o = TPR >> 1; o > 0u; o >>= 1) x += subgroupShuffleXor(x, o);
    return x;
}

void main() {
    const uint tid = gl_LocalInvocationID.x;
    const uint r = tid / TPR;
    const uint t = tid % TPR;
    const uint G = pc.heads_q / pc.heads_kv;
    const uint b = SPLIT ? gl_WorkGroupID.z / pc.splits : gl_WorkGroupID.z;
    const uint split = SPLIT ? gl_WorkGroupID.z % pc.splits : 0u;
    const uint sq = q_len(b);
    const uint sk = k_len(b);
    const uint rows = PACK_GQA ? sq * G : sq;
    const uint row0 = gl_WorkGroupID.x * BR;
    if (row0 >= rows) return;  // uniform: the whole workgroup is past its sequence

    const uint hkv_tile = PACK_GQA ? gl_WorkGroupID.y : gl_WorkGroupID.y / G;
    const uint row = row0 + r;
    const bool row_valid = row < rows;
    const uint i = PACK_GQA ? row / G : row;
    const uint hq = PACK_GQA ? gl_WorkGroupID.y * G + row % G : gl_WorkGroupID.y;
    const uint q0 = q_start(b);
    const uint k0 = k_start(b);

    // Keys this row may see, and the key tiles the whole tile needs.
    int split_lo = SPLIT ? int(split * pc.split_keys) : 0;
    int split_hi = SPLIT ? int((split + 1u) * pc.split_keys) - 1 : int(sk) - 1;
    ivec2 band = key_band(int(i), int(sq), int(sk));
    band = ivec2(max(band.x, split_lo), min(band.y, split_hi));
    const uint last_row = min(row0 + BR, rows) - 1u;
    const uint i_first = PACK_GQA ? row0 / G : row0;
    const uint i_last = PACK_GQA ? last_row / G : last_row;
    int key_lo = max(key_band(int(i_first), int(sq), int(sk)).x, split_lo);
    int key_hi = min(key_band(int(i_last), int(sq), int(sk)).y, split_hi);
    uint kt_lo = 0u, kt_hi = 0u;
    if (key_lo <= key_hi) {
        kt_lo = uint(key_lo) / BC;
        kt_hi = uint(key_hi) / BC + 1u;
    }

    for (uint x = tid; x < BR * D; x += WG) {
        const uint rr = x / D, d = x % D, rw = row0 + rr;
        float value = 0.0;
        if (rw < rows) {
            const uint ii = PACK_GQA ? rw / G : rw;
            const uint hh = PACK_GQA ? gl_WorkGroupID.y * G + rw % G : gl_WorkGroupID.y;
            value = float(q_buf[((q0 + ii) * pc.heads_q + hh) * D + d]);
        }
        sQ[rr * QS + d] = value;
    }
    for (uint k = 0u; k < DPT; ++k) o_acc[k] = 0.0;

    // The block mask lists key blocks per query block; otherwise one range of tiles.
    uint ranges = 1u, first_entry = 0u;
    if (BLOCK_MASK) {
        const uint qb = i_first / pc.mask_block;
        ranges = 0u;
        if (qb < pc.mask_rows) {
            first_entry = uint(mask_offsets[qb]);
            ranges = uint(mask_offsets[qb + 1u]) - first_entry;
        }
    }
    for (uint e = 0u; e < ranges; ++e) {
        uint lo = kt_lo, hi = kt_hi;
        if (BLOCK_MASK) {
            const uint tiles_per_block = pc.mask_block / BC;
            const uint kb = uint(mask_cols[first_entry + e]);
            lo = max(lo, kb * tiles_per_block);
            hi = min(hi, (kb + 1u) * tiles_per_block);
        }
        for (uint kt = lo; kt < hi; ++kt) {
            barrier();  // the previous tile's readers of sKV and sP are done
            for (uint x = tid; x < BC * D; x += WG) {
                const uint jj = x / D, d = x % D, j = kt * BC + jj;
                sKV[jj * QS + d] = j < sk ? float(k_buf[((k0 + j) * pc.heads_kv + hkv_tile) * D + d]) : 0.0;
            }
            barrier();

            float s[KPT];
            float tile_max = NEG_INF;
            for (uint c = 0u; c < KPT; ++c) {
                const uint jj = t + c * TPR;
                const int j = int(kt * BC + jj);
                float dot_qk = 0.0;
                for (uint d = 0u; d < D; ++d) dot_qk += sQ[r * QS + d] * sKV[jj * QS + d];
                const bool keep = row_valid && j >= band.x && j <= band.y;
                s[c] = keep ? logit_log2(dot_qk) : NEG_INF;
                tile_max = max(tile_max, s[c]);
            }
            tile_max = row_max(tile_max);
            const float m_new = max(m_run, tile_max);
            // All logits so far masked: keep m = -inf and add nothing (no -inf - -inf).
            const float alpha = m_new == NEG_INF ? 1.0 : exp2(m_run - m_new);
            float p_sum = 0.0;
            for (uint c = 0u; c < KPT; ++c) {
                const float pv = s[c] == NEG_INF ? 0.0 : exp2(s[c] - m_new);
                p_sum += pv;
                sP[r * PS + t + c * TPR] = pv;
            }
            l_run = l_run * alpha + row_sum(p_sum);
            m_run = m_new;
            for (uint k = 0u; k < DPT; ++k) o_acc[k] *= alpha;

            barrier();  // K no longer read, P complete
            for (uint x = tid; x < BC * D; x += WG) {
                const uint jj = x / D, d = x % D, j = kt * BC + jj;
                sKV[jj * QS + d] = j < sk ? float(v_buf[((k0 + j) * pc.heads_kv + hkv_tile) * D + d]) : 0.0;
            }
            barrier();
            for (uint jj = 0u; jj < BC; ++jj) {
                const float pv = sP[r * PS + jj];
                for (uint k = 0u; k < DPT; ++k) o_acc[k] += pv * sKV[jj * QS + t + k * TPR];
            }
        }
    }

    if (row_valid) {
        const float inv_l = l_run > 0.0 ? 1.0 / l_run : 0.0;  // fully masked row: O = 0
        const uint split_rows = SPLIT ? split * pc.total_q * pc.heads_q : 0u;
        const uint o_base = (split_rows + (q0 + i) * pc.heads_q + hq) * D;
        for (uint k = 0u; k < DPT; ++k) o_buf[o_base + t + k * TPR] = OUT_T(o_acc[k] * inv_l);
        if (t == 0u) {
            lse_buf[split_rows + lse_index(b, hq, i)] = l_run > 0.0 ? (m_run + log2(l_run)) * LN2 : NEG_INF;
        }
    }
}
