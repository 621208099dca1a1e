#version 450
//! requires GL_KHR_cooperative_matrix
//! variant f16 -DMAT_T=float16_t -DOUT_T=float16_t
//! variant f16_cpu -DMAT_T=float16_t -DOUT_T=float16_t -DROLLED
//! variant f16o32 -DMAT_T=float16_t -DOUT_T=float
//! variant f16o32_cpu -DMAT_T=float16_t -DOUT_T=float -DROLLED
//! variant bf16 -DMAT_T=bfloat16_t -DOUT_T=bfloat16_t -DUSE_BF16 requires:GL_EXT_bfloat16
//! variant bf16o32 -DMAT_T=bfloat16_t -DOUT_T=float -DUSE_BF16 requires:GL_EXT_bfloat16
// Flash attention backward, dQ, on KHR cooperative matrices (the contract of backward_dq.comp:
// recomputation, no atomics, fp32 partials with SPLIT). A workgroup owns BR = NS * MM query rows
// of one (sequence, query head); subgroup `sub` owns MM of them and holds their Q and dO as
// DKP/KK and DVP/KK A-fragments and dQ as DKP/NN fp32 accumulators (DK, DV: the widths of
// Q/K/dQ and V/dO rows; DKP, DVP: padded with zeros). Per K/V tile of BC keys:
//   S = Q K^T and dP = dO V^T   multiply-adds with K^T and V^T loaded column-major, to the
//                               subgroup's fp32 scratch rows;
//   dS = P (dP - Delta)         by lanes, by coordinate (masks, softcap factor), P from LSE;
//                               rounded to 16 bits after scaling the subgroup's tile by a power
//                               of two (tile_scale: dS scales like 1 / keys);
//   dQ += (dS K) / that power   a fresh accumulator per NN columns, added exactly.
// dQ = scale * the sum.
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
layout(constant_id = 1) const uint DK = 64;   // Q, K, dQ row width
layout(constant_id = 2) const uint BR = 32;
layout(constant_id = 3) const uint BC = 32;
layout(constant_id = 4) const uint SG = 8;
layout(constant_id = 5) const bool VARLEN = false;
layout(constant_id = 6) const bool PACK_GQA = false;  // unused by the backward
layout(constant_id = 7) const bool BLOCK_MASK = false;
layout(constant_id = 8) const bool SOFTCAP = false;
layout(constant_id = 9) const bool SPLIT = false;     // key range split into pc.splits partials
layout(constant_id = 13) const uint MM = 8;
layout(constant_id = 14) const uint NN = 8;
layout(constant_id = 15) const uint KK = 8;
layout(constant_id = 16) const uint DV = 64;   // V, dO row width
layout(constant_id = 17) const uint DKP = 64;  // DK padded
layout(constant_id = 18) const uint DVP = 64;  // DV padded

layout(std430, binding = 0) readonly buffer QBuf { uvec4 q_buf[]; };
layout(std430, binding = 1) readonly buffer KBuf { uvec4 k_buf[]; };
layout(std430, binding = 2) readonly buffer VBuf { uvec4 v_buf[]; };
layout(std430, binding = 3) readonly buffer DOBuf { uvec4 do_buf[]; };
layout(std430, binding = 0) readonly buffer QHalves { uint16_t q_h[]; };
layout(std430, binding = 1) readonly buffer KHalves { uint16_t k_h[]; };
layout(std430, binding = 2) readonly buffer VHalves { uint16_t v_h[]; };
layout(std430, binding = 3) readonly buffer DOHalves { uint16_t do_h[]; };
layout(std430, binding = 4) readonly buffer LseBuf { float lse_buf[]; };
layout(std430, binding = 5) readonly buffer DeltaBuf { float delta_buf[]; };
layout(std430, binding = 6) writeonly buffer DQBuf { OUT_T dq_buf[]; };
layout(std430, binding = 7) readonly buffer CuQ { int cu_q[]; };
layout(std430, binding = 8) readonly buffer CuK { int cu_k[]; };
layout(std430, binding = 9) readonly buffer MaskRows { int mask_offsets[]; };
layout(std430, binding = 10) readonly buffer MaskCols { int mask_cols[]; };
#define ALIBI_BINDING 11

#include "attention/params.glsl"
#include "attention/coopmat.glsl"

DEFINE_WORD_LOAD(q_word, q_buf, q_h)
DEFINE_WORD_LOAD(k_word, k_buf, k_h)
DEFINE_WORD_LOAD(v_word, v_buf, v_h)
DEFINE_WORD_LOAD(do_word, do_buf, do_h)

const uint KV_WORDS = BC * (DWK + DWV);
const uint ROW_WORDS = BR * (DWK > DWV ? DWK : DWV);
// AttentionTiling.coopmatDqSharedBytes mirrors these declarations.
shared uvec4 sKV[ROW_WORDS > KV_WORDS ? ROW_WORDS : KV_WORDS];  // K tile, then V tile; Q, dO rows first
shared float sS[BR * SS];              // S, then dS (fp32), then dQ blocks
shared float sDP[BR * SS];             // dP
shared MAT_T sDS[BR * PS];             // dS, scaled and rounded

