#version 450
//! variant f32 -DIN_T=float -DOUT_T=float
//! variant f16 -DIN_T=float16_t -DOUT_T=float16_t -DUSE_F16
//! variant f16o32 -DIN_T=float16_t -DOUT_T=float -DUSE_F16
//! variant bf16 -DIN_T=uint16_t -DOUT_T=uint16_t -DIN_BF16 -DOUT_BF16 -DUSE_16BIT
//! variant bf16o32 -DIN_T=uint16_t -DOUT_T=float -DIN_BF16 -DUSE_16BIT
// Gated linear attention backward for one chunk (one workgroup per (b, h, chunk)), from the
// state before the chunk S (forward boundary states) and the gradient of the state after it
// G (backward pass of the state scan). With A[t][s] the forward's masked intra-chunk product,
// dA[t][s] = dO_t . v_s (s <= t), and e(t, s)[i] = exp(gcum_t[i] - gcum_s[i]):
//   dq_t[i] = exp(gcum_t[i]) (dO_t S^T)[i] + sum_{s <= t} dA[t][s] k_s[i] e(t, s)[i]
//   dk_t[i] = exp(gcum_last[i] - gcum_t[i]) (G v_t)[i] + sum_{u >= t} dA[u][t] q_u[i] e(u, t)[i]
//   dv_t[j] = sum_i k_t[i] exp(gcum_last[i] - gcum_t[i]) G[i][j] + sum_{u >= t} A[u][t] dO_u[j]
// and, for the gates, the chunk-local reverse cumulative sum of z_t = q_t * dq_t - k_t * dk_t
// (into rloc) with its chunk total (into totals): dlog g_t = sum_{u >= t} z_u plus the
// final-state term, completed by gla_gate.comp.
#if defined(USE_F16) || defined(USE_16BIT)
#extension GL_EXT_shader_16bit_storage : require
#endif
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint GATE = 2;
layout(constant_id = 3) const uint CH = 32;
#define GLA_TABLE_BINDING 12
#include "common/scan_gla.glsl"
#include "common/dtype.glsl"

layout(std430, binding = 0) readonly buffer Q { IN_T q[]; };
layout(std430, binding = 1) readonly buffer K { IN_T k[]; };
layout(std430, binding = 2) readonly buffer V { IN_T v[]; };
layout(std430, binding = 3) readonly buffer GC { float gcum[]; };
layout(std430, binding = 4) readonly buffer S { float states[]; };     // forward boundary states
layout(std430, binding = 5) readonly buffer G { float dstates[]; };    // gradients of the states after each chunk
layout(std430, binding = 6) readonly buffer DO { IN_T dO[]; };
layout(std430, binding = 7) writeonly buffer DQ { OUT_T dq[]; };
layout(std430, binding = 8) writeonly buffer DK { OUT_T dk[]; };
layout(std430, binding = 9) writeonly buffer DV { OUT_T dv[]; };
layout(std430, binding = 10) writeonly buffer R { float rloc[]; };     // [B, L, H, Dk]
layout(std430, binding = 11) writeonly buffer T { float totals[]; };   // [B, H, NC, Dk]

shared float A[CH * CH];
shared float dA[CH * CH];

float gc(uint b, uint t, uint h, uint i) { return GATE != 0u ? gcum[gate_index(b, t, h, i)] : 0.0; }
float decay(uint b, uint t, uint s, uint h, uint i) { return GATE != 0u ? exp(gc(b, t, h, i) - gc(b, s, h, i)) : 1.0; }

void main() {
    const uint wg = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
    const uint c = wg % pc.NC;
    const uint bh = wg / pc.NC;
    if (bh >= pc.B * pc.H) return;  // uniform
    const uint b = bh / pc.H, h = bh % pc.H;
    const uint rows = chunk_len(c);
    const uint t0 = chunk_t0(c);
    const uint last = t0 + rows - 1u;
    const uint lid = gl_LocalInvocationIndex;

    for (uint e = lid; e < rows * rows; e += gl_WorkGroupSize.x) {
        const uint t = e / rows, s = e % rows;
        float a = 0.0, da = 0.0;
        if (s <= t) {
            for (uint i = 0u; i < pc.Dk; ++i) {
                a += LOAD_IN(q[qk_index(b, t0 + t, h, i)]) * LOAD_IN(k[qk_index(b, t0 + s, h, i)]) * (GATE == 2u ? decay(b, t0 + t, t0 + s, h, i) : 1.0);
            }
            if (GATE == 1u) a *= decay(b, t0 + t, t0 + s, h, 0u);
            for (uint j = 0u; j < pc.Dv; ++j) da += LOAD_IN(dO[vo_index(b, t0 + t, h, j)]) * LOAD_IN(v[vo_index(b, t0 + s, h, j)]);
        }
        A[t * CH + s] = a;
        dA[t * CH + s] = da;
    }
    barrier();
    for (uint col = lid; col < pc.Dk + pc.Dv; col += gl_WorkGroupSize.x) {
        if (col < pc.Dk) {
            const uint i = col;
            const float gLast = gc(b, last, h, i);
            float run = 0.0;
            for (uint rr = 0u; rr < rows; ++rr) {
                const uint t = rows - 1u - rr;
                const uint tg = t0 + t;
                const float gt = gc(b, tg, h, i);
                float sq = 0.0, gv = 0.0;
                for (uint j = 0u; j < pc.Dv; ++j) {
                    sq += LOAD_IN(dO[vo_index(b, tg, h, j)]) * states[state_index(b, h, chunk_slot(c), i, j)];
                    gv += dstates[state_index(b, h, chunk_slot(c), i, j)] * LOAD_IN(v[vo_index(b, tg, h, j)]);
                }
                float dqv = (GATE != 0u ? exp(gt) : 1.0) * sq;
                float dkv = (GATE != 0u ? exp(gLast - gt) : 1.0) * gv;
                for (uint s = 0u; s <= t; ++s) dqv += dA[t * CH + s] * LOAD_IN(k[qk_index(b, t0 + s, h, i)]) * decay(b, tg, t0 + s, h, i);
                for (uint u = t; u < rows; ++u) dkv += dA[u * CH + t] * LOAD_IN(q[qk_index(b, t0 + u, h, i)]) * decay(b, t0 + u, tg, h, i);
                dq[qk_index(b, tg, h, i)] = STORE_OUT(dqv);
                dk[qk_index(b, tg, h, i)] = STORE_OUT(dkv);
                if (GATE != 0u) {
                    run += LOAD_IN(q[qk_index(b, tg, h, i)]) * dqv - LOAD_IN(k[qk_index(b, tg, h, i)]) * dkv;
                    rloc[qk_index(b, tg, h, i)] = run;
                }
            }
            if (GATE != 0u) totals[(bh * pc.NC + c) * pc.Dk + i] = run;
        } else {
            const uint j = col - pc.Dk;
            for (uint t = 0u; t < rows; ++t) {
                const uint tg = t0 + t;
                float acc = 0.0;
                for (uint i = 0u; i < pc.Dk; ++i) {
                    acc += LOAD_IN(k[qk_index(b, tg, h, i)]) * (GATE != 0u ? exp(gc(b, last, h, i) - gc(b, tg, h, i)) : 1.0)
                         * dstates[state_index(b, h, chunk_slot(c), i, j)];
                }
                for (uint u = t; u < rows; ++u) acc += A[u * CH + t] * LOAD_IN(dO[vo_index(b, t0 + u, h, j)]);
                dv[vo_index(b, tg, h, j)] = STORE_OUT(acc);
            }
        }
    }
}
