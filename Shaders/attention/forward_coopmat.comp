#version 450
//! requires GL_KHR_cooperative_matrix
//! target vulkan1.2
//! variant f16 -DMAT_T=float16_t -DOUT_T=float16_t
//! variant f16_cpu -DMAT_T=float16_t -DOUT_T=float16_t -DROLLED
//! variant f16o32 -DMAT_T=float16_t -DOUT_T=float
//! variant f16o32_cpu -DMAT_T=float16_t -DOUT_T=float -DROLLED
//! variant bf16 -DMAT_T=bfloat16_t -DOUT_T=bfloat16_t -DUSE_BF16 requires:GL_EXT_bfloat16
//! variant bf16o32 -DMAT_T=bfloat16_t -DOUT_T=float -DUSE_BF16 requires:GL_EXT_bfloat16
// Flash attention forward on KHR cooperative matrices (FlashAttention-2 schedule, the same
// contract as forward.comp: O = softmax(scale * Q K^T + mask) V, LSE in natural log, fp32
// partials with SPLIT). Inputs are 16-bit (MAT_T); S, O, m, l and LSE are fp32; P is rounded to
// MAT_T for the P V product and l sums the rounded values, so the weights that multiply V are
// exactly the ones that normalize.
//
// A workgroup owns BR = NS * MM query rows (with PACK_GQA, rows of (query, head) pairs sharing
// one K/V head); subgroup `sub` owns rows sub*MM ... for the whole kernel and holds its Q rows as
// DKP/KK A-fragments and its output as DVP/NN fp32 accumulators (DK, DV: the row widths of Q/K
// and V/O; DKP, DVP: padded with zeros to multiples of 8, KK and NN). Per key tile of BC keys:
//   1. the workgroup copies the K and V tiles into shared memory as raw 16-byte words (zeros past
//      the sequence);
//   2. S = Q K^T: per NN-key block, D/KK multiply-adds with K^T loaded column-major from the
//      [key][d] tile; stored to the subgroup's fp32 scratch rows;
//   3. lanes (TPR per row) apply softcap and the band/window/split masks by coordinate, update the
//      running max and sum, write P (MAT_T) and the row's rescale factor alpha into an MM x NN
//      broadcast tile (KHR offers no per-row access to an accumulator);
//   4. O = O * alpha_tile + P V.
// Tiles outside the band, the split or the block mask are never loaded. Coopmat operations run
// in uniform control flow only: tails are handled by zero padding, never by branching.
#extension GL_KHR_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_shader_16bit_storage : require
#ifdef USE_BF16
#extension GL_EXT_bfloat16 : require
#endif
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_EXT_control_flow_attributes : require

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint DK = 64;   // Q, K row width
layout(constant_id = 2) const uint BR = 32;
layout(constant_id = 3) const uint BC = 32;
layout(constant_id = 4) const uint SG = 8;
layout(constant_id = 5) const bool VARLEN = false;
layout(constant_id = 6) const bool PACK_GQA = false;
layout(constant_id = 7) const bool BLOCK_MASK = false;
layout(constant_id = 8) const bool SOFTCAP = false;
layout(constant_id = 9) const bool SPLIT = false;
layout(constant_id = 13) const uint MM = 8;   // cooperative-matrix shape M x N x K
layout(constant_id = 14) const uint NN = 8;
layout(constant_id = 15) const uint KK = 8;
layout(constant_id = 16) const uint DV = 64;   // V, O row width
layout(constant_id = 17) const uint DKP = 64;  // DK padded
layout(constant_id = 18) const uint DVP = 64;  // DV padded

// Q, K and V as 16-byte words (eight 16-bit elements), and as 16-bit elements for rows whose
// width is not a multiple of 8.
layout(std430, binding = 0) readonly buffer QBuf { uvec4 q_buf[]; };
layout(std430, binding = 1) readonly buffer KBuf { uvec4 k_buf[]; };
layout(std430, binding = 2) readonly buffer VBuf { uvec4 v_buf[]; };
layout(std430, binding = 0) readonly buffer QHalves { uint16_t q_h[]; };
layout(std430, binding = 1) readonly buffer KHalves { uint16_t k_h[]; };
layout(std430, binding = 2) readonly buffer VHalves { uint16_t v_h[]; };
layout(std430, binding = 3) writeonly buffer OBuf { OUT_T o_buf[]; };
layout(std430, binding = 4) writeonly buffer LseBuf { float lse_buf[]; };
layout(std430, binding = 5) readonly buffer CuQ { int cu_q[]; };
layout(std430, binding = 6) readonly buffer CuK { int cu_k[]; };
layout(std430, binding = 7) readonly buffer MaskRows { int mask_offsets[]; };
layout(std430, binding = 8) readonly buffer MaskCols { int mask_cols[]; };
#define ALIBI_BINDING 9
#define SINKS_BINDING 10
#define PAGES_BINDING 13   // (11, 12: the scalar kernel's int8 scales; not read here)

