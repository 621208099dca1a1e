#version 450
//! variant f32 -DIN_T=float
//! variant f16 -DIN_T=float16_t -DUSE_16BIT
//! variant bf16 -DIN_T=uint16_t -DIN_BF16 -DUSE_16BIT
// The delta rule's chunk-local WY (UT) form, one workgroup per (chunk, head). With g the
// log-decays cumulated within the chunk and rows i, j of the chunk:
//   A[i][j] = beta_i exp(g_i - g_j) k_i . k_j   (j < i; strictly lower),   T = (I + A)^-1,
//   U = T diag(beta) V,   Wk = T diag(beta exp(g)) K.
// Starting from S_0, the chunk's rows see W = U - Wk S_0 as their "new values":
//   S_i = exp(g_i) S_0 + sum_{j <= i} exp(g_i - g_j) k_j W_j^T.
// T is found by forward substitution (row i from rows < i), one barrier per row.
#ifdef USE_16BIT
#extension GL_EXT_shader_16bit_storage : require
#endif
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint GATED = 1;  // 0: no decay (DeltaNet), 1: a log-decay per head and step
layout(constant_id = 2) const uint CH = 32;    // rows per chunk (sizes the shared matrices)
layout(constant_id = 3) const uint PRODUCTS = 1;  // 0: T only (wy_coopmat.comp forms U and Wk)
#include "delta/delta.glsl"
#include "common/dtype.glsl"

layout(std430, binding = 1) readonly buffer K { IN_T k[]; };
layout(std430, binding = 2) readonly buffer V { IN_T v[]; };
layout(std430, binding = 3) readonly buffer Beta { float beta[]; };
layout(std430, binding = 4) readonly buffer LogDecay { float log_decay[]; };
layout(std430, binding = 5) writeonly buffer GCum { float gcum[]; };        // [T, H]
layout(std430, binding = 6) writeonly buffer TOut { float t_out[]; };      // [chunks, H, C, C]
layout(std430, binding = 7) writeonly buffer UOut { float u_out[]; };      // [T, H, Dv]
layout(std430, binding = 8) writeonly buffer WkOut { float wk_out[]; };    // [T, H, Dk]

shared float sg[CH];
shared float sb[CH];
shared float sA[CH * CH];
shared float sT[CH * CH];

void main() {
    const uint wg = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
    if (wg >= pc.chunks * pc.H) return;  // uniform
    const uint c = wg / pc.H, h = wg % pc.H;
    const uvec4 entry = chunk_table[c];
    const uint r0 = entry.x, n = entry.y;
    const uint lid = gl_LocalInvocationIndex, WG = gl_WorkGroupSize.x;

    if (lid == 0u) {
        float acc = 0.0;
        for (uint i = 0u; i < n; ++i) {
            if (GATED != 0u) acc += log_decay[gate_index(r0 + i, h)];
            sg[i] = acc;
            sb[i] = beta[gate_index(r0 + i, h)];
        }
    }
    barrier();
    for (uint e = lid; e < n * n; e += WG) {
        const uint i = e / n, j = e % n;
        float a = 0.0;
        if (j < i) {
            for (uint d = 0u; d < pc.Dk; ++d) a += LOAD_IN(k[qk_index(r0 + i, h, d)]) * LOAD_IN(k[qk_index(r0 + j, h, d)]);
            a *= sb[i] * exp(sg[i] - sg[j]);
        }
        sA[i * CH + j] = a;
        sT[i * CH + j] = i == j ? 1.0 : 0.0;
    }
    barrier();
    // Row i of T: T[i][j] = -sum_{j <= m < i} A[i][m] T[m][j] for j < i (T[i][i] = 1).
    for (uint i = 1u; i < n; ++i) {
        for (uint j = lid; j < i; j += WG) {
            float acc = 0.0;
            for (uint m = j; m < i; ++m) acc += sA[i * CH + m] * sT[m * CH + j];
            sT[i * CH + j] = -acc;
        }
        barrier();
    }
    const uint tBase = (c * pc.H + h) * pc.C * pc.C;
    for (uint e = lid; e < n * n; e += WG) {
        const uint i = e / n, j = e % n;
        t_out[tBase + i * pc.C + j] = sT[i * CH + j];
    }
    for (uint i = lid; i < n; i += WG) gcum[gate_index(r0 + i, h)] = sg[i];
    if (PRODUCTS == 0u) return;
    for (uint e = lid; e < n * pc.Dv; e += WG) {
        const uint i = e / pc.Dv, x = e % pc.Dv;
        float acc = 0.0;
        for (uint j = 0u; j <= i; ++j) acc += sT[i * CH + j] * sb[j] * LOAD_IN(v[vo_index(r0 + j, h, x)]);
        u_out[vo_index(r0 + i, h, x)] = acc;
    }
    for (uint e = lid; e < n * pc.Dk; e += WG) {
        const uint i = e / pc.Dk, d = e % pc.Dk;
        float acc = 0.0;
        for (uint j = 0u; j <= i; ++j) acc += sT[i * CH + j] * sb[j] * exp(sg[j]) * LOAD_IN(k[qk_index(r0 + j, h, d)]);
        wk_out[qk_index(r0 + i, h, d)] = acc;
    }
}
