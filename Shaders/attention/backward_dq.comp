#version 450
//! variant f32 -DIN_T=float -DOUT_T=float
//! variant f16 -DIN_T=float16_t -DOUT_T=float16_t -DUSE_F16
//! variant f16o32 -DIN_T=float16_t -DOUT_T=float -DUSE_F16
// Flash attention backward, dQ (FlashAttention-2 with recomputation, no atomics): a workgroup
// owns BR query rows of one (sequence, query head) and streams K and V tiles, recomputing
// P = exp(logit - LSE) and dS = P * (dP - Delta) with dP = dO . V, and accumulating
// dQ = scale * dS . K. Tiles outside the mask are skipped as in the forward. Lane layout as
// in forward.comp: invocation (r, t) scores keys t, t + TPR, ... and owns dims t, t + TPR, ...
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
layout(std430, binding = 6) writeonly buffer DQBuf { OUT_T dq_buf[]; };
layout(std430, binding = 7) readonly buffer CuQ { int cu_q[]; };
layout(std430, binding = 8) readonly buffer CuK { int cu_k[]; };
layout(std430, binding = 9) readonly buffer MaskRows { int mask_offsets[]; };
layout(std430, binding = 10) readonly buffer MaskCols { int mask_cols[]; };

#include "attention/params.glsl"

const uint WG = BR * TPR;
const uint DPT = D / TPR;
const uint KPT = BC / TPR;
const uint QS = D + 1;
const uint PS = BC + 1;

// AttentionTiling.dqSharedBytes mirrors these declarations.
shared float sQ[BR * QS];
shared float sDO[BR * QS];
shared float sK[BC * QS];
shared float sV[BC * QS];
shared float sDS[BR * PS];
shared float sLse[BR];    // LSE in log2 units
shared float sDelta[BR];

void main() {
    const uint tid = gl_LocalInvocationID.x;
    const uint r = tid / TPR;
    const uint t = tid % TPR;
    const uint b = gl_WorkGroupID.z;
    const uint hq = gl_WorkGroupID.y;
    const uint hkv = hq / (pc.heads_q / pc.heads_kv);
    const uint sq = q_len(b), sk = k_len(b);
    const uint row0 = gl_WorkGroupID.x * BR;
    if (row0 >= sq) return;

    const uint i = row0 + r;
    const bool row_valid = i < sq;
    const uint q0 = q_start(b), k0 = k_start(b);
    const ivec2 band = key_band(int(i), int(sq), int(sk));
    const uint i_last = min(row0 + BR, sq) - 1u;
    const int key_lo = key_band(int(row0), int(sq), int(sk)).x;
    const int key_hi = key_band(int(i_last), int(sq), int(sk)).y;
    uint kt_lo = 0u, kt_hi = 0u;
    if (key_lo <= key_hi) {
        kt_lo = uint(key_lo) / BC;
        kt_hi = uint(key_hi) / BC + 1u;
    }

    for (uint x = tid; x < BR * D; x += WG) {
        const uint rr = x / D, d = x % D, ii = row0 + rr;
        const uint at = ((q0 + ii) * pc.heads_q + hq) * D + d;
        sQ[rr * QS + d] = ii < sq ? float(q_buf[at]) : 0.0;
        sDO[rr * QS + d] = ii < sq ? float(do_buf[at]) : 0.0;
    }
    for (uint rr = tid; rr < BR; rr += WG) {
        const uint ii = row0 + rr;
        sLse[rr] = ii < sq ? lse_buf[lse_index(b, hq, ii)] * LOG2E : 0.0;
        sDelta[rr] = ii < sq ? delta_buf[lse_index(b, hq, ii)] : 0.0;
    }
    float dq_acc[DPT];
    for (uint k = 0u; k < DPT; ++k) dq_acc[k] = 0.0;

    uint ranges = 1u, first_entry = 0u;
    if (BLOCK_MASK) {
        const uint qb = row0 / pc.mask_block;
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
            barrier();
            for (uint x = tid; x < BC * D; x += WG) {
                const uint jj = x / D, d = x % D, j = kt * BC + jj;
                const uint at = ((k0 + j) * pc.heads_kv + hkv) * D + d;
                sK[jj * QS + d] = j < sk ? float(k_buf[at]) : 0.0;
                sV[jj * QS + d] = j < sk ? float(v_buf[at]) : 0.0;
            }
            barrier();
            for (uint c = 0u; c < KPT; ++c) {
                const uint jj = t + c * TPR;
                const int j = int(kt * BC + jj);
                float dot_qk = 0.0, dot_dov = 0.0;
                for (uint d = 0u; d < D; ++d) {
                    dot_qk += sQ[r * QS + d] * sK[jj * QS + d];
                    dot_dov += sDO[r * QS + d] * sV[jj * QS + d];
                }
                float ds = 0.0;
                if (row_valid && j >= band.x && j <= band.y) {
                    const float pv = exp2(logit_log2(dot_qk) - sLse[r]);
                    ds = pv * (dot_dov - sDelta[r]);
                    if (SOFTCAP) {
                        const float th = tanh(dot_qk * (pc.scale_log2 * LN2) / pc.softcap);
                        ds *= 1.0 - th * th;
                    }
                }
                sDS[r * PS + jj] = ds;
            }
            barrier();
            for (uint jj = 0u; jj < BC; ++jj) {
                const float ds = sDS[r * PS + jj];
                for (uint k = 0u; k < DPT; ++k) dq_acc[k] += ds * sK[jj * QS + t + k * TPR];
            }
        }
    }

    if (row_valid) {
        const float scale = pc.scale_log2 * LN2;
        const uint base = ((q0 + i) * pc.heads_q + hq) * D;
        for (uint k = 0u; k < DPT; ++k) dq_buf[base + t + k * TPR] = OUT_T(dq_acc[k] * scale);
    }
}
