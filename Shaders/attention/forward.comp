#version 450
//! variant f32 -DQ_T=float -DKV_T=float -DOUT_T=float
//! variant f16 -DQ_T=float16_t -DKV_T=float16_t -DOUT_T=float16_t -DUSE_F16
//! variant f16o32 -DQ_T=float16_t -DKV_T=float16_t -DOUT_T=float -DUSE_F16
//! variant bf16 -DQ_T=uint16_t -DKV_T=uint16_t -DOUT_T=uint16_t -DQ_BF16 -DKV_BF16 -DOUT_BF16 -DUSE_16BIT
//! variant bf16o32 -DQ_T=uint16_t -DKV_T=uint16_t -DOUT_T=float -DQ_BF16 -DKV_BF16 -DUSE_16BIT
//! variant q32kv16 -DQ_T=float -DKV_T=float16_t -DOUT_T=float -DUSE_F16
//! variant q32kvbf16 -DQ_T=float -DKV_T=uint16_t -DOUT_T=float -DKV_BF16 -DUSE_16BIT
//! variant q16kvbf16 -DQ_T=float16_t -DKV_T=uint16_t -DOUT_T=float16_t -DKV_BF16 -DUSE_F16
//! variant q16kvbf16o32 -DQ_T=float16_t -DKV_T=uint16_t -DOUT_T=float -DKV_BF16 -DUSE_F16
//! variant qbf16kv16 -DQ_T=uint16_t -DKV_T=float16_t -DOUT_T=uint16_t -DQ_BF16 -DOUT_BF16 -DUSE_F16
//! variant qbf16kv16o32 -DQ_T=uint16_t -DKV_T=float16_t -DOUT_T=float -DQ_BF16 -DUSE_F16
//! variant q32kv8 -DQ_T=float -DKV_T=uint -DOUT_T=float -DKV_I8
//! variant q16kv8 -DQ_T=float16_t -DKV_T=uint -DOUT_T=float16_t -DKV_I8 -DUSE_F16
//! variant q16kv8o32 -DQ_T=float16_t -DKV_T=uint -DOUT_T=float -DKV_I8 -DUSE_F16
//! variant qbf16kv8 -DQ_T=uint16_t -DKV_T=uint -DOUT_T=uint16_t -DQ_BF16 -DOUT_BF16 -DKV_I8 -DUSE_16BIT
//! variant qbf16kv8o32 -DQ_T=uint16_t -DKV_T=uint -DOUT_T=float -DQ_BF16 -DKV_I8 -DUSE_16BIT
// Flash attention forward (FlashAttention-2 schedule). Q and K rows are DK wide, V and O rows
// DV (any widths; the tiles use DKP and DVP, padded with zeros: attention/rows.glsl). Q and K/V
// have their own storage types (Q_T, KV_T: mixed precision), K/V may be int8 with per-block
// scales (KV_I8, KVQuantization's layout) and may live in pages (PAGED: kv_row). A workgroup owns BR query rows of one
// (sequence, head) -- with PACK_GQA, BR rows of (query, head) pairs that share one key/value
// head -- and streams K and V through shared memory BC keys at a time, keeping per row the
// running max m, the running sum l and the output accumulator (online softmax, log2 domain).
// It writes O = acc / l and LSE = ln(sum exp(logits)) (natural log, fp32).
//
// Each of the NS = WG / SG subgroups owns RM = BR / NS rows for the whole kernel. Tiles live in
// shared memory as rows of vec4 (one vec4 load feeds four multiply-adds: on CPU devices such
// as lavapipe a shared-memory load costs about as much per element as several FMAs, and on
// GPUs 128-bit loads are cheapest). Per key tile:
//   S = Q K^T   lanes split into KL lanes along keys (each CN = BC / KL keys) and SG / KL along
//               rows (each RS rows); row max and sum reduce over the KL lanes of a row;
//   O += P V    lanes split into QL lanes along dim quads (each QZ quads) and SG / QL along
//               rows (each RZ rows).
// With SEPARATE_KV the K and V tiles have their own buffers (two barriers per tile);
// otherwise V overwrites K once the scores are done (four barriers, less shared memory).
// Tiles outside the mask's band (causal, window), the split's key range (decode) or the
// listed key blocks (block mask) are never loaded. With SPLIT, each of `splits` workgroups
// per row block covers `split_keys` keys and writes fp32 partials (O_s, LSE_s) at
// split-major offsets, merged by attention/merge.comp.
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#ifdef USE_F16
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#endif
#if defined(USE_F16) || defined(USE_16BIT)
#extension GL_EXT_shader_16bit_storage : require
#endif

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint DK = 64;   // Q, K row width
layout(constant_id = 2) const uint BR = 32;
layout(constant_id = 3) const uint BC = 32;
layout(constant_id = 4) const uint SG = 8;    // subgroup size the pipeline runs with
layout(constant_id = 5) const bool VARLEN = false;
layout(constant_id = 6) const bool PACK_GQA = false;
layout(constant_id = 7) const bool BLOCK_MASK = false;
layout(constant_id = 8) const bool SOFTCAP = false;
layout(constant_id = 9) const bool SPLIT = false;
layout(constant_id = 10) const bool SEPARATE_KV = true;
layout(constant_id = 11) const uint KL = 8;   // lanes along keys in S = Q K^T (power of 2, <= SG)
layout(constant_id = 12) const uint QL = 8;   // lanes along dim quads in O += P V (<= SG)
layout(constant_id = 16) const uint DV = 64;   // V, O row width
layout(constant_id = 17) const uint DKP = 64;  // DK padded to a multiple of 4 QL
layout(constant_id = 18) const uint DVP = 64;  // DV padded likewise

