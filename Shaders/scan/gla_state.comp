#version 450
//! variant f32 -DIN_T=float
//! variant f16 -DIN_T=float16_t -DUSE_F16
//! variant bf16 -DIN_T=uint16_t -DIN_BF16 -DUSE_16BIT
// Gated linear attention, per-chunk state contributions, one invocation per (b, h, chunk,
// i, j) element of a Dk x Dv state, serial over the chunk's rows:
//   MODE 0 (forward):  dS_c[i][j] = sum_s k_s[i] exp(gcum_last[i] - gcum_s[i]) v_s[j], into
//                      slot c + 1 of the boundary states (the scan pass turns it into S).
//   MODE 1 (backward): dG_c[i][j] = sum_t q_t[i] exp(gcum_t[i]) dO_t[j], into slot c of the
//                      state gradients.
#if defined(USE_F16) || defined(USE_16BIT)
#extension GL_EXT_shader_16bit_storage : require
#endif
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint GATE = 2;  // 0: none, 1: per head, 2: per key dimension
layout(constant_id = 2) const uint MODE = 0;
#define GLA_TABLE_BINDING 4
#include "common/scan_gla.glsl"
#include "common/dtype.glsl"

layout(std430, binding = 0) readonly buffer X { IN_T x[]; };   // k (forward) or q (backward)
layout(std430, binding = 1) readonly buffer Y { IN_T y[]; };   // v (forward) or dO (backward)
layout(std430, binding = 2) readonly buffer GC { float gcum[]; };
layout(std430, binding = 3) writeonly buffer S { float states[]; };

void main() {
    const uint id = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    const uint j = id % pc.Dv;
    const uint i = (id / pc.Dv) % pc.Dk;
    const uint rest = id / (pc.Dv * pc.Dk);
    const uint c = rest % pc.NC;
    const uint bh = rest / pc.NC;
    if (bh >= pc.B * pc.H) return;
    const uint b = bh / pc.H, h = bh % pc.H;
    const uint rows = chunk_len(c);
    const uint t0 = chunk_t0(c);
    const float last = GATE != 0u ? gcum[gate_index(b, t0 + rows - 1u, h, i)] : 0.0;
    float acc = 0.0;
    for (uint r = 0u; r < rows; ++r) {
        const uint t = t0 + r;
        const float g = GATE != 0u ? gcum[gate_index(b, t, h, i)] : 0.0;
        const float decay = GATE != 0u ? exp(MODE == 0u ? last - g : g) : 1.0;
        acc += LOAD_IN(x[qk_index(b, t, h, i)]) * decay * LOAD_IN(y[vo_index(b, t, h, j)]);
    }
    states[state_index(b, h, MODE == 0u ? chunk_slot(c) + 1u : chunk_slot(c), i, j)] = acc;
}
