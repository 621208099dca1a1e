#version 450
//! variant f32 -DIN_T=float -DOUT_T=float
//! variant f16 -DIN_T=float16_t -DOUT_T=float16_t -DUSE_16BIT
//! variant f16o32 -DIN_T=float16_t -DOUT_T=float -DUSE_16BIT
//! variant bf16 -DIN_T=uint16_t -DOUT_T=uint16_t -DIN_BF16 -DOUT_BF16 -DUSE_16BIT
//! variant bf16o32 -DIN_T=uint16_t -DOUT_T=float -DIN_BF16 -DUSE_16BIT
// The delta rule's gradients within one chunk, one workgroup per (chunk, head), from the state
// S_0 before the chunk and the gradient dS_1 of the state after it (the reversed carry). The
// forward of a chunk (prep.comp, output.comp) is, with X = diag(beta) V, Y = diag(beta exp(g)) K,
// Gamma[i][j] = exp(g_i - g_j) and n rows (g_n: the last row's cumulated log-decay):
//   A = strictly lower(diag(beta) Gamma K K^T), T = (I + A)^-1, U = T X, Wk = T Y, W = U - Wk S_0,
//   O = diag(exp(g)) Q S_0 + P W with P = lower(Gamma Q K^T),
//   S_1 = exp(g_n) S_0 + K^T diag(exp(g_n - g)) W.
// Backward, in that graph's reverse order:
//   dW  = P^T dO + diag(exp(g_n - g)) K dS_1   (R, from output.comp, plus the state term)
//   dWk = -dW S_0^T;   dT = dW X^T + dWk Y^T;   dX = T^T dW;   dY = T^T dWk
//   dA  = -T^T dT T^T (strictly lower);   dP = dO W^T (lower)
// and from those dq, dk, dv, dbeta and the gradient of each row's cumulated log-decay, whose
// reverse cumulative sum within the chunk is the log-decay's gradient (decays never cross a
// chunk: S_0 carries them).
#ifdef USE_16BIT
#extension GL_EXT_shader_16bit_storage : require
#endif
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint GATED = 1;
layout(constant_id = 2) const uint CH = 32;
// 0: grads_state_coopmat.comp has formed dW (over R), dWk, and the rows' dS_1 W^T and dO S_0^T
// terms (in pk and pq); 1: this kernel forms them.
layout(constant_id = 3) const uint STATE_PRODUCTS = 1;
// 0: grads_gram_coopmat.comp has formed Q K^T, dO W^T, dW V^T, dWk K^T and K K^T (gram_in);
// 1: this kernel forms them.
layout(constant_id = 4) const uint GRAM = 1;
#include "delta/delta.glsl"
#include "common/dtype.glsl"

layout(std430, binding = 1) readonly buffer Q { IN_T q[]; };
layout(std430, binding = 2) readonly buffer K { IN_T k[]; };
layout(std430, binding = 3) readonly buffer V { IN_T v[]; };
layout(std430, binding = 4) readonly buffer Beta { float beta[]; };
layout(std430, binding = 5) readonly buffer GCum { float gcum[]; };
layout(std430, binding = 6) readonly buffer DO { IN_T dout[]; };
layout(std430, binding = 7) readonly buffer TIn { float t_in[]; };
layout(std430, binding = 8) readonly buffer S { float states[]; };
layout(std430, binding = 9) readonly buffer DS { float dstates[]; };
layout(std430, binding = 10) readonly buffer W { float w[]; };
layout(std430, binding = 11) coherent buffer DW { float dw[]; };    // R in, dW out: [T, H, Dv]
layout(std430, binding = 12) coherent buffer DWk { float dwk[]; };  // [T, H, Dk]
layout(std430, binding = 13) coherent buffer PQ { float pq[]; };    // [T, H, Dk]
layout(std430, binding = 14) coherent buffer PK { float pk[]; };    // [T, H, Dk]
layout(std430, binding = 15) writeonly buffer DQ { OUT_T dq[]; };
layout(std430, binding = 16) writeonly buffer DK { OUT_T dk[]; };
layout(std430, binding = 17) writeonly buffer DV { OUT_T dv[]; };
layout(std430, binding = 18) writeonly buffer DBeta { float dbeta[]; };
layout(std430, binding = 19) writeonly buffer DLog { float dlog[]; };
layout(std430, binding = 20) readonly buffer Gram { float gram_in[]; };  // [chunks, H, 5, C, C]

