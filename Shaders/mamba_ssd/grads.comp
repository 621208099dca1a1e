#version 450
//! variant f32 -DIN_T=float -DOUT_T=float
//! variant f16 -DIN_T=float16_t -DOUT_T=float16_t -DUSE_16BIT
//! variant f16o32 -DIN_T=float16_t -DOUT_T=float -DUSE_16BIT
//! variant bf16 -DIN_T=uint16_t -DOUT_T=uint16_t -DIN_BF16 -DOUT_BF16 -DUSE_16BIT
//! variant bf16o32 -DIN_T=uint16_t -DOUT_T=float -DIN_BF16 -DUSE_16BIT
// Mamba-2 SSD backward epilogue, from GLA's dq, dk, dv (f32) and d(log-gate):
//   MODE 0, one invocation per (t, h): dx = dv + D dy; d(dt_eff) = sum_n dk[n] B[n] + dlg A;
//     ddt = d(dt_eff) (times sigmoid(dt + bias) under softplus); and the per-token terms of the
//     head reductions, rows[t][h] = (dlg dt_eff, sum_p dy x, ddt) for dA, dD and the dt bias
//     (summed by reduce.comp: no float atomics).
//   MODE 1, one invocation per (t, g, n): dB = sum over the group's heads of dk dt_eff,
//     dC = sum of dq.
// Loops: P + N (MODE 0) or H / G (MODE 1) iterations per invocation.
#ifdef USE_16BIT
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_shader_explicit_arithmetic_types_int16 : require
#endif
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint MODE = 0;
#include "mamba_ssd/ssd_common.glsl"
#include "common/dtype.glsl"

layout(std430, binding = 0) readonly buffer DT { float dt[]; };
layout(std430, binding = 1) readonly buffer Bias { float bias[]; };
layout(std430, binding = 2) readonly buffer AA { float A[]; };
layout(std430, binding = 3) readonly buffer DD { float D[]; };
layout(std430, binding = 4) readonly buffer X { IN_T x[]; };
layout(std430, binding = 5) readonly buffer BB { IN_T Bm[]; };
layout(std430, binding = 6) readonly buffer DY { IN_T dy[]; };
layout(std430, binding = 7) readonly buffer DQ { float dq[]; };
layout(std430, binding = 8) readonly buffer DK { float dk[]; };
layout(std430, binding = 9) readonly buffer DV { float dv[]; };
layout(std430, binding = 10) readonly buffer DLG { float dlg[]; };
layout(std430, binding = 11) writeonly buffer DX { OUT_T dx[]; };
layout(std430, binding = 12) writeonly buffer DDT { float ddt[]; };
layout(std430, binding = 13) writeonly buffer Rows { float rows[]; };
layout(std430, binding = 14) writeonly buffer DB { OUT_T dB[]; };
layout(std430, binding = 15) writeonly buffer DC { OUT_T dC[]; };

float dt_raw(uint th, uint h) { return dt[th] + ((pc.flags & 4u) != 0u ? bias[h] : 0.0); }
float dt_eff(uint th, uint h) {
    const float r = dt_raw(th, h);
    return (pc.flags & 2u) != 0u ? softplus(r) : r;
}

void main() {
    const uint id = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    if (MODE == 0u) {
        if (id >= pc.T * pc.H) return;
        const uint h = id % pc.H, t = id / pc.H;
        const float d = dt_eff(id, h);
        const bool hasD = (pc.flags & 1u) != 0u;
        float dD = 0.0;
        for (uint p = 0u; p < pc.P; ++p) {
            const uint at = id * pc.P + p;
            const float g = LOAD_IN(dy[at]);
            dx[at] = STORE_OUT(dv[at] + (hasD ? D[h] * g : 0.0));
            dD += g * LOAD_IN(x[at]);
        }
        float dd = dlg[id] * A[h];
        const uint src = (t * pc.G + group_of(h)) * pc.N;
        for (uint n = 0u; n < pc.N; ++n) dd += dk[id * pc.N + n] * LOAD_IN(Bm[src + n]);
        const float draw = (pc.flags & 2u) != 0u ? dd * sigmoid(dt_raw(id, h)) : dd;
        ddt[id] = draw;
        rows[id * 3u] = dlg[id] * d;
        rows[id * 3u + 1u] = dD;
        rows[id * 3u + 2u] = draw;
        return;
    }
    const uint n = id % pc.N;
    const uint tg = id / pc.N;
    if (tg >= pc.T * pc.G) return;
    const uint g = tg % pc.G, t = tg / pc.G;
    const uint per = pc.H / pc.G;
    float sb = 0.0, sc = 0.0;
    for (uint j = 0u; j < per; ++j) {
        const uint h = g * per + j;
        const uint th = t * pc.H + h;
        sb += dk[th * pc.N + n] * dt_eff(th, h);
        sc += dq[th * pc.N + n];
    }
    dB[id] = STORE_OUT(sb);
    dC[id] = STORE_OUT(sc);
}
