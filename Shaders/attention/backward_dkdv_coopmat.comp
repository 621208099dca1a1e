#version 450
//! requires GL_KHR_cooperative_matrix
//! variant f16 -DMAT_T=float16_t -DOUT_T=float16_t
//! variant f16_cpu -DMAT_T=float16_t -DOUT_T=float16_t -DROLLED
//! variant f16o32 -DMAT_T=float16_t -DOUT_T=float
//! variant f16o32_cpu -DMAT_T=float16_t -DOUT_T=float -DROLLED
//! variant bf16 -DMAT_T=bfloat16_t -DOUT_T=bfloat16_t -DUSE_BF16 requires:GL_EXT_bfloat16
//! variant bf16o32 -DMAT_T=bfloat16_t -DOUT_T=float -DUSE_BF16 requires:GL_EXT_bfloat16
// Flash attention backward, dK and dV, on KHR cooperative matrices (the contract of
// backward_dkdv.comp: recomputation, GQA heads summed inside the workgroup, no atomics, fp32
// partials with SPLIT). A workgroup owns BC = NS * MM keys of one (sequence, K/V head);
// subgroup `sub` owns MM of them, holds their K and V rows as DKP/KK and DVP/KK A-fragments
// and dK, dV as DKP/NN and DVP/NN fp32 accumulators (DK, DV: the widths of Q/K and V/dO rows;
// DKP, DVP: padded with zeros). It walks every query head of the group and every query tile of
// BR rows that can see its keys:
//   S^T = K Q^T and dP^T = V dO^T   Q^T and dO^T loaded column-major from the [row][d] tiles;
//   P^T, dS^T by lanes, by coordinate (masks, softcap factor), each scaled to 16 bits by a power
//                                   of two per subgroup tile (tile_scale);
//   dV += (P^T dO) / scale_P,  dK += (dS^T Q) / scale_dS.
// dK = scale * the sum.
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
layout(constant_id = 1) const uint DK = 64;   // Q, K, dK row width
layout(constant_id = 2) const uint BR = 32;
layout(constant_id = 3) const uint BC = 32;
layout(constant_id = 4) const uint SG = 8;
layout(constant_id = 5) const bool VARLEN = false;
layout(constant_id = 6) const bool PACK_GQA = false;  // unused by the backward
layout(constant_id = 7) const bool BLOCK_MASK = false;
layout(constant_id = 8) const bool SOFTCAP = false;
layout(constant_id = 9) const bool SPLIT = false;     // query range split into pc.splits partials
layout(constant_id = 13) const uint MM = 8;
layout(constant_id = 14) const uint NN = 8;
layout(constant_id = 15) const uint KK = 8;
layout(constant_id = 16) const uint DV = 64;   // V, dO, dV row width
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
layout(std430, binding = 6) writeonly buffer DKBuf { OUT_T dk_buf[]; };
layout(std430, binding = 7) writeonly buffer DVBuf { OUT_T dv_buf[]; };
layout(std430, binding = 8) readonly buffer CuQ { int cu_q[]; };
layout(std430, binding = 9) readonly buffer CuK { int cu_k[]; };
layout(std430, binding = 10) readonly buffer MaskRows { int mask_offsets[]; };
layout(std430, binding = 11) readonly buffer MaskCols { int mask_cols[]; };
#define ALIBI_BINDING 12

#define STREAM BR
#include "attention/params.glsl"
#include "attention/coopmat.glsl"

DEFINE_WORD_LOAD(q_word, q_buf, q_h)
DEFINE_WORD_LOAD(k_word, k_buf, k_h)
DEFINE_WORD_LOAD(v_word, v_buf, v_h)
DEFINE_WORD_LOAD(do_word, do_buf, do_h)

const uint XR = BC > BR ? BC : BR;     // rows of each part of the staging tile
const uint XV = XR * DWK;              // where the V (then dO) rows start
const uint NK = DKP / NN, NV = DVP / NN;

