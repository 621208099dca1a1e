#version 450
//! variant f32 -DIN_T=float -DOUT_T=float
//! variant f16 -DIN_T=float16_t -DOUT_T=float16_t -DUSE_F16
//! variant f16o32 -DIN_T=float16_t -DOUT_T=float -DUSE_F16
//! variant bf16 -DIN_T=uint16_t -DOUT_T=uint16_t -DIN_BF16 -DOUT_BF16 -DUSE_16BIT
//! variant bf16o32 -DIN_T=uint16_t -DOUT_T=float -DIN_BF16 -DUSE_16BIT
// Flash attention backward, dK and dV (FlashAttention-2 with recomputation). Q, K and dK rows
// are DK wide, V, dO and dV rows DV (tiles padded with zeros to DKP, DVP: attention/rows.glsl). A workgroup
// owns BC keys of one (sequence, key/value head); each of its NS subgroups owns RM of them.
// It walks every query head of its GQA group and every query tile that can see its keys,
// recomputing per tile (vec4 rows in shared memory):
//   S^T = K Q^T and dP^T = V dO^T   lanes along query rows (RL), keys per lane RS, rows CR;
//   P^T = exp(logit - LSE), dS^T = P^T * (dP^T - Delta), written to shared;
//   dV += P^T dO and dK += dS^T Q    lanes along dim quads (QL), keys per lane RZ, quads QZ.
// GQA sums over the group's heads inside the workgroup: no atomics, the same result every
// run. The block mask given here is the transpose (key block -> query blocks). With SPLIT
// (devices that cap an invocation's loop iterations), workgroup column s covers queries
// [s * split_keys, (s + 1) * split_keys) and writes fp32 partials of dK and dV at split-major
// offsets; attention/sum_partials.comp adds them up in split order.
#extension GL_KHR_shader_subgroup_basic : require
#ifdef USE_F16
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#endif
#if defined(USE_F16) || defined(USE_16BIT)
#extension GL_EXT_shader_16bit_storage : require
#endif

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint DK = 64;   // Q, K, dK row width
layout(constant_id = 2) const uint BR = 16;
layout(constant_id = 3) const uint BC = 32;
layout(constant_id = 4) const uint SG = 8;
layout(constant_id = 5) const bool VARLEN = false;
layout(constant_id = 6) const bool PACK_GQA = false;  // unused by the backward
layout(constant_id = 7) const bool BLOCK_MASK = false;
layout(constant_id = 8) const bool SOFTCAP = false;
layout(constant_id = 9) const bool SPLIT = false;     // query range split into pc.splits partials
layout(constant_id = 11) const uint RL = 8;           // lanes along query rows in S^T
layout(constant_id = 12) const uint QL = 8;           // lanes along dim quads in dK, dV
layout(constant_id = 16) const uint DV = 64;          // V, dO, dV row width
layout(constant_id = 17) const uint DKP = 64;         // DK padded to a multiple of 4 QL
layout(constant_id = 18) const uint DVP = 64;         // DV padded likewise

layout(std430, binding = 0) readonly buffer QBuf { IN_T q_buf[]; };
layout(std430, binding = 1) readonly buffer KBuf { IN_T k_buf[]; };
layout(std430, binding = 2) readonly buffer VBuf { IN_T v_buf[]; };
layout(std430, binding = 3) readonly buffer DOBuf { IN_T do_buf[]; };
layout(std430, binding = 4) readonly buffer LseBuf { float lse_buf[]; };
layout(std430, binding = 5) readonly buffer DeltaBuf { float delta_buf[]; };
layout(std430, binding = 6) writeonly buffer DKBuf { OUT_T dk_buf[]; };
layout(std430, binding = 7) writeonly buffer DVBuf { OUT_T dv_buf[]; };
layout(std430, binding = 8) readonly buffer CuQ { int cu_q[]; };
layout(std430, binding = 9) readonly buffer CuK { int cu_k[]; };
layout(std430, binding = 10) readonly buffer MaskRows { int mask_offsets[]; };
layout(std430, binding = 11) readonly buffer MaskCols { int mask_cols[]; };
#define ALIBI_BINDING 12

#include "attention/params.glsl"
#include "common/dtype.glsl"
#include "attention/rows.glsl"

