#version 450
//! variant f32 -DIN_T=float -DOUT_T=float
//! variant f16 -DIN_T=float16_t -DOUT_T=float16_t -DUSE_F16
//! variant f16o32 -DIN_T=float16_t -DOUT_T=float -DUSE_F16
//! variant bf16 -DIN_T=uint16_t -DOUT_T=uint16_t -DIN_BF16 -DOUT_BF16 -DUSE_16BIT
//! variant bf16o32 -DIN_T=uint16_t -DOUT_T=float -DIN_BF16 -DUSE_16BIT
// Flash attention backward, dQ (FlashAttention-2 with recomputation, no atomics). Q, K and dQ
// rows are DK wide, V and dO rows DV (tiles padded with zeros to DKP, DVP: attention/rows.glsl). A workgroup
// owns BR query rows of one (sequence, query head); each of its NS subgroups owns RM of them.
// Per K/V tile (vec4 rows in shared memory, as in forward.comp):
//   S = Q K^T and dP = dO V^T   lanes along keys (KL), rows per lane RS, keys per lane CN;
//   dS = P * (dP - Delta) with P = exp(logit - LSE), written to shared;
//   dQ += dS K                  lanes along dim quads (QL), rows per lane RZ, quads QZ.
// dQ = scale * the sum. Tiles outside the mask are skipped as in the forward. With SPLIT
// (devices that cap an invocation's loop iterations), workgroup column s covers keys
// [s * split_keys, (s + 1) * split_keys) and writes an fp32 partial at split-major offsets;
// attention/sum_partials.comp adds them up in split order.
#extension GL_KHR_shader_subgroup_basic : require
#ifdef USE_F16
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#endif
#if defined(USE_F16) || defined(USE_16BIT)
#extension GL_EXT_shader_16bit_storage : require
#endif

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint DK = 64;   // Q, K, dQ row width
layout(constant_id = 2) const uint BR = 16;
layout(constant_id = 3) const uint BC = 32;
layout(constant_id = 4) const uint SG = 8;
layout(constant_id = 5) const bool VARLEN = false;
layout(constant_id = 6) const bool PACK_GQA = false;  // unused by the backward
layout(constant_id = 7) const bool BLOCK_MASK = false;
layout(constant_id = 8) const bool SOFTCAP = false;
layout(constant_id = 9) const bool SPLIT = false;     // key range split into pc.splits partials
layout(constant_id = 11) const uint KL = 8;
layout(constant_id = 12) const uint QL = 8;
layout(constant_id = 16) const uint DV = 64;   // V, dO row width
layout(constant_id = 17) const uint DKP = 64;  // DK padded to a multiple of 4 QL
layout(constant_id = 18) const uint DVP = 64;  // DV padded likewise

layout(std430, binding = 0) readonly buffer QBuf { IN_T q_buf[]; };
layout(std430, binding = 1) readonly buffer KBuf { IN_T k_buf[]; };
layout(std430, binding = 2) readonly buffer VBuf { IN_T v_buf[]; };
layout(std430, binding = 3) readonly buffer DOBuf { IN_T do_buf[]; };
layout(std430, binding = 4) readonly buffer LseBuf { float lse_buf[]; };
layout(std430, binding = 5) readonly buffer DeltaBuf { float delta_buf[]; };
layout(std430, binding = 6) writeonly buffer DQBuf { OUT_T dq_buf[]; };
layout(std430, binding = 7) readonly buffer CuQ { int cu_q[]; };
layout(std430, binding = 8) readonly buffer CuK { int cu_k[]; };
layout(std430, binding = 9) readonly buffer MaskRows { int mask_offsets[]; };
layout(std430, binding = 10) readonly buffer MaskCols { int mask_cols[]; };
#define ALIBI_BINDING 11

#include "attention/params.glsl"
#include "common/dtype.glsl"
#include "attention/rows.glsl"

const uint WG = gl_WorkGroupSize.x;
const uint NS = WG / SG;
const uint RM = BR / NS;
const uint K4 = DKP / 4;
const uint V4 = DVP / 4;
const uint RS = RM / (SG / KL);
const uint CN = BC / KL;
const uint RZ = RM / (SG / QL);
const uint QZ = K4 / QL;     // dQ quads per lane
const uint RK = K4 + 1;      // row stride (vec4) of the Q and K tiles
const uint RV = V4 + 1;      // row stride (vec4) of the dO and V tiles
const uint PQ = BC / 4 + 1;  // the padding quad of a dS row holds (LSE in log2 units, Delta)

// AttentionTiling.dqSharedBytes mirrors these declarations.
shared vec4 sQ[BR * RK];
shared vec4 sDO[BR * RV];
shared vec4 sK[BC * RK];
shared vec4 sV[BC * RV];
shared vec4 sDS[BR * PQ];