// AttentionTiling.coopmatDkdvSharedBytes mirrors these declarations.
shared uvec4 sX[XR * (DWK + DWV)];     // K rows, then V rows; then per tile Q rows, dO rows
shared float sS[BC * SS];              // S^T, then P^T (fp32), then dK / dV blocks
shared float sDP[BC * SS];             // dP^T, then dS^T (fp32)
shared MAT_T sPT[BC * PS];             // P^T, scaled and rounded
shared MAT_T sDST[BC * PS];            // dS^T, scaled and rounded
shared vec2 sStats[BR];                // (LSE in log2 units, Delta) per query row of the tile

void main() {
    const uint sub = gl_SubgroupID;
    const uint lane = gl_SubgroupInvocationID;
    const uint b = SPLIT ? gl_WorkGroupID.z / pc.splits : gl_WorkGroupID.z;
    const uint split = SPLIT ? gl_WorkGroupID.z % pc.splits : 0u;
    const uint hkv = gl_WorkGroupID.y;
    const uint G = pc.heads_q / pc.heads_kv;
    const uint sq = q_len(b), sk = k_len(b);
    const uint key0 = gl_WorkGroupID.x * BC;
    if (key0 >= sk) return;

    const uint q0 = q_start(b), k0 = k_start(b);
    const uint j_last = min(key0 + BC, sk) - 1u;
    const int q_lo = query_band(int(key0), int(sq), int(sk)).x;
    const int q_hi = query_band(int(j_last), int(sq), int(sk)).y;
    uint qt_lo = 0u, qt_hi = 0u;
    if (q_lo <= q_hi) {
        qt_lo = uint(q_lo) / BR;
        qt_hi = uint(q_hi) / BR + 1u;
    }
    if (SPLIT) {  // queries [split * split_keys, (split + 1) * split_keys), a whole number of tiles
        qt_lo = max(qt_lo, split * (pc.split_keys / BR));
        qt_hi = min(qt_hi, (split + 1u) * (pc.split_keys / BR));
    }

    // K and V rows (zeros past the sequence) into A-fragments, held for the whole kernel.
    for (uint x = gl_LocalInvocationIndex; x < BC * K8; x += WG) {
        const uint jj = x / K8, c = x % K8, j = key0 + jj;
        sX[jj * DWK + c] = j < sk ? k_word((k0 + j) * pc.heads_kv + hkv, c, DK) : uvec4(0u);
    }
    for (uint x = gl_LocalInvocationIndex; x < BC * V8; x += WG) {
        const uint jj = x / V8, c = x % V8, j = key0 + jj;
        sX[XV + jj * DWV + c] = j < sk ? v_word((k0 + j) * pc.heads_kv + hkv, c, DV) : uvec4(0u);
    }
    barrier();
    MAT_A kf[DKP / KK];
    MAT_A vf[DVP / KK];
    COOP_LOOP for (uint kq = 0u; kq < DKP / KK; ++kq) {
        coopMatLoad(kf[kq], sX, sub * MM * DWK + kq * (KK / 8u), DWK, gl_CooperativeMatrixLayoutRowMajor);
    }
    COOP_LOOP for (uint kq = 0u; kq < DVP / KK; ++kq) {
        coopMatLoad(vf[kq], sX, XV + sub * MM * DWV + kq * (KK / 8u), DWV, gl_CooperativeMatrixLayoutRowMajor);
    }

    const uint r_first = lane / TPR, c_first = lane % TPR;
    MAT_C dk_acc[NK];
    MAT_C dv_acc[NV];
    COOP_LOOP for (uint n = 0u; n < NK; ++n) dk_acc[n] = MAT_C(0.0);
    COOP_LOOP for (uint n = 0u; n < NV; ++n) dv_acc[n] = MAT_C(0.0);

    for (uint g = 0u; g < G; ++g) {
        const uint hq = hkv * G + g;
        // The transposed mask lists, per key block (per query head when MASK_PER_HEAD), the
        // query blocks that attend it.
        uint ranges = 1u, first_entry = 0u;
        if (BLOCK_MASK) {
            const uint kb = key0 / pc.mask_block;
            ranges = 0u;
            if (kb < pc.mask_rows) {
                const uint row = mask_row(hq, kb);
                first_entry = uint(mask_offsets[row]);
                ranges = uint(mask_offsets[row + 1u]) - first_entry;
            }
        }
        const float slope = alibi_slope_log2(hq);
        for (uint e = 0u; e < ranges; ++e) {
            uint lo = qt_lo, hi = qt_hi;
            if (BLOCK_MASK) {
                const uint tiles_per_block = pc.mask_block / BR;
                const uint qb = uint(mask_cols[first_entry + e]);
                lo = max(lo, qb * tiles_per_block);
                hi = min(hi, (qb + 1u) * tiles_per_block);
            }
            for (uint qt = lo; qt < hi; ++qt) {
                barrier();  // every subgroup is done with the previous tile (and with K, V's rows)
                for (uint x = gl_LocalInvocationIndex; x < BR * K8; x += WG) {
                    const uint rr = x / K8, c = x % K8, ii = qt * BR + rr;
                    sX[rr * DWK + c] = ii < sq ? q_word((q0 + ii) * pc.heads_q + hq, c, DK) : uvec4(0u);
                }
                for (uint x = gl_LocalInvocationIndex; x < BR * V8; x += WG) {
                    const uint rr = x / V8, c = x % V8, ii = qt * BR + rr;
                    sX[XV + rr * DWV + c] = ii < sq ? do_word((q0 + ii) * pc.heads_q + hq, c, DV) : uvec4(0u);
                }
                for (uint rr = gl_LocalInvocationIndex; rr < BR; rr += WG) {
                    const uint ii = qt * BR + rr;
                    sStats[rr] = ii < sq ? vec2(lse_buf[lse_index(b, hq, ii)] * LOG2E, delta_buf[lse_index(b, hq, ii)]) : vec2(0.0);
                }
                barrier();

                // S^T = K Q^T and dP^T = V dO^T, NN query rows at a time.
                COOP_LOOP for (uint n = 0u; n < BR / NN; ++n) {
                    MAT_C s = MAT_C(0.0), dp = MAT_C(0.0);
                    COOP_LOOP for (uint kq = 0u; kq < DKP / KK; ++kq) {
                        MAT_B qt_frag;
                        coopMatLoad(qt_frag, sX, n * NN * DWK + kq * (KK / 8u), DWK, gl_CooperativeMatrixLayoutColumnMajor);
                        s = coopMatMulAdd(kf[kq], qt_frag, s);
                    }
                    COOP_LOOP for (uint kq = 0u; kq < DVP / KK; ++kq) {
                        MAT_B ot_frag;
                        coopMatLoad(ot_frag, sX, XV + n * NN * DWV + kq * (KK / 8u), DWV, gl_CooperativeMatrixLayoutColumnMajor);
                        dp = coopMatMulAdd(vf[kq], ot_frag, dp);
                    }
                    coopMatStore(s, sS, sub * MM * SS + n * NN, SS, gl_CooperativeMatrixLayoutRowMajor);
                    coopMatStore(dp, sDP, sub * MM * SS + n * NN, SS, gl_CooperativeMatrixLayoutRowMajor);
                }
                subgroupMemoryBarrierShared();
                subgroupBarrier();

                // P^T and dS^T by coordinates (fp32, in place), then scaled to 16 bits.
                float p_max = 0.0, ds_max = 0.0;
                for (uint a = 0u; a < RPL; ++a) {
                    const uint c = sub * MM + r_first + a * (SG / TPR);
                    const int j = int(key0 + c);
                    for (uint x = 0u; x < CPL; ++x) {
                        const uint rr = c_first + x * TPR;
                        const int i = int(qt * BR + rr);
                        float p = 0.0, ds = 0.0;
                        const ivec2 band = key_band(i, int(sq), int(sk));
                        if (j < int(sk) && i < int(sq) && j >= band.x && j <= band.y) {
                            const vec2 stats = sStats[rr];
                            const float s = sS[c * SS + rr];
                            p = exp2(logit_log2(s) + alibi_log2(slope, i + diagonal_shift(int(sq), int(sk)), j) - stats.x);
                            ds = p * (sDP[c * SS + rr] - stats.y);
                            if (SOFTCAP) {
                                const float th = tanh(s * (pc.scale_log2 * LN2) / pc.softcap);
                                ds *= 1.0 - th * th;
                            }
                        }
                        sS[c * SS + rr] = p;
                        sDP[c * SS + rr] = ds;
                        p_max = max(p_max, p);
                        ds_max = max(ds_max, abs(ds));
                    }
                }
                const float p_scale = tile_scale(p_max), ds_scale = tile_scale(ds_max);
                for (uint a = 0u; a < RPL; ++a) {
                    const uint c = sub * MM + r_first + a * (SG / TPR);
                    for (uint x = 0u; x < CPL; ++x) {
                        const uint rr = c_first + x * TPR;
                        sPT[c * PS + rr] = MAT_T(sS[c * SS + rr] * p_scale);
                        sDST[c * PS + rr] = MAT_T(sDP[c * SS + rr] * ds_scale);
                    }
                }
                subgroupMemoryBarrierShared();
                subgroupBarrier();

                // dV += (P^T dO) / p_scale, dK += (dS^T Q) / ds_scale.
                MAT_A pf[BR / KK];
                MAT_A dsf[BR / KK];
                COOP_LOOP for (uint kk = 0u; kk < BR / KK; ++kk) {
                    coopMatLoad(pf[kk], sPT, sub * MM * PS + kk * KK, PS, gl_CooperativeMatrixLayoutRowMajor);
                    coopMatLoad(dsf[kk], sDST, sub * MM * PS + kk * KK, PS, gl_CooperativeMatrixLayoutRowMajor);
                }
                const float p_unscale = 1.0 / p_scale, ds_unscale = 1.0 / ds_scale;
                COOP_LOOP for (uint n = 0u; n < NV; ++n) {
                    MAT_C tv = MAT_C(0.0);
                    COOP_LOOP for (uint kk = 0u; kk < BR / KK; ++kk) {
                        MAT_B o_frag;
                        coopMatLoad(o_frag, sX, XV + kk * KK * DWV + n * (NN / 8u), DWV, gl_CooperativeMatrixLayoutRowMajor);
                        tv = coopMatMulAdd(pf[kk], o_frag, tv);
                    }
                    dv_acc[n] = dv_acc[n] + tv * p_unscale;
                }
                COOP_LOOP for (uint n = 0u; n < NK; ++n) {
                    MAT_C tk = MAT_C(0.0);
                    COOP_LOOP for (uint kk = 0u; kk < BR / KK; ++kk) {
                        MAT_B q_frag;
                        coopMatLoad(q_frag, sX, kk * KK * DWK + n * (NN / 8u), DWK, gl_CooperativeMatrixLayoutRowMajor);
                        tk = coopMatMulAdd(dsf[kk], q_frag, tk);
                    }
                    dk_acc[n] = dk_acc[n] + tk * ds_unscale;
                }
            }
        }
    }

    // dK = scale * sum and dV, through the scratch rows.
    const float scale = pc.scale_log2 * LN2;
    const uint total_k = VARLEN ? uint(cu_k[pc.batch]) : pc.batch * pc.seq_k;
    subgroupMemoryBarrierShared();
    subgroupBarrier();
    COOP_LOOP for (uint n = 0u; n < (NK > NV ? NK : NV); ++n) {
        if (n < NK) coopMatStore(dk_acc[n] * scale, sS, sub * MM * SS, SS, gl_CooperativeMatrixLayoutRowMajor);
        if (n < NV) coopMatStore(dv_acc[n], sDP, sub * MM * SS, SS, gl_CooperativeMatrixLayoutRowMajor);
        subgroupMemoryBarrierShared();
        subgroupBarrier();
        for (uint x = lane; x < MM * NN; x += SG) {
            const uint cl = x / NN, c = x % NN, j = key0 + sub * MM + cl;
            if (j < sk) {
                const uint row = ((SPLIT ? split * total_k : 0u) + (k0 + j)) * pc.heads_kv + hkv;
                if (n * NN + c < DK) dk_buf[row * DK + n * NN + c] = OUT_T(sS[(sub * MM + cl) * SS + c]);
                if (n * NN + c < DV) dv_buf[row * DV + n * NN + c] = OUT_T(sDP[(sub * MM + cl) * SS + c]);
            }
        }
        subgroupMemoryBarrierShared();
        subgroupBarrier();
    }
}