shared float sg[CH], sb[CH], sdg[CH], sdb[CH], st[CH];
shared float sT[CH * CH], sP[CH * CH], sE[CH * CH], sTmp[CH * CH], sY[CH * CH];
shared float sred[gl_WorkGroupSize.x];


void main() {
    const uint wg = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
    if (wg >= pc.chunks * pc.H) return;  // uniform
    const uint c = wg / pc.H, h = wg % pc.H;
    const uvec4 entry = chunk_table[c];
    const uint r0 = entry.x, n = entry.y, slot = entry.w;
    const uint lid = gl_LocalInvocationIndex, WG = gl_WorkGroupSize.x;
    const uint Dk = pc.Dk, Dv = pc.Dv;

    for (uint i = lid; i < n; i += WG) {
        sg[i] = gcum[gate_index(r0 + i, h)];
        sb[i] = beta[gate_index(r0 + i, h)];
        sdg[i] = 0.0;
        sdb[i] = 0.0;
    }
    const uint tBase = (c * pc.H + h) * pc.C * pc.C;
    const uint gBase = (c * pc.H + h) * 5u * pc.C * pc.C;
    for (uint e = lid; e < n * n; e += WG) sT[(e / n) * CH + e % n] = t_in[tBase + (e / n) * pc.C + e % n];
    barrier();
    const float gn = sg[n - 1u];

    // P and dP = dO W^T (lower, diagonal included).
    for (uint e = lid; e < n * n; e += WG) {
        const uint i = e / n, j = e % n;
        float p = 0.0, dp = 0.0;
        if (j <= i && GRAM == 0u) {
            p = gram_in[gBase + i * pc.C + j] * exp(sg[i] - sg[j]);
            dp = gram_in[gBase + pc.C * pc.C + i * pc.C + j];
        } else if (j <= i) {
            for (uint d = 0u; d < Dk; ++d) p += LOAD_IN(q[qk_index(r0 + i, h, d)]) * LOAD_IN(k[qk_index(r0 + j, h, d)]);
            p *= exp(sg[i] - sg[j]);
            for (uint x = 0u; x < Dv; ++x) dp += LOAD_IN(dout[vo_index(r0 + i, h, x)]) * w[vo_index(r0 + j, h, x)];
        }
        sP[i * CH + j] = p;
        sTmp[i * CH + j] = dp;
    }
    barrier();
    // dW = R + diag(exp(g_n - g)) K dS_1, in place; the P terms of each row's log-decay gradient.
    for (uint e = lid; e < n * Dv && STATE_PRODUCTS != 0u; e += WG) {
        const uint j = e / Dv, x = e % Dv;
        float acc = 0.0;
        for (uint d = 0u; d < Dk; ++d) acc += LOAD_IN(k[qk_index(r0 + j, h, d)]) * dstates[state_index(slot + 1u, h, d, x)];
        dw[vo_index(r0 + j, h, x)] += exp(gn - sg[j]) * acc;
    }
    for (uint i = lid; i < n; i += WG) {
        float acc = 0.0;
        for (uint j = 0u; j <= i; ++j) acc += sTmp[i * CH + j] * sP[i * CH + j];
        for (uint m = i; m < n; ++m) acc -= sTmp[m * CH + i] * sP[m * CH + i];
        sdg[i] = acc;
    }
    memoryBarrierBuffer();
    barrier();
    // sP becomes dP * Gamma (the gradient of q_i . k_j); dWk = -dW S_0^T.
    for (uint e = lid; e < n * n; e += WG) {
        const uint i = e / n, j = e % n;
        sP[i * CH + j] = j <= i ? sTmp[i * CH + j] * exp(sg[i] - sg[j]) : 0.0;
    }
    for (uint e = lid; e < n * Dk && STATE_PRODUCTS != 0u; e += WG) {
        const uint i = e / Dk, d = e % Dk;
        float acc = 0.0;
        for (uint x = 0u; x < Dv; ++x) acc += dw[vo_index(r0 + i, h, x)] * states[state_index(slot, h, d, x)];
        dwk[qk_index(r0 + i, h, d)] = -acc;
    }
    memoryBarrierBuffer();
    barrier();
    // dT[i][j] = beta_j (dW_i . v_j + exp(g_j) dWk_i . k_j) for j <= i; the column sums of
    // T[i][j] (...) give dbeta's X and Y terms, of T[i][j] exp(g_j) dWk_i . k_j the Y term of dg.
    for (uint e = lid; e < n * n; e += WG) {
        const uint i = e / n, j = e % n;
        float dt = 0.0, tx = 0.0, ty = 0.0;
        if (j <= i) {
            float xd = 0.0, yd = 0.0;
            if (GRAM == 0u) {
                xd = gram_in[gBase + 2u * pc.C * pc.C + i * pc.C + j];
                yd = gram_in[gBase + 3u * pc.C * pc.C + i * pc.C + j];
            } else {
                for (uint x = 0u; x < Dv; ++x) xd += dw[vo_index(r0 + i, h, x)] * LOAD_IN(v[vo_index(r0 + j, h, x)]);
                for (uint d = 0u; d < Dk; ++d) yd += dwk[qk_index(r0 + i, h, d)] * LOAD_IN(k[qk_index(r0 + j, h, d)]);
            }
            yd *= exp(sg[j]);
            dt = sb[j] * (xd + yd);
            tx = sT[i * CH + j] * (xd + yd);
            ty = sT[i * CH + j] * yd;
        }
        sTmp[i * CH + j] = dt;
        sY[i * CH + j] = tx;
        sE[i * CH + j] = ty;
    }
    barrier();
    for (uint j = lid; j < n; j += WG) {
        float bx = 0.0, by = 0.0;
        for (uint i = j; i < n; ++i) {
            bx += sY[i * CH + j];
            by += sE[i * CH + j];
        }
        sdb[j] += bx;
        sdg[j] += sb[j] * by;
    }
    barrier();
    // sE = dT T^T, then sY = dA = -T^T (dT T^T), strictly lower.
    for (uint e = lid; e < n * n; e += WG) {
        const uint i = e / n, j = e % n;
        float acc = 0.0;
        for (uint m = 0u; m <= min(i, j); ++m) acc += sTmp[i * CH + m] * sT[j * CH + m];
        sE[i * CH + j] = acc;
    }
    barrier();
    for (uint e = lid; e < n * n; e += WG) {
        const uint j = e / n, m = e % n;
        float acc = 0.0;
        if (m < j) for (uint i = j; i < n; ++i) acc -= sT[i * CH + j] * sE[i * CH + m];
        sY[j * CH + m] = acc;
    }
    barrier();
    // With A[j][m] = beta_j exp(g_j - g_m) k_j . k_m: sTmp = dA exp(g_j - g_m) k_j . k_m (dbeta_j's
    // and, times beta_j, dg's terms), sE = dA beta_j exp(g_j - g_m) (k's terms).
    for (uint e = lid; e < n * n; e += WG) {
        const uint j = e / n, m = e % n;
        float hv = 0.0, ev = 0.0;
        if (m < j) {
            float kk = 0.0;
            if (GRAM == 0u) {
                kk = gram_in[gBase + 4u * pc.C * pc.C + j * pc.C + m];
            } else {
                for (uint d = 0u; d < Dk; ++d) kk += LOAD_IN(k[qk_index(r0 + j, h, d)]) * LOAD_IN(k[qk_index(r0 + m, h, d)]);
            }
            const float gam = exp(sg[j] - sg[m]);
            hv = sY[j * CH + m] * gam * kk;
            ev = sY[j * CH + m] * sb[j] * gam;
        }
        sTmp[j * CH + m] = hv;
        sE[j * CH + m] = ev;
    }
    barrier();
    for (uint j = lid; j < n; j += WG) {
        float row = 0.0, column = 0.0;
        for (uint m = 0u; m < j; ++m) row += sTmp[j * CH + m];
        for (uint i = j + 1u; i < n; ++i) column += sb[i] * sTmp[i * CH + j];
        sdb[j] += row;
        sdg[j] += sb[j] * row - column;
    }
    // dv = diag(beta) T^T dW.
    for (uint e = lid; e < n * Dv; e += WG) {
        const uint j = e / Dv, x = e % Dv;
        float acc = 0.0;
        for (uint i = j; i < n; ++i) acc += sT[i * CH + j] * dw[vo_index(r0 + i, h, x)];
        dv[vo_index(r0 + j, h, x)] = STORE_OUT(sb[j] * acc);
    }
    // dk and dq; pq, pk: the per-element terms of dg from the outputs' S_0 part and S_1.
    for (uint e = lid; e < n * Dk; e += WG) {
        const uint j = e / Dk, d = e % Dk;
        float ty = 0.0, fromA = 0.0, fromP = 0.0, fromS = 0.0;
        for (uint i = j; i < n; ++i) ty += sT[i * CH + j] * dwk[qk_index(r0 + i, h, d)];
        for (uint m = 0u; m < j; ++m) fromA += sE[j * CH + m] * LOAD_IN(k[qk_index(r0 + m, h, d)]);
        for (uint i = j + 1u; i < n; ++i) fromA += sE[i * CH + j] * LOAD_IN(k[qk_index(r0 + i, h, d)]);
        for (uint i = j; i < n; ++i) fromP += sP[i * CH + j] * LOAD_IN(q[qk_index(r0 + i, h, d)]);
        if (STATE_PRODUCTS != 0u) {
            for (uint x = 0u; x < Dv; ++x) fromS += dstates[state_index(slot + 1u, h, d, x)] * w[vo_index(r0 + j, h, x)];
            fromS *= exp(gn - sg[j]);
        } else {
            fromS = pk[qk_index(r0 + j, h, d)];
        }
        const float kj = LOAD_IN(k[qk_index(r0 + j, h, d)]);
        dk[qk_index(r0 + j, h, d)] = STORE_OUT(sb[j] * exp(sg[j]) * ty + fromA + fromP + fromS);
        pk[qk_index(r0 + j, h, d)] = kj * fromS;

        float inter = 0.0, fromPq = 0.0;
        if (STATE_PRODUCTS != 0u) {
            for (uint x = 0u; x < Dv; ++x) inter += states[state_index(slot, h, d, x)] * LOAD_IN(dout[vo_index(r0 + j, h, x)]);
            inter *= exp(sg[j]);
        } else {
            inter = pq[qk_index(r0 + j, h, d)];
        }
        for (uint m = 0u; m <= j; ++m) fromPq += sP[j * CH + m] * LOAD_IN(k[qk_index(r0 + m, h, d)]);
        dq[qk_index(r0 + j, h, d)] = STORE_OUT(inter + fromPq);
        pq[qk_index(r0 + j, h, d)] = LOAD_IN(q[qk_index(r0 + j, h, d)]) * inter;
    }
    // <S_0, dS_1>, for the last row's dg.
    float part = 0.0;
    if (GATED != 0u) {
        for (uint e = lid; e < Dk * Dv; e += WG) part += states[state_index(slot, h, e / Dv, e % Dv)] * dstates[state_index(slot + 1u, h, e / Dv, e % Dv)];
    }
    sred[lid] = part;
    memoryBarrierBuffer();
    barrier();
    for (uint j = lid; j < n; j += WG) {
        float fromO = 0.0, fromS = 0.0;
        for (uint d = 0u; d < Dk; ++d) {
            fromO += pq[qk_index(r0 + j, h, d)];
            fromS += pk[qk_index(r0 + j, h, d)];
        }
        sdg[j] += fromO - fromS;
        st[j] = fromS;
        dbeta[gate_index(r0 + j, h)] = sdb[j];
    }
    barrier();
    if (GATED != 0u && lid == 0u) {
        float last = 0.0;
        for (uint i = 0u; i < WG; ++i) last += sred[i];
        last *= exp(gn);
        for (uint j = 0u; j < n; ++j) last += st[j];
        float running = last;
        for (uint i = n; i > 0u; --i) {
            running += sdg[i - 1u];
            dlog[gate_index(r0 + i - 1u, h)] = running;
        }
    }
}