layout(std430, binding = 0) readonly buffer QBuf { Q_T q_buf[]; };
layout(std430, binding = 1) readonly buffer KBuf { KV_T k_buf[]; };  // KV_I8: i8 values, four to a word
layout(std430, binding = 2) readonly buffer VBuf { KV_T v_buf[]; };
layout(std430, binding = 3) writeonly buffer OBuf { OUT_T o_buf[]; };
layout(std430, binding = 4) writeonly buffer LseBuf { float lse_buf[]; };
layout(std430, binding = 5) readonly buffer CuQ { int cu_q[]; };
layout(std430, binding = 6) readonly buffer CuK { int cu_k[]; };
layout(std430, binding = 7) readonly buffer MaskRows { int mask_offsets[]; };
layout(std430, binding = 8) readonly buffer MaskCols { int mask_cols[]; };
#define ALIBI_BINDING 9
#define SINKS_BINDING 10
layout(std430, binding = 11) readonly buffer KScales { float k_scales[]; };  // KV_I8: [*, Hkv, ceil(DK / 32)]
layout(std430, binding = 12) readonly buffer VScales { float v_scales[]; };  // KV_I8: [*, Hkv, ceil(DV / 32)]
#define PAGES_BINDING 13

#include "attention/params.glsl"
#include "common/dtype.glsl"
#include "attention/rows.glsl"

#ifdef Q_BF16
#define LOAD_Q(x) bf16_to_float(uint(x))
#else
#define LOAD_Q(x) float(x)
#endif
#ifdef KV_BF16
#define LOAD_KV(x) bf16_to_float(uint(x))
#else
#define LOAD_KV(x) float(x)
#endif

const uint WG = gl_WorkGroupSize.x;
const uint NS = WG / SG;          // subgroups
const uint RM = BR / NS;          // rows per subgroup
const uint K4 = DKP / 4;          // quads of a Q or K row
const uint V4 = DVP / 4;          // quads of a V or O row
const uint RS = RM / (SG / KL);   // rows per lane in S = Q K^T
const uint CN = BC / KL;          // keys per lane in S = Q K^T
const uint RZ = RM / (SG / QL);   // rows per lane in O += P V
const uint QZ = V4 / QL;          // dim quads per lane in O += P V
const uint RK = K4 + 1;           // row stride (vec4) of the Q and K tiles
const uint RV = V4 + 1;           // row stride (vec4) of the V tile
const uint PQ = BC / 4 + 1;       // row stride (vec4) of the P tile

