#version 450
//! variant f32 -DIN_T=float -DOUT_T=float
//! variant f16 -DIN_T=float16_t -DOUT_T=float16_t -DUSE_F16
//! variant f16o32 -DIN_T=float16_t -DOUT_T=float -DUSE_F16
// Flash attention backward, dK and dV (FlashAttention-2 with recomputation): a workgroup owns
// BC keys of one (sequence, key/value head) and walks every query head of its group and
// every query tile that can see those keys, recomputing P = exp(logit - LSE) and
// dS = P * (dP - Delta), and accumulating dV = P^T . dO and dK = scale * dS^T . Q in
// registers. GQA sums over the group's heads inside the workgroup: no atomics, results are
// the same run to run. Invocation (c, t) owns key c of the tile and dims t, t + TPR, ...
// The block mask given here is the transpose (key block -> query blocks).
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
layout(constant_id = 6) const bool PACK_GQA = false;  // unused by the backward
layout(constant_id = 7) const bool BLOCK_MASK = false;
layout(constant_id = 8) const bool SOFTCAP = false;
layout(constant_id = 9) const bool SPLIT = false;     // unused by the backward

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

#include "attention/params.glsl"

const uint WG = BC * TPR;
const uint DPT = D / TPR;
const uint RPT = BR / TPR;  // query rows scored per invocation per tile
const uint QS = D + 1;
const uint PS = BC + 1;

// AttentionTiling.dkdvSharedBytes mirrors these declarations.
shared float sQ[BR * QS];
shared float sDO[BR * QS];
shared float sK[BC * QS];
shared float sV[BC * QS];
shared float sP[BR * PS];
shared float sDS[BR * PS];
shared float sLse[BR];
shared float sDelta[BR];

void main() {
    const uint tid = gl_LocalInvocationID.x;
    const uint c = tid / TPR;   // key of the tile
    const uint t = tid % TPR;
    const uint b = gl_WorkGroupID.z;
    const uint hkv = gl_WorkGroupID.y;
    const uint G = pc.heads_q / pc.heads_kv;
    const uint sq = q_len(b), sk = k_len(b);
    const uint key0 = gl_WorkGroupID.x * BC;
    if (key0 >= sk) return;

    const uint j = key0 + c;
    const bool key_valid = j < sk;
    const uint q0 = q_start(b), k0 = k_start(b);
    const uint j_last = min(key0 + BC, sk) - 1u;
    const int q_lo = query_band(int(key0), int(sq), int(sk)).x;
    const int q_hi = query_band(int(j_last), int(sq), int(sk)).y;
    uint qt_lo = 0u, qt_hi = 0u;
    if (q_lo <= q_hi) {
        qt_lo = uint(q_lo) / BR;
        qt_hi = uint(q_hi) / BR + 1u;
    }

    for (uint x = tid; x < BC * D; x += WG) {
        const uint jj = x / D, d = x % D, jk = key0 + jj;
        const uint at = ((k0 + jk) * pc.heads_kv + hkv) * D + d;
        sK[jj * QS + d] = jk < sk ? float(k_buf[at]) : 0.0;
        sV[jj * QS + d] = jk < sk ? float(v_buf[at]) : 0.0;
    }
    float dk_acc[DPT];
    float dv_acc[DPT];
    for (uint k = 0u; k < DPT; ++k) {
        dk_acc[k] = 0.0;
        dv_acc[k] = 0.0;
    }

    uint ranges = 1u, first_entry = 0u;
    if (BLOCK_MASK) {
        const uint kb = key0 / pc.mask_block;
        ranges = 0u;
        if (kb < pc.mask_rows) {
            first_entry = uint(mask_offsets[kb]);
            ranges = uint(mask_offsets[kb + 1u]) - first_entry;
        }
    }
    for (uint g = 0u; g < G; ++g) {
        const uint hq = hkv * G + g;
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
                for (uint x = tid; x < BR * D; x += WG) {
                    const uint rr = x / D, d = x % D, ii = qt * BR + rr;
                    const uint at = ((q0 + ii) * pc.heads_q + hq) * D + d;
                    sQ[rr * QS + d] = ii < sq ? float(q_buf[at]) : 0.0;
                    sDO[rr * QS + d] = ii < sq ? float(do_buf[at]) : 0.0;
                }
                for (uint rr = tid; rr < BR; rr += WG) {
                    const uint ii = qt * BR + rr;
                    sLse[rr] = ii < sq ? lse_buf[lse_index(b, hq, ii)] * LOG2E : 0.0;
                    sDelta[rr] = ii < sq ? delta_buf[lse_index(b, hq, ii)] : 0.0;
                }
                barrier();
                for (uint x = 0u; x < RPT; ++x) {
                    const uint rr = t + x * TPR;
                    const int i = int(qt * BR + rr);
                    float dot_qk = 0.0, dot_dov = 0.0;
                    for (uint d = 0u; d < D; ++d) {
                        dot_qk += sQ[rr * QS + d] * sK[c * QS + d];
                        dot_dov += sDO[rr * QS + d] * sV[c * QS + d];
                    }
                    float pv = 0.0, ds = 0.0;
                    const ivec2 band = key_band(i, int(sq), int(sk));
                    if (key_valid && i < int(sq) && int(j) >= band.x && int(j) <= band.y) {
                        pv = exp2(logit_log2(dot_qk) - sLse[rr]);
                        ds = pv * (dot_dov - sDelta[rr]);
                        if (SOFTCAP) {
                            const float th = tanh(dot_qk * (pc.scale_log2 * LN2) / pc.softcap);
                            ds *= 1.0 - th * th;
                        }
                    }
                    sP[rr * PS + c] = pv;
                    sDS[rr * PS + c] = ds;
                }
                barrier();
                for (uint rr = 0u; rr < BR; ++rr) {
                    const float pv = sP[rr * PS + c], ds = sDS[rr * PS + c];
                    for (uint k = 0u; k < DPT; ++k) {
                        dv_acc[k] += pv * sDO[rr * QS + t + k * TPR];
                        dk_acc[k] += ds * sQ[rr * QS + t + k * TPR];
                    }
                }
            }
        }
    }

    if (key_valid) {
        const float scale = pc.scale_log2 * LN2;
        const uint base = ((k0 + j) * pc.heads_kv + hkv) * D;
        for (uint k = 0u; k < DPT; ++k) {
            dk_buf[base + t + k * TPR] = OUT_T(dk_acc[k] * scale);
            dv_buf[base + t + k * TPR] = OUT_T(dv_acc[k]);
        }
    }
}