#include "attention/params.glsl"
#include "attention/coopmat.glsl"

DEFINE_WORD_LOAD(q_word, q_buf, q_h)
DEFINE_WORD_LOAD(k_word, k_buf, k_h)
DEFINE_WORD_LOAD(v_word, v_buf, v_h)

const uint KV_WORDS = BC * (DWK + DWV);
// AttentionCoopmatTiling.forwardSharedBytes mirrors these declarations.
shared uvec4 sKV[BR * DWK > KV_WORDS ? BR * DWK : KV_WORDS];  // K tile, then V tile; Q rows first
shared float sS[BR * SS];              // S rows of each subgroup (fp32), then O blocks
shared MAT_T sP[BR * PS];              // P rows
shared float sT[NS * MM * NN];         // per-subgroup broadcast tile (alpha, then 1 / l)

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

    // Q rows (zeros past the sequence) through shared memory into A-fragments.
    for (uint x = gl_LocalInvocationIndex; x < BR * K8; x += WG) {
        const uint rr = x / K8, c = x % K8, rw = row0 + rr;
        uvec4 word = uvec4(0u);
        if (rw < rows) {
            const uint ii = PACK_GQA ? rw / G : rw;
            const uint hh = PACK_GQA ? gl_WorkGroupID.y * G + rw % G : gl_WorkGroupID.y;
            word = q_word((q0 + ii) * pc.heads_q + hh, c, DK);
        }
        sKV[rr * DWK + c] = word;
    }
    barrier();
    MAT_A qf[DKP / KK];
    COOP_LOOP for (uint kq = 0u; kq < DKP / KK; ++kq) {
        coopMatLoad(qf[kq], sKV, sub * MM * DWK + kq * (KK / 8u), DWK, gl_CooperativeMatrixLayoutRowMajor);
    }

    // Softmax lanes: TPR lanes per row, RPL rows per lane.
    const uint r_first = lane / TPR, c_first = lane % TPR;
    ivec2 band[RPL];
    float slope[RPL];  // ALiBi slope (log2 units) of the row's head
    int diag[RPL];     // the row's diagonal key
    float m_run[RPL];
    float l_run[RPL];
    for (uint a = 0u; a < RPL; ++a) {
        const uint rw = row0 + sub * MM + r_first + a * (SG / TPR);
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
    MAT_C o_acc[DVP / NN];
    for (uint j = 0u; j < DVP / NN; ++j) o_acc[j] = MAT_C(0.0);

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
            barrier();  // every subgroup is done with the previous tile (and with Q's rows)
            for (uint x = gl_LocalInvocationIndex; x < BC * K8; x += WG) {
                const uint jj = x / K8, c = x % K8, j = kt * BC + jj;
                sKV[jj * DWK + c] = j < sk ? k_word(kv_row(b, k0, j, hkv), c, DK) : uvec4(0u);
            }
            for (uint x = gl_LocalInvocationIndex; x < BC * V8; x += WG) {
                const uint jj = x / V8, c = x % V8, j = kt * BC + jj;
                sKV[BC * DWK + jj * DWV + c] = j < sk ? v_word(kv_row(b, k0, j, hkv), c, DV) : uvec4(0u);
            }
            barrier();

            // S = Q K^T, NN keys at a time, into this subgroup's scratch rows.
            COOP_LOOP for (uint n = 0u; n < BC / NN; ++n) {
                MAT_C s = MAT_C(0.0);
                COOP_LOOP for (uint kq = 0u; kq < DKP / KK; ++kq) {
                    MAT_B kt_frag;
                    coopMatLoad(kt_frag, sKV, n * NN * DWK + kq * (KK / 8u), DWK, gl_CooperativeMatrixLayoutColumnMajor);
                    s = coopMatMulAdd(qf[kq], kt_frag, s);
                }
                coopMatStore(s, sS, sub * MM * SS + n * NN, SS, gl_CooperativeMatrixLayoutRowMajor);
            }
            subgroupMemoryBarrierShared();
            subgroupBarrier();

            // Online softmax by coordinates; P and the rescale factors to shared memory.
            for (uint a = 0u; a < RPL; ++a) {
                const uint rl = r_first + a * (SG / TPR);
                const uint r = sub * MM + rl;
                float tile_max = NEG_INF;
                for (uint x = 0u; x < CPL; ++x) {
                    const uint col = c_first + x * TPR;
                    const int j = int(kt * BC + col);
                    const float s = (j >= band[a].x && j <= band[a].y) ? logit_log2(sS[r * SS + col]) + alibi_log2(slope[a], diag[a], j) : NEG_INF;
                    sS[r * SS + col] = s;
                    tile_max = max(tile_max, s);
                }
                tile_max = lanes_max(tile_max);
                const float m_new = max(m_run[a], tile_max);
                const float alpha = m_new == NEG_INF ? 1.0 : exp2(m_run[a] - m_new);
                float p_sum = 0.0;
                for (uint x = 0u; x < CPL; ++x) {
                    const uint col = c_first + x * TPR;
                    const float s = sS[r * SS + col];
                    const MAT_T p = MAT_T(s == NEG_INF ? 0.0 : exp2(s - m_new));
                    sP[r * PS + col] = p;
                    p_sum += float(p);
                }
                l_run[a] = l_run[a] * alpha + lanes_sum(p_sum);
                m_run[a] = m_new;
                for (uint c = c_first; c < NN; c += TPR) sT[(sub * MM + rl) * NN + c] = alpha;
            }
            subgroupMemoryBarrierShared();
            subgroupBarrier();

            // O = O * alpha + P V.
            MAT_C alpha_tile;
            coopMatLoad(alpha_tile, sT, sub * MM * NN, NN, gl_CooperativeMatrixLayoutRowMajor);
            MAT_A pf[BC / KK];
            COOP_LOOP for (uint kk = 0u; kk < BC / KK; ++kk) {
                coopMatLoad(pf[kk], sP, sub * MM * PS + kk * KK, PS, gl_CooperativeMatrixLayoutRowMajor);
            }
            COOP_LOOP for (uint n = 0u; n < DVP / NN; ++n) {
                MAT_C o = o_acc[n] * alpha_tile;
                COOP_LOOP for (uint kk = 0u; kk < BC / KK; ++kk) {
                    MAT_B v_frag;
                    coopMatLoad(v_frag, sKV, BC * DWK + kk * KK * DWV + n * (NN / 8u), DWV, gl_CooperativeMatrixLayoutRowMajor);
                    o = coopMatMulAdd(pf[kk], v_frag, o);
                }
                o_acc[n] = o;
            }
        }
    }

    // 1 / l into the broadcast tile, LSE by the row's first lane; a sink joins the denominator
    // here (split partials get it in the merge instead).
    subgroupMemoryBarrierShared();
    subgroupBarrier();
    const uint split_rows = SPLIT ? split * pc.total_q * pc.heads_q : 0u;
    for (uint a = 0u; a < RPL; ++a) {
        const uint rl = r_first + a * (SG / TPR);
        const uint rw = row0 + sub * MM + rl;
        const uint ii = PACK_GQA ? rw / G : rw;
        const uint hh = PACK_GQA ? gl_WorkGroupID.y * G + rw % G : gl_WorkGroupID.y;
        float m = m_run[a], l = l_run[a], rescale = 1.0;
        if (SINKS && !SPLIT) rescale = fold_sink(sink_logits[hh] * LOG2E, m, l);
        const float inv_l = l > 0.0 ? rescale / l : 0.0;  // fully masked: O = 0
        for (uint c = c_first; c < NN; c += TPR) sT[(sub * MM + rl) * NN + c] = inv_l;
        if (c_first == 0u && rw < rows) lse_buf[split_rows + lse_index(b, hh, ii)] = l > 0.0 ? (m + log2(l)) * LN2 : NEG_INF;
    }
    subgroupMemoryBarrierShared();
    subgroupBarrier();
    MAT_C inv_tile;
    coopMatLoad(inv_tile, sT, sub * MM * NN, NN, gl_CooperativeMatrixLayoutRowMajor);
    COOP_LOOP for (uint n = 0u; n < DVP / NN; ++n) {
        coopMatStore(o_acc[n] * inv_tile, sS, sub * MM * SS, SS, gl_CooperativeMatrixLayoutRowMajor);
        subgroupMemoryBarrierShared();
        subgroupBarrier();
        for (uint x = lane; x < MM * NN; x += SG) {
            const uint rl = x / NN, c = x % NN, rw = row0 + sub * MM + rl;
            if (rw < rows && n * NN + c < DV) {
                const uint ii = PACK_GQA ? rw / G : rw;
                const uint hh = PACK_GQA ? gl_WorkGroupID.y * G + rw % G : gl_WorkGroupID.y;
                o_buf[(split_rows + (q0 + ii) * pc.heads_q + hh) * DV + n * NN + c] = OUT_T(sS[(sub * MM + rl) * SS + c]);
            }
        }
        subgroupMemoryBarrierShared();
        subgroupBarrier();
    }
}