// AttentionTiling.forwardSharedBytes mirrors these declarations.
shared vec4 sQ[BR * RK];
shared vec4 sK[BC * (SEPARATE_KV || RK > RV ? RK : RV)];  // K rows, then V rows when not SEPARATE_KV
shared vec4 sV[SEPARATE_KV ? BC * RV : 1];
shared vec4 sP[BR * PQ];

vec4 o_acc[RZ * QZ];
float m_run[RS];  // running max of logits (log2 units) of the lane's S rows
float l_run[RS];  // running sum of exp2(logit - m)

DEFINE_QUAD_LOAD(q_quad, q_buf, LOAD_Q)
#ifdef KV_I8
DEFINE_QUAD_LOAD_I8(k_quad, k_buf, k_scales)
DEFINE_QUAD_LOAD_I8(v_quad, v_buf, v_scales)
#else
DEFINE_QUAD_LOAD(k_quad, k_buf, LOAD_KV)
DEFINE_QUAD_LOAD(v_quad, v_buf, LOAD_KV)
#endif

vec4 v_at(uint index) { return SEPARATE_KV ? sV[index] : sK[index]; }

// Loads keys kt * BC ... of a K or V head into shared vec4 rows (stride RK or RV); zeros past
// the sequence and past the row width.
void load_tile(bool is_v, uint kt, uint sk, uint b, uint k0, uint hkv) {
    const uint quads = is_v ? V4 : K4, stride = is_v ? RV : RK;
    for (uint x = gl_LocalInvocationIndex; x < BC * quads; x += WG) {
        const uint jj = x / quads, dq = x % quads, j = kt * BC + jj;
        vec4 value = vec4(0.0);
        if (j < sk) {
            const uint row = kv_row(b, k0, j, hkv);
            value = is_v ? v_quad(row, dq, DV) : k_quad(row, dq, DK);
        }
        if (is_v && SEPARATE_KV) sV[jj * stride + dq] = value; else sK[jj * stride + dq] = value;
    }
}

float row_max(float x) {
    for (uint o = KL >> 1; o > 0u; o >>= 1) x = max(x, subgroupShuffleXor(x, o));
    return x;
}

float row_sum(float x) {
    for (uint o = KL >> 1; o > 0u; o >>= 1) x += subgroupShuffleXor(x, o);
    return x;
}