const uint WG = gl_WorkGroupSize.x;
const uint NS = WG / SG;
const uint RM = BC / NS;          // keys per subgroup
const uint K4 = DKP / 4;
const uint V4 = DVP / 4;
const uint RS = RM / (SG / RL);   // keys per lane in S^T
const uint CR = BR / RL;          // query rows per lane in S^T
const uint RZ = RM / (SG / QL);   // keys per lane in dK, dV
const uint QZK = K4 / QL;         // dK quads per lane
const uint QZV = V4 / QL;         // dV quads per lane
const uint RK = K4 + 1;           // row stride (vec4) of the K and Q tiles
const uint RV = V4 + 1;           // row stride (vec4) of the V and dO tiles
const uint PQ = BR / 4 + 1;       // row stride (vec4) of the P^T and dS^T tiles

// AttentionTiling.dkdvSharedBytes mirrors these declarations.
shared vec4 sK[BC * RK];
shared vec4 sV[BC * RV];
shared vec4 sQ[BR * RK];
shared vec4 sDO[BR * RV];
shared vec4 sPT[BC * PQ];
shared vec4 sDST[BC * PQ];
shared vec2 sStats[BR];           // (LSE in log2 units, Delta) per query row of the tile

DEFINE_QUAD_LOAD(q_quad, q_buf, LOAD_IN)
DEFINE_QUAD_LOAD(do_quad, do_buf, LOAD_IN)
DEFINE_QUAD_LOAD(k_quad, k_buf, LOAD_IN)
DEFINE_QUAD_LOAD(v_quad, v_buf, LOAD_IN)

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

    for (uint x = gl_LocalInvocationIndex; x < BC * K4; x += WG) {
        const uint jj = x / K4, dq = x % K4, j = key0 + jj;
        sK[jj * RK + dq] = j < sk ? k_quad((k0 + j) * pc.heads_kv + hkv, dq, DK) : vec4(0.0);
    }
    for (uint x = gl_LocalInvocationIndex; x < BC * V4; x += WG) {
        const uint jj = x / V4, dq = x % V4, j = key0 + jj;
        sV[jj * RV + dq] = j < sk ? v_quad((k0 + j) * pc.heads_kv + hkv, dq, DV) : vec4(0.0);
    }

    const uint s_key0 = lane / RL, s_row0 = lane % RL;
    const uint o_key0 = lane / QL, o_quad0 = lane % QL;
    vec4 dk_acc[RZ * QZK], dv_acc[RZ * QZV];
    for (uint k = 0u; k < RZ * QZK; ++k) dk_acc[k] = vec4(0.0);
    for (uint k = 0u; k < RZ * QZV; ++k) dv_acc[k] = vec4(0.0);

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
                barrier();
                for (uint x = gl_LocalInvocationIndex; x < BR * K4; x += WG) {
                    const uint rr = x / K4, dq = x % K4, ii = qt * BR + rr;
                    sQ[rr * RK + dq] = ii < sq ? q_quad((q0 + ii) * pc.heads_q + hq, dq, DK) : vec4(0.0);
                }
                for (uint x = gl_LocalInvocationIndex; x < BR * V4; x += WG) {
                    const uint rr = x / V4, dq = x % V4, ii = qt * BR + rr;
                    sDO[rr * RV + dq] = ii < sq ? do_quad((q0 + ii) * pc.heads_q + hq, dq, DV) : vec4(0.0);
                }
                for (uint rr = gl_LocalInvocationIndex; rr < BR; rr += WG) {
                    const uint ii = qt * BR + rr;
                    sStats[rr] = ii < sq ? vec2(lse_buf[lse_index(b, hq, ii)] * LOG2E, delta_buf[lse_index(b, hq, ii)]) : vec2(0.0);
                }
                barrier();

                float s[RS * CR], dp[RS * CR];
                for (uint a = 0u; a < RS * CR; ++a) {
                    s[a] = 0.0;
                    dp[a] = 0.0;
                }
                for (uint dq = 0u; dq < K4; ++dq) {
                    vec4 qv[CR];
                    for (uint x = 0u; x < CR; ++x) qv[x] = sQ[(s_row0 + x * RL) * RK + dq];
                    for (uint a = 0u; a < RS; ++a) {
                        const vec4 kv = sK[(sub * RM + s_key0 + a * (SG / RL)) * RK + dq];
                        for (uint x = 0u; x < CR; ++x) s[a * CR + x] += dot(kv, qv[x]);
                    }
                }
                for (uint dq = 0u; dq < V4; ++dq) {
                    vec4 ov[CR];
                    for (uint x = 0u; x < CR; ++x) ov[x] = sDO[(s_row0 + x * RL) * RV + dq];
                    for (uint a = 0u; a < RS; ++a) {
                        const vec4 vv = sV[(sub * RM + s_key0 + a * (SG / RL)) * RV + dq];
                        for (uint x = 0u; x < CR; ++x) dp[a * CR + x] += dot(vv, ov[x]);
                    }
                }
                for (uint a = 0u; a < RS; ++a) {
                    const uint c = sub * RM + s_key0 + a * (SG / RL);
                    const int j = int(key0 + c);
                    for (uint x = 0u; x < CR; ++x) {
                        const uint rr = s_row0 + x * RL;
                        const int i = int(qt * BR + rr);
                        float p = 0.0, ds = 0.0;
                        const ivec2 band = key_band(i, int(sq), int(sk));
                        if (j < int(sk) && i < int(sq) && j >= band.x && j <= band.y) {
                            const vec2 stats = sStats[rr];
                            p = exp2(logit_log2(s[a * CR + x]) + alibi_log2(slope, i + diagonal_shift(int(sq), int(sk)), j) - stats.x);
                            ds = p * (dp[a * CR + x] - stats.y);
                            if (SOFTCAP) {
                                const float th = tanh(s[a * CR + x] * (pc.scale_log2 * LN2) / pc.softcap);
                                ds *= 1.0 - th * th;
                            }
                        }
                        sPT[c * PQ + rr / 4u][rr % 4u] = p;
                        sDST[c * PQ + rr / 4u][rr % 4u] = ds;
                    }
                }
                subgroupMemoryBarrierShared();  // P^T and dS^T are read back by this subgroup only
                subgroupBarrier();

                for (uint iq = 0u; iq < BR / 4u; ++iq) {
                    vec4 oq[4 * QZV], qq[4 * QZK];
                    for (uint r = 0u; r < 4u; ++r) {
                        for (uint z = 0u; z < QZV; ++z) oq[r * QZV + z] = sDO[(iq * 4u + r) * RV + o_quad0 + z * QL];
                        for (uint z = 0u; z < QZK; ++z) qq[r * QZK + z] = sQ[(iq * 4u + r) * RK + o_quad0 + z * QL];
                    }
                    for (uint a = 0u; a < RZ; ++a) {
                        const uint c = sub * RM + o_key0 + a * (SG / QL);
                        const vec4 p = sPT[c * PQ + iq], ds = sDST[c * PQ + iq];
                        for (uint z = 0u; z < QZV; ++z) {
                            dv_acc[a * QZV + z] += p.x * oq[z] + p.y * oq[QZV + z] + p.z * oq[2u * QZV + z] + p.w * oq[3u * QZV + z];
                        }
                        for (uint z = 0u; z < QZK; ++z) {
                            dk_acc[a * QZK + z] += ds.x * qq[z] + ds.y * qq[QZK + z] + ds.z * qq[2u * QZK + z] + ds.w * qq[3u * QZK + z];
                        }
                    }
                }
            }
        }
    }

    const float scale = pc.scale_log2 * LN2;
    for (uint a = 0u; a < RZ; ++a) {
        const uint j = key0 + sub * RM + o_key0 + a * (SG / QL);
        if (j >= sk) continue;
        const uint total_k = VARLEN ? uint(cu_k[pc.batch]) : pc.batch * pc.seq_k;
        const uint row = ((SPLIT ? split * total_k : 0u) + (k0 + j)) * pc.heads_kv + hkv;
        for (uint z = 0u; z < QZK; ++z) STORE_QUAD(dk_buf, row * DK, o_quad0 + z * QL, DK, dk_acc[a * QZK + z] * scale)
        for (uint z = 0u; z < QZV; ++z) STORE_QUAD(dv_buf, row * DV, o_quad0 + z * QL, DV, dv_acc[a * QZV + z])
    }
}
