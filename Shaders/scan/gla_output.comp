#version 450
//! variant f32 -DIN_T=float -DOUT_T=float
//! variant f16 -DIN_T=float16_t -DOUT_T=float16_t -DUSE_F16
//! variant f16o32 -DIN_T=float16_t -DOUT_T=float -DUSE_F16
//! variant bf16 -DIN_T=uint16_t -DOUT_T=uint16_t -DIN_BF16 -DOUT_BF16 -DUSE_16BIT
//! variant bf16o32 -DIN_T=uint16_t -DOUT_T=float -DIN_BF16 -DUSE_16BIT
// Gated linear attention, the output of one chunk (one workgroup per (b, h, chunk)):
//   o_t = (q_t * exp(gcum_t)) S_start + sum_{s <= t in the chunk} A[t][s] v_s,
//   A[t][s] = sum_i q_t[i] k_s[i] exp(gcum_t[i] - gcum_s[i])   (the masked intra-chunk product),
// with S_start the boundary state before the chunk. Decays are relative to rows of the same
// chunk, so every exponent is <= 0 for non-positive log gates.
#if defined(USE_F16) || defined(USE_16BIT)
#extension GL_EXT_shader_16bit_storage : require
#endif
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint GATE = 2;  // 0: none, 1: per head, 2: per key dimension
layout(constant_id = 3) const uint CH = 32;   // rows per chunk (sizes the shared matrix)
#define GLA_TABLE_BINDING 6
#include "common/scan_gla.glsl"
#include "common/dtype.glsl"

layout(std430, binding = 0) readonly buffer Q { IN_T q[]; };
layout(std430, binding = 1) readonly buffer K { IN_T k[]; };
layout(std430, binding = 2) readonly buffer V { IN_T v[]; };
layout(std430, binding = 3) readonly buffer GC { float gcum[]; };
layout(std430, binding = 4) readonly buffer S { float states[]; };
layout(std430, binding = 5) writeonly buffer O { OUT_T o[]; };

shared float A[CH * CH];

float gc(uint b, uint t, uint h, uint i) { return GATE != 0u ? gcum[gate_index(b, t, h, i)] : 0.0; }

void main() {
    const uint wg = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
    const uint c = wg % pc.NC;
    const uint bh = wg / pc.NC;
    if (bh >= pc.B * pc.H) return;  // uniform
    const uint b = bh / pc.H, h = bh % pc.H;
    const uint rows = chunk_len(c);
    const uint t0 = chunk_t0(c);
    const uint lid = gl_LocalInvocationIndex;

    for (uint e = lid; e < rows * rows; e += gl_WorkGroupSize.x) {
        const uint t = e / rows, s = e % rows;
        float a = 0.0;
        if (s <= t) {
            const float headDecay = GATE == 1u ? exp(gc(b, t0 + t, h, 0u) - gc(b, t0 + s, h, 0u)) : 1.0;
            for (uint i = 0u; i < pc.Dk; ++i) {
                const float d = GATE == 2u ? exp(gc(b, t0 + t, h, i) - gc(b, t0 + s, h, i)) : 1.0;
                a += LOAD_IN(q[qk_index(b, t0 + t, h, i)]) * LOAD_IN(k[qk_index(b, t0 + s, h, i)]) * d;
            }
            a *= headDecay;
        }
        A[t * CH + s] = a;
    }
    barrier();
    for (uint e = lid; e < rows * pc.Dv; e += gl_WorkGroupSize.x) {
        const uint t = e / pc.Dv, j = e % pc.Dv;
        float acc = 0.0;
        for (uint i = 0u; i < pc.Dk; ++i) {
            const float d = GATE != 0u ? exp(gc(b, t0 + t, h, i)) : 1.0;
            acc += LOAD_IN(q[qk_index(b, t0 + t, h, i)]) * d * states[state_index(b, h, chunk_slot(c), i, j)];
        }
        for (uint s = 0u; s <= t; ++s) acc += A[t * CH + s] * LOAD_IN(v[vo_index(b, t0 + s, h, j)]);
        o[vo_index(b, t0 + t, h, j)] = STORE_OUT(acc);
    }
}