void main() {
    const uint sub = gl_SubgroupID;
    const uint lane = gl_SubgroupInvocationID;
    const uint G = pc.heads_q / pc.heads_kv;
    const uint b = SPLIT ? gl_WorkGroupID.z / pc.splits : gl_WorkGroupID.z;
    const uint split = SPLIT ? gl_WorkGroupID.z % pc.splits : 0u;
    const uint sq = q_len(b);
    const uint sk = k_len(b);
    const uint rows = PACK_GQA ? sq * G : sq;
    const uint row0 = gl_WorkGroupID.x * BR;
    if (row0 >= rows) return;  // uniform: the whole workgroup is past its sequence

    const uint hkv = PACK_GQA ? gl_WorkGroupID.y : gl_WorkGroupID.y / G;
    const uint q0 = q_start(b);
    const uint k0 = k_start(b);

    // The key tiles the whole row block needs (band, split).
    const int split_lo = SPLIT ? int(split * pc.split_keys) : 0;
    const int split_hi = SPLIT ? int((split + 1u) * pc.split_keys) - 1 : int(sk) - 1;
    const uint last_row = min(row0 + BR, rows) - 1u;
    const uint i_first = PACK_GQA ? row0 / G : row0;
    const uint i_last = PACK_GQA ? last_row / G : last_row;
    const int key_lo = max(key_band(int(i_first), int(sq), int(sk)).x, split_lo);
    const int key_hi = min(key_band(int(i_last), int(sq), int(sk)).y, split_hi);
    uint kt_lo = 0u, kt_hi = 0u;
    if (key_lo <= key_hi) {
        kt_lo = uint(key_lo) / BC;
        kt_hi = uint(key_hi) / BC + 1u;
    }

    for (uint x = gl_LocalInvocationIndex; x < BR * K4; x += WG) {
        const uint rr = x / K4, dq = x % K4, rw = row0 + rr;
        vec4 value = vec4(0.0);
        if (rw < rows) {
            const uint ii = PACK_GQA ? rw / G : rw;
            const uint hh = PACK_GQA ? gl_WorkGroupID.y * G + rw % G : gl_WorkGroupID.y;
            value = q_quad((q0 + ii) * pc.heads_q + hh, dq, DK);
        }
        sQ[rr * RK + dq] = value;
    }

    // Lane coordinates: S = Q K^T rows sub*RM + s_row0 + a*(SG/KL), keys s_key0 + x*KL;
    // O += P V rows sub*RM + o_row0 + a*(SG/QL), quads o_quad0 + z*QL.
    const uint s_row0 = lane / KL, s_key0 = lane % KL;
    const uint o_row0 = lane / QL, o_quad0 = lane % QL;
    ivec2 band[RS];
    float slope[RS];  // ALiBi slope (log2 units) of the row's head
    int diag[RS];     // the row's diagonal key
    for (uint a = 0u; a < RS; ++a) {
        const uint rw = row0 + sub * RM + s_row0 + a * (SG / KL);
        band[a] = ivec2(0, -1);
        slope[a] = 0.0;
        diag[a] = 0;
        if (rw < rows) {
            const int ii = int(PACK_GQA ? rw / G : rw);
            const ivec2 kb = key_band(ii, int(sq), int(sk));
            band[a] = ivec2(max(kb.x, split_lo), min(kb.y, split_hi));
            slope[a] = alibi_slope_log2(PACK_GQA ? gl_WorkGroupID.y * G + rw % G : gl_WorkGroupID.y);
            diag[a] = ii + diagonal_shift(int(sq), int(sk));
        }
        m_run[a] = NEG_INF;
        l_run[a] = 0.0;
    }
    for (uint k = 0u; k < RZ * QZ; ++k) o_acc[k] = vec4(0.0);

    // The block mask lists key blocks per query block; otherwise one range of tiles.
    uint ranges = 1u, first_entry = 0u;
    if (BLOCK_MASK) {
        const uint qb = i_first / pc.mask_block;
        ranges = 0u;
        if (qb < pc.mask_rows) {
            // Block masks never run packed: the workgroup's rows belong to query head y.
            const uint row = mask_row(gl_WorkGroupID.y, qb);
            first_entry = uint(mask_offsets[row]);
            ranges = uint(mask_offsets[row + 1u]) - first_entry;
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
            barrier();  // the previous tile is done with sK, sV and sP
            load_tile(false, kt, sk, b, k0, hkv);
            if (SEPARATE_KV) load_tile(true, kt, sk, b, k0, hkv);
            barrier();

            // S = Q K^T: RS rows x CN keys per lane, four dims per load.
            float s[RS * CN];
            for (uint a = 0u; a < RS * CN; ++a) s[a] = 0.0;
            for (uint dq = 0u; dq < K4; ++dq) {
                vec4 kv[CN];
                for (uint x = 0u; x < CN; ++x) kv[x] = sK[(s_key0 + x * KL) * RK + dq];
                for (uint a = 0u; a < RS; ++a) {
                    const vec4 qv = sQ[(sub * RM + s_row0 + a * (SG / KL)) * RK + dq];
                    for (uint x = 0u; x < CN; ++x) s[a * CN + x] += dot(qv, kv[x]);
                }
            }
            // Online softmax per row over its KL lanes; P to shared for O += P V.
            for (uint a = 0u; a < RS; ++a) {
                const uint r = sub * RM + s_row0 + a * (SG / KL);
                float tile_max = NEG_INF;
                for (uint x = 0u; x < CN; ++x) {
                    const int j = int(kt * BC + s_key0 + x * KL);
                    s[a * CN + x] = (j >= band[a].x && j <= band[a].y) ? logit_log2(s[a * CN + x]) + alibi_log2(slope[a], diag[a], j) : NEG_INF;
                    tile_max = max(tile_max, s[a * CN + x]);
                }
                tile_max = row_max(tile_max);
                const float m_new = max(m_run[a], tile_max);
                // All logits so far masked: keep m = -inf and add nothing (no -inf - -inf).
                const float alpha = m_new == NEG_INF ? 1.0 : exp2(m_run[a] - m_new);
                float p_sum = 0.0;
                for (uint x = 0u; x < CN; ++x) {
                    const uint jj = s_key0 + x * KL;
                    const float p = s[a * CN + x] == NEG_INF ? 0.0 : exp2(s[a * CN + x] - m_new);
                    sP[r * PQ + jj / 4u][jj % 4u] = p;
                    p_sum += p;
                }
                l_run[a] = l_run[a] * alpha + row_sum(p_sum);
                m_run[a] = m_new;
                // The rescale factor travels with P: column BC of the row (the padding quad).
                if (s_key0 == 0u) sP[r * PQ + BC / 4u].x = alpha;
            }
            if (SEPARATE_KV) {
                subgroupMemoryBarrierShared();  // P is read back by this subgroup only
                subgroupBarrier();
            } else {
                barrier();  // every subgroup is done with K
                load_tile(true, kt, sk, b, k0, hkv);
                barrier();
            }

            // O = alpha O + P V: RZ rows x QZ quads per lane, four keys per P load.
            for (uint a = 0u; a < RZ; ++a) {
                const float alpha = sP[(sub * RM + o_row0 + a * (SG / QL)) * PQ + BC / 4u].x;
                for (uint z = 0u; z < QZ; ++z) o_acc[a * QZ + z] *= alpha;
            }
            for (uint jq = 0u; jq < BC / 4u; ++jq) {
                vec4 vv[4 * QZ];
                for (uint c = 0u; c < 4u; ++c) {
                    for (uint z = 0u; z < QZ; ++z) vv[c * QZ + z] = v_at((jq * 4u + c) * RV + o_quad0 + z * QL);
                }
                for (uint a = 0u; a < RZ; ++a) {
                    const vec4 p = sP[(sub * RM + o_row0 + a * (SG / QL)) * PQ + jq];
                    for (uint z = 0u; z < QZ; ++z) {
                        o_acc[a * QZ + z] += p.x * vv[z] + p.y * vv[QZ + z] + p.z * vv[2u * QZ + z] + p.w * vv[3u * QZ + z];
                    }
                }
            }
        }
    }

    // 1 / l and LSE per row: the S lanes hold them; pass 1 / l through the P tile's padding.
    // A sink joins the denominator here (split partials get it in the merge instead).
    subgroupMemoryBarrierShared();
    subgroupBarrier();
    const uint split_rows = SPLIT ? split * pc.total_q * pc.heads_q : 0u;
    for (uint a = 0u; a < RS; ++a) {
        const uint r = sub * RM + s_row0 + a * (SG / KL);
        const uint rw = row0 + r;
        const uint ii = PACK_GQA ? rw / G : rw;
        const uint hh = PACK_GQA ? gl_WorkGroupID.y * G + rw % G : gl_WorkGroupID.y;
        float m = m_run[a], l = l_run[a], rescale = 1.0;
        if (SINKS && !SPLIT) rescale = fold_sink(sink_logits[hh] * LOG2E, m, l);
        if (s_key0 == 0u) sP[r * PQ + BC / 4u].y = l > 0.0 ? rescale / l : 0.0;  // fully masked: O = 0
        if (s_key0 == 0u && rw < rows) lse_buf[split_rows + lse_index(b, hh, ii)] = l > 0.0 ? (m + log2(l)) * LN2 : NEG_INF;
    }
    subgroupMemoryBarrierShared();
    subgroupBarrier();
    for (uint a = 0u; a < RZ; ++a) {
        const uint r = sub * RM + o_row0 + a * (SG / QL);
        const uint rw = row0 + r;
        if (rw >= rows) continue;
        const uint ii = PACK_GQA ? rw / G : rw;
        const uint hh = PACK_GQA ? gl_WorkGroupID.y * G + rw % G : gl_WorkGroupID.y;
        const uint o_base = (split_rows + (q0 + ii) * pc.heads_q + hh) * DV;
        const float inv_l = sP[r * PQ + BC / 4u].y;
        for (uint z = 0u; z < QZ; ++z) STORE_QUAD(o_buf, o_base, o_quad0 + z * QL, DV, o_acc[a * QZ + z] * inv_l)
    }
}
