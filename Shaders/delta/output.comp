#version 450
//! variant f32 -DIN_T=float -DOUT_T=float
//! variant f16 -DIN_T=float16_t -DOUT_T=float16_t -DUSE_16BIT
//! variant f16o32 -DIN_T=float16_t -DOUT_T=float -DUSE_16BIT
//! variant bf16 -DIN_T=uint16_t -DOUT_T=uint16_t -DIN_BF16 -DOUT_BF16 -DUSE_16BIT
//! variant bf16o32 -DIN_T=uint16_t -DOUT_T=float -DIN_BF16 -DUSE_16BIT
// One workgroup per (chunk, head), from the state S_0 before the chunk (the carry's boundary):
//   W = U - Wk S_0   (the rows' new values, kept for the backward),
//   P[i][j] = exp(g_i - g_j) q_i . k_j   (j <= i),
// MODE 0 (forward):  o_i = exp(g_i) q_i S_0 + sum_{j <= i} P[i][j] W_j;
// MODE 1 (backward): R = P^T dO (the part of W's gradient from the outputs), and the chunk's
//   contribution to the state gradient before it, G = Q^T diag(exp(g)) dO - Wk^T R, which the
//   reversed carry adds: dS_0 = M^T dS_end + G.
#ifdef USE_16BIT
#extension GL_EXT_shader_16bit_storage : require
#endif
layout(local_size_x_id = 0) in;
layout(constant_id = 2) const uint CH = 32;
layout(constant_id = 4) const uint MODE = 0;
#include "delta/delta.glsl"
#include "common/dtype.glsl"

layout(std430, binding = 1) readonly buffer Q { IN_T q[]; };
layout(std430, binding = 2) readonly buffer K { IN_T k[]; };
layout(std430, binding = 3) readonly buffer GCum { float gcum[]; };
layout(std430, binding = 4) readonly buffer U { float u[]; };
layout(std430, binding = 5) readonly buffer Wk { float wk[]; };
layout(std430, binding = 6) readonly buffer S { float states[]; };
layout(std430, binding = 7) coherent buffer W { float w[]; };      // [T, H, Dv]
layout(std430, binding = 8) readonly buffer DO { IN_T dout[]; };
layout(std430, binding = 9) writeonly buffer O { OUT_T o[]; };
layout(std430, binding = 10) coherent buffer R { float r[]; };     // [T, H, Dv]
layout(std430, binding = 11) writeonly buffer G { float g_out[]; };  // [chunks, H, Dk, Dv]

shared float sg[CH];
shared float sP[CH * CH];

void main() {
    const uint wg = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
    if (wg >= pc.chunks * pc.H) return;  // uniform
    const uint c = wg / pc.H, h = wg % pc.H;
    const uvec4 entry = chunk_table[c];
    const uint r0 = entry.x, n = entry.y, slot = entry.w;
    const uint lid = gl_LocalInvocationIndex, WG = gl_WorkGroupSize.x;

    for (uint i = lid; i < n; i += WG) sg[i] = gcum[gate_index(r0 + i, h)];
    for (uint e = lid; e < n * pc.Dv; e += WG) {
        const uint i = e / pc.Dv, x = e % pc.Dv;
        float acc = u[vo_index(r0 + i, h, x)];
        for (uint d = 0u; d < pc.Dk; ++d) acc -= wk[qk_index(r0 + i, h, d)] * states[state_index(slot, h, d, x)];
        w[vo_index(r0 + i, h, x)] = acc;
    }
    barrier();
    for (uint e = lid; e < n * n; e += WG) {
        const uint i = e / n, j = e % n;
        float p = 0.0;
        if (j <= i) {
            for (uint d = 0u; d < pc.Dk; ++d) p += LOAD_IN(q[qk_index(r0 + i, h, d)]) * LOAD_IN(k[qk_index(r0 + j, h, d)]);
            p *= exp(sg[i] - sg[j]);
        }
        sP[i * CH + j] = p;
    }
    memoryBarrierBuffer();
    barrier();
    if (MODE == 0u) {
        for (uint e = lid; e < n * pc.Dv; e += WG) {
            const uint i = e / pc.Dv, x = e % pc.Dv;
            float inter = 0.0;
            for (uint d = 0u; d < pc.Dk; ++d) inter += LOAD_IN(q[qk_index(r0 + i, h, d)]) * states[state_index(slot, h, d, x)];
            float acc = exp(sg[i]) * inter;
            for (uint j = 0u; j <= i; ++j) acc += sP[i * CH + j] * w[vo_index(r0 + j, h, x)];
            o[vo_index(r0 + i, h, x)] = STORE_OUT(acc);
        }
    } else {
        for (uint e = lid; e < n * pc.Dv; e += WG) {
            const uint j = e / pc.Dv, x = e % pc.Dv;
            float acc = 0.0;
            for (uint i = j; i < n; ++i) acc += sP[i * CH + j] * LOAD_IN(dout[vo_index(r0 + i, h, x)]);
            r[vo_index(r0 + j, h, x)] = acc;
        }
        memoryBarrierBuffer();
        barrier();
        const uint base = (c * pc.H + h) * pc.Dk * pc.Dv;
        for (uint e = lid; e < pc.Dk * pc.Dv; e += WG) {
            const uint d = e / pc.Dv, x = e % pc.Dv;
            float acc = 0.0;
            for (uint i = 0u; i < n; ++i) {
                acc += exp(sg[i]) * LOAD_IN(q[qk_index(r0 + i, h, d)]) * LOAD_IN(dout[vo_index(r0 + i, h, x)])
                     - wk[qk_index(r0 + i, h, d)] * r[vo_index(r0 + i, h, x)];
            }
            g_out[base + e] = acc;
        }
    }
}