void main() {
    const uint sub = gl_SubgroupID;
    const uint lane = gl_SubgroupInvocationID;
    const uint b = SPLIT ? gl_WorkGroupID.z / pc.splits : gl_WorkGroupID.z;
    const uint split = SPLIT ? gl_WorkGroupID.z % pc.splits : 0u;
    const uint hq = gl_WorkGroupID.y;
    const uint hkv = hq / (pc.heads_q / pc.heads_kv);
    const uint sq = q_len(b), sk = k_len(b);
    const uint row0 = gl_WorkGroupID.x * BR;
    if (row0 >= sq) return;

    const uint q0 = q_start(b), k0 = k_start(b);
    const uint i_last = min(row0 + BR, sq) - 1u;
    const int key_lo = key_band(int(row0), int(sq), int(sk)).x;
    const int key_hi = key_band(int(i_last), int(sq), int(sk)).y;
    uint kt_lo = 0u, kt_hi = 0u;
    if (key_lo <= key_hi) {
        kt_lo = uint(key_lo) / BC;
        kt_hi = uint(key_hi) / BC + 1u;
    }
    if (SPLIT) {  // keys [split * split_keys, (split + 1) * split_keys), a whole number of tiles
        kt_lo = max(kt_lo, split * (pc.split_keys / BC));
        kt_hi = min(kt_hi, (split + 1u) * (pc.split_keys / BC));
    }

    // Q rows, then dO rows, through shared memory into A-fragments.
    MAT_A qf[DKP / KK];
    MAT_A of[DVP / KK];
    for (uint x = gl_LocalInvocationIndex; x < BR * K8; x += WG) {
        const uint rr = x / K8, c = x % K8, ii = row0 + rr;
        sKV[rr * DWK + c] = ii < sq ? q_word((q0 + ii) * pc.heads_q + hq, c, DK) : uvec4(0u);
    }
    barrier();
    COOP_LOOP for (uint kq = 0u; kq < DKP / KK; ++kq) {
        coopMatLoad(qf[kq], sKV, sub * MM * DWK + kq * (KK / 8u), DWK, gl_CooperativeMatrixLayoutRowMajor);
    }
    barrier();
    for (uint x = gl_LocalInvocationIndex; x < BR * V8; x += WG) {
        const uint rr = x / V8, c = x % V8, ii = row0 + rr;
        sKV[rr * DWV + c] = ii < sq ? do_word((q0 + ii) * pc.heads_q + hq, c, DV) : uvec4(0u);
    }
    barrier();
    COOP_LOOP for (uint kq = 0u; kq < DVP / KK; ++kq) {
        coopMatLoad(of[kq], sKV, sub * MM * DWV + kq * (KK / 8u), DWV, gl_CooperativeMatrixLayoutRowMajor);
    }
    barrier();

    const uint r_first = lane / TPR, c_first = lane % TPR;
    ivec2 band[RPL];
    float lse2[RPL];
    float delta[RPL];
    const float slope = alibi_slope_log2(hq);
    const int shift = diagonal_shift(int(sq), int(sk));
    for (uint a = 0u; a < RPL; ++a) {
        const uint ii = row0 + sub * MM + r_first + a * (SG / TPR);
        band[a] = ii < sq ? key_band(int(ii), int(sq), int(sk)) : ivec2(0, -1);
        lse2[a] = ii < sq ? lse_buf[lse_index(b, hq, ii)] * LOG2E : 0.0;
        delta[a] = ii < sq ? delta_buf[lse_index(b, hq, ii)] : 0.0;
    }
    MAT_C dq_acc[DKP / NN];
    COOP_LOOP for (uint n = 0u; n < DKP / NN; ++n) dq_acc[n] = MAT_C(0.0);

    uint ranges = 1u, first_entry = 0u;
    if (BLOCK_MASK) {
        const uint qb = row0 / pc.mask_block;
        ranges = 0u;
        if (qb < pc.mask_rows) {
            const uint row = mask_row(hq, qb);
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
            barrier();
            for (uint x = gl_LocalInvocationIndex; x < BC * K8; x += WG) {
                const uint jj = x / K8, c = x % K8, j = kt * BC + jj;
                sKV[jj * DWK + c] = j < sk ? k_word((k0 + j) * pc.heads_kv + hkv, c, DK) : uvec4(0u);
            }
            for (uint x = gl_LocalInvocationIndex; x < BC * V8; x += WG) {
                const uint jj = x / V8, c = x % V8, j = kt * BC + jj;
                sKV[BC * DWK + jj * DWV + c] = j < sk ? v_word((k0 + j) * pc.heads_kv + hkv, c, DV) : uvec4(0u);
            }
            barrier();

            // S = Q K^T and dP = dO V^T, NN keys at a time.
            COOP_LOOP for (uint n = 0u; n < BC / NN; ++n) {
                MAT_C s = MAT_C(0.0), dp = MAT_C(0.0);
                COOP_LOOP for (uint kq = 0u; kq < DKP / KK; ++kq) {
                    MAT_B kt_frag;
                    coopMatLoad(kt_frag, sKV, n * NN * DWK + kq * (KK / 8u), DWK, gl_CooperativeMatrixLayoutColumnMajor);
                    s = coopMatMulAdd(qf[kq], kt_frag, s);
                }
                COOP_LOOP for (uint kq = 0u; kq < DVP / KK; ++kq) {
                    MAT_B vt_frag;
                    coopMatLoad(vt_frag, sKV, BC * DWK + n * NN * DWV + kq * (KK / 8u), DWV, gl_CooperativeMatrixLayoutColumnMajor);
                    dp = coopMatMulAdd(of[kq], vt_frag, dp);
                }
                coopMatStore(s, sS, sub * MM * SS + n * NN, SS, gl_CooperativeMatrixLayoutRowMajor);
                coopMatStore(dp, sDP, sub * MM * SS + n * NN, SS, gl_CooperativeMatrixLayoutRowMajor);
            }
            subgroupMemoryBarrierShared();
            subgroupBarrier();

            // dS by coordinates (fp32, in place of S), then scaled to 16 bits.
            float ds_max = 0.0;
            for (uint a = 0u; a < RPL; ++a) {
                const uint r = sub * MM + r_first + a * (SG / TPR);
                for (uint x = 0u; x < CPL; ++x) {
                    const uint col = c_first + x * TPR;
                    const int j = int(kt * BC + col);
                    float ds = 0.0;
                    if (j >= band[a].x && j <= band[a].y) {
                        const float s = sS[r * SS + col];
                        const int diag = int(row0 + sub * MM + r_first + a * (SG / TPR)) + shift;
                        const float p = exp2(logit_log2(s) + alibi_log2(slope, diag, j) - lse2[a]);
                        ds = p * (sDP[r * SS + col] - delta[a]);
                        if (SOFTCAP) {
                            const float th = tanh(s * (pc.scale_log2 * LN2) / pc.softcap);
                            ds *= 1.0 - th * th;
                        }
                    }
                    sS[r * SS + col] = ds;
                    ds_max = max(ds_max, abs(ds));
                }
            }
            const float ds_scale = tile_scale(ds_max);
            for (uint a = 0u; a < RPL; ++a) {
                const uint r = sub * MM + r_first + a * (SG / TPR);
                for (uint x = 0u; x < CPL; ++x) {
                    const uint col = c_first + x * TPR;
                    sDS[r * PS + col] = MAT_T(sS[r * SS + col] * ds_scale);
                }
            }
            subgroupMemoryBarrierShared();
            subgroupBarrier();

            // dQ += (dS K) / ds_scale.
            MAT_A dsf[BC / KK];
            COOP_LOOP for (uint kk = 0u; kk < BC / KK; ++kk) {
                coopMatLoad(dsf[kk], sDS, sub * MM * PS + kk * KK, PS, gl_CooperativeMatrixLayoutRowMajor);
            }
            const float unscale = 1.0 / ds_scale;
            COOP_LOOP for (uint n = 0u; n < DKP / NN; ++n) {
                MAT_C t = MAT_C(0.0);
                COOP_LOOP for (uint kk = 0u; kk < BC / KK; ++kk) {
                    MAT_B k_frag;
                    coopMatLoad(k_frag, sKV, kk * KK * DWK + n * (NN / 8u), DWK, gl_CooperativeMatrixLayoutRowMajor);
                    t = coopMatMulAdd(dsf[kk], k_frag, t);
                }
                dq_acc[n] = dq_acc[n] + t * unscale;
            }
        }
    }

    // dQ = scale * sum, through the scratch rows.
    const float scale = pc.scale_log2 * LN2;
    subgroupMemoryBarrierShared();
    subgroupBarrier();
    COOP_LOOP for (uint n = 0u; n < DKP / NN; ++n) {
        coopMatStore(dq_acc[n] * scale, sS, sub * MM * SS, SS, gl_CooperativeMatrixLayoutRowMajor);
        subgroupMemoryBarrierShared();
        subgroupBarrier();
        for (uint x = lane; x < MM * NN; x += SG) {
            const uint rl = x / NN, c = x % NN, ii = row0 + sub * MM + rl;
            if (ii < sq && n * NN + c < DK) {
                const uint base = ((SPLIT ? split * pc.total_q : 0u) + (q0 + ii)) * pc.heads_q * DK + hq * DK;
                dq_buf[base + n * NN + c] = OUT_T(sS[(sub * MM + rl) * SS + c]);
            }
        }
        subgroupMemoryBarrierShared();
        subgroupBarrier();
    }
}