DEFINE_QUAD_LOAD(q_quad, q_buf, LOAD_IN)
DEFINE_QUAD_LOAD(do_quad, do_buf, LOAD_IN)
DEFINE_QUAD_LOAD(k_quad, k_buf, LOAD_IN)
DEFINE_QUAD_LOAD(v_quad, v_buf, LOAD_IN)

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

    for (uint x = gl_LocalInvocationIndex; x < BR * K4; x += WG) {
        const uint rr = x / K4, dq = x % K4, ii = row0 + rr;
        sQ[rr * RK + dq] = ii < sq ? q_quad((q0 + ii) * pc.heads_q + hq, dq, DK) : vec4(0.0);
    }
    for (uint x = gl_LocalInvocationIndex; x < BR * V4; x += WG) {
        const uint rr = x / V4, dq = x % V4, ii = row0 + rr;
        sDO[rr * RV + dq] = ii < sq ? do_quad((q0 + ii) * pc.heads_q + hq, dq, DV) : vec4(0.0);
    }
    for (uint rr = gl_LocalInvocationIndex; rr < BR; rr += WG) {
        const uint ii = row0 + rr;
        sDS[rr * PQ + BC / 4u] = ii < sq ? vec4(lse_buf[lse_index(b, hq, ii)] * LOG2E, delta_buf[lse_index(b, hq, ii)], 0.0, 0.0)
                                         : vec4(0.0);
    }

    const uint s_row0 = lane / KL, s_key0 = lane % KL;
    const uint o_row0 = lane / QL, o_quad0 = lane % QL;
    ivec2 band[RS];
    const float slope = alibi_slope_log2(hq);
    const int shift = diagonal_shift(int(sq), int(sk));
    for (uint a = 0u; a < RS; ++a) {
        const uint ii = row0 + sub * RM + s_row0 + a * (SG / KL);
        band[a] = ii < sq ? key_band(int(ii), int(sq), int(sk)) : ivec2(0, -1);
    }
    vec4 dq_acc[RZ * QZ];
    for (uint k = 0u; k < RZ * QZ; ++k) dq_acc[k] = vec4(0.0);

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
            for (uint x = gl_LocalInvocationIndex; x < BC * K4; x += WG) {
                const uint jj = x / K4, dq = x % K4, j = kt * BC + jj;
                sK[jj * RK + dq] = j < sk ? k_quad((k0 + j) * pc.heads_kv + hkv, dq, DK) : vec4(0.0);
            }
            for (uint x = gl_LocalInvocationIndex; x < BC * V4; x += WG) {
                const uint jj = x / V4, dq = x % V4, j = kt * BC + jj;
                sV[jj * RV + dq] = j < sk ? v_quad((k0 + j) * pc.heads_kv + hkv, dq, DV) : vec4(0.0);
            }
            barrier();

            float s[RS * CN], dp[RS * CN];
            for (uint a = 0u; a < RS * CN; ++a) {
                s[a] = 0.0;
                dp[a] = 0.0;
            }
            for (uint dq = 0u; dq < K4; ++dq) {
                vec4 kv[CN];
                for (uint x = 0u; x < CN; ++x) kv[x] = sK[(s_key0 + x * KL) * RK + dq];
                for (uint a = 0u; a < RS; ++a) {
                    const vec4 qv = sQ[(sub * RM + s_row0 + a * (SG / KL)) * RK + dq];
                    for (uint x = 0u; x < CN; ++x) s[a * CN + x] += dot(qv, kv[x]);
                }
            }
            for (uint dq = 0u; dq < V4; ++dq) {
                vec4 vv[CN];
                for (uint x = 0u; x < CN; ++x) vv[x] = sV[(s_key0 + x * KL) * RV + dq];
                for (uint a = 0u; a < RS; ++a) {
                    const vec4 ov = sDO[(sub * RM + s_row0 + a * (SG / KL)) * RV + dq];
                    for (uint x = 0u; x < CN; ++x) dp[a * CN + x] += dot(ov, vv[x]);
                }
            }
            for (uint a = 0u; a < RS; ++a) {
                const uint r = sub * RM + s_row0 + a * (SG / KL);
                const vec4 stats = sDS[r * PQ + BC / 4u];
                for (uint x = 0u; x < CN; ++x) {
                    const uint jj = s_key0 + x * KL;
                    const int j = int(kt * BC + jj);
                    float ds = 0.0;
                    if (j >= band[a].x && j <= band[a].y) {
                        const int diag = int(row0 + sub * RM + s_row0 + a * (SG / KL)) + shift;
                        const float p = exp2(logit_log2(s[a * CN + x]) + alibi_log2(slope, diag, j) - stats.x);
                        ds = p * (dp[a * CN + x] - stats.y);
                        if (SOFTCAP) {
                            const float th = tanh(s[a * CN + x] * (pc.scale_log2 * LN2) / pc.softcap);
                            ds *= 1.0 - th * th;
                        }
                    }
                    sDS[r * PQ + jj / 4u][jj % 4u] = ds;
                }
            }
            subgroupMemoryBarrierShared();  // dS is read back by this subgroup only
            subgroupBarrier();

            for (uint jq = 0u; jq < BC / 4u; ++jq) {
                vec4 kq[4 * QZ];
                for (uint c = 0u; c < 4u; ++c) {
                    for (uint z = 0u; z < QZ; ++z) kq[c * QZ + z] = sK[(jq * 4u + c) * RK + o_quad0 + z * QL];
                }
                for (uint a = 0u; a < RZ; ++a) {
                    const vec4 ds = sDS[(sub * RM + o_row0 + a * (SG / QL)) * PQ + jq];
                    for (uint z = 0u; z < QZ; ++z) {
                        dq_acc[a * QZ + z] += ds.x * kq[z] + ds.y * kq[QZ + z] + ds.z * kq[2u * QZ + z] + ds.w * kq[3u * QZ + z];
                    }
                }
            }
        }
    }

    const float scale = pc.scale_log2 * LN2;
    for (uint a = 0u; a < RZ; ++a) {
        const uint ii = row0 + sub * RM + o_row0 + a * (SG / QL);
        if (ii >= sq) continue;
        const uint base = ((SPLIT ? split * pc.total_q : 0u) + (q0 + ii)) * pc.heads_q * DK + hq * DK;
        for (uint z = 0u; z < QZ; ++z) STORE_QUAD(dq_buf, base, o_quad0 + z * QL, DK, dq_acc[a * QZ + z] * scale)
    }
}
