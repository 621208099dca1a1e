#version 450
//! variant f32 -DIN_T=float
//! variant f16 -DIN_T=float16_t -DUSE_16BIT
//! variant bf16 -DIN_T=uint16_t -DIN_BF16 -DUSE_16BIT
// A chunk's affine map of the state, one workgroup per (chunk, head): S_end = M S_start + Bc,
//   M  = exp(g_n) I - K^T diag(exp(g_n - g)) Wk   [Dk, Dk],
//   Bc = K^T diag(exp(g_n - g)) U                 [Dk, Dv],
// (g_n: the cumulated log-decay at the chunk's last row), stored side by side as
// [chunks, H, Dk, Dk + Dv]. The carry chains the maps over chunks; ranks compose them.
#ifdef USE_16BIT
#extension GL_EXT_shader_16bit_storage : require
#endif
layout(local_size_x_id = 0) in;
layout(constant_id = 2) const uint CH = 32;
#include "delta/delta.glsl"
#include "common/dtype.glsl"

layout(std430, binding = 1) readonly buffer K { IN_T k[]; };
layout(std430, binding = 2) readonly buffer GCum { float gcum[]; };
layout(std430, binding = 3) readonly buffer U { float u[]; };
layout(std430, binding = 4) readonly buffer Wk { float wk[]; };
layout(std430, binding = 5) writeonly buffer Maps { float maps[]; };

shared float sw[CH];

void main() {
    const uint wg = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
    if (wg >= pc.chunks * pc.H) return;  // uniform
    const uint c = wg / pc.H, h = wg % pc.H;
    const uvec4 entry = chunk_table[c];
    const uint r0 = entry.x, n = entry.y;
    const uint lid = gl_LocalInvocationIndex, WG = gl_WorkGroupSize.x;
    const float gn = gcum[gate_index(r0 + n - 1u, h)];
    for (uint i = lid; i < n; i += WG) sw[i] = exp(gn - gcum[gate_index(r0 + i, h)]);
    barrier();
    const uint width = pc.Dk + pc.Dv;
    const uint base = (c * pc.H + h) * pc.Dk * width;
    for (uint e = lid; e < pc.Dk * width; e += WG) {
        const uint d = e / width, x = e % width;
        float acc = 0.0;
        if (x < pc.Dk) {
            for (uint i = 0u; i < n; ++i) acc += LOAD_IN(k[qk_index(r0 + i, h, d)]) * sw[i] * wk[qk_index(r0 + i, h, x)];
            acc = (d == x ? exp(gn) : 0.0) - acc;
        } else {
            for (uint i = 0u; i < n; ++i) acc += LOAD_IN(k[qk_index(r0 + i, h, d)]) * sw[i] * u[vo_index(r0 + i, h, x - pc.Dk)];
        }
        maps[base + e] = acc;
    }
}
