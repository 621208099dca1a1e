#version 450
//! variant f32 -DIN_T=float -DOUT_T=float
//! variant f16 -DIN_T=float16_t -DOUT_T=float16_t -DUSE_F16
//! variant f16o32 -DIN_T=float16_t -DOUT_T=float -DUSE_F16
//! variant bf16 -DIN_T=uint16_t -DOUT_T=uint16_t -DIN_BF16 -DOUT_BF16 -DUSE_16BIT
//! variant bf16o32 -DIN_T=uint16_t -DOUT_T=float -DIN_BF16 -DUSE_16BIT
// Mamba-1 selective scan, per-chunk passes. One workgroup per (chunk k, group of DP channels);
// invocation (dl, n): channel d = group * DP + dl, state index n (NL lanes, NL >= N, a power of
// two; lanes n >= N idle). Per (d, n) the recurrence is
//   h_t = a_t h_{t-1} + u_t,  a_t = exp(dt_t A[d, n]),  u_t = dt_t B_t[n] x_t[d].
//   PASS 1: the chunk's affine map: P = prod a_t, U = the end state from 0 (maps planes 0, 1).
//   PASS 2 (backward): the adjoint's map over the chunk in reverse time, from 0:
//           q = a_first g_first with g_t = a_{t+1} g_{t+1} + C_t[n] dy_t (maps plane 2).
//   PASS 3: replays the chunk from its start state (states plane 0) and reduces over n in
//           shared memory: y_t[d] = sum_n C_t[n] h_t[d, n] + D[d] x_t[d], out = y silu(z) (or y
//           itself into the y workspace with WRITE_Y).
#if defined(USE_F16) || defined(USE_16BIT)
#extension GL_EXT_shader_16bit_storage : require
#endif
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint NL = 16;   // lanes over n
layout(constant_id = 2) const uint CT = 64;   // rows per chunk at most
layout(constant_id = 3) const uint PASS = 1;
layout(constant_id = 4) const uint WGS = 64;  // the local size
#include "common/mamba_selective.glsl"
#include "common/dtype.glsl"

layout(std430, binding = 0) readonly buffer X { IN_T x[]; };        // [T, Dch]
layout(std430, binding = 1) readonly buffer DT { float dts[]; };     // [T, Dch]: the steps dt (steps.comp)
layout(std430, binding = 2) readonly buffer AM { float A[]; };       // [Dch, N]
layout(std430, binding = 3) readonly buffer BM { IN_T Bm[]; };      // [T, N]
layout(std430, binding = 4) readonly buffer CM { IN_T Cm[]; };      // [T, N]
layout(std430, binding = 5) readonly buffer DV { float Dv[]; };      // [Dch]
layout(std430, binding = 6) readonly buffer Z { IN_T z[]; };        // [T, Dch]
layout(std430, binding = 8) readonly buffer TB { uint table[]; };
layout(std430, binding = 9) buffer MP { float maps[]; };             // [3][nChunks][Dch][N]
layout(std430, binding = 10) readonly buffer ST { float states[]; }; // [2][nChunks][Dch][N]
layout(std430, binding = 11) readonly buffer DY { float dys[]; };   // [T, Dch]: dy = dOut silu(z) (steps.comp)
layout(std430, binding = 12) writeonly buffer O { OUT_T outv[]; };   // [T, Dch]

shared float red[CT * WGS];

void main() {
    const uint w = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
    const uint k = w / pc.nGroups, grp = w % pc.nGroups;
    if (k >= pc.nChunks) return;  // uniform
    const uint DP = WGS / NL;
    const uint tid = gl_LocalInvocationIndex;
    const uint dl = tid / NL, n = tid % NL;
    const uint d = grp * DP + dl;
    const bool live = d < pc.Dch && n < pc.N;
    const uint start = table[4u * k], rows = table[4u * k + 1u];
    const uint slot = (k * pc.Dch + d) * pc.N + n;
    const float An = live ? A[d * pc.N + n] : 0.0;

    if (PASS == 1u) {
        if (!live) return;
        float P = 1.0, U = 0.0;
        for (uint i = 0u; i < rows; ++i) {
            const uint e = (start + i) * pc.Dch + d;
            const float dt = dts[e];
            const float a = exp(dt * An);
            P *= a;
            U = a * U + dt * LOAD_IN(Bm[(start + i) * pc.N + n]) * LOAD_IN(x[e]);
        }
        maps[slot] = P;
        maps[pc.plane + slot] = U;
        return;
    }
    if (PASS == 2u) {
        if (!live) return;
        float q = 0.0;
        for (uint j = 0u; j < rows; ++j) {
            const uint i = rows - 1u - j;
            const uint e = (start + i) * pc.Dch + d;
            const float dt = dts[e];
            const float a = exp(dt * An);
            const float dy = dys[e];
            q = a * (q + LOAD_IN(Cm[(start + i) * pc.N + n]) * dy);
        }
        maps[2u * pc.plane + slot] = q;
        return;
    }
    // PASS 3
    float h = live ? states[slot] : 0.0;
    for (uint i = 0u; i < rows; ++i) {
        float c = 0.0;
        if (live) {
            const uint e = (start + i) * pc.Dch + d;
            const float dt = dts[e];
            h = exp(dt * An) * h + dt * LOAD_IN(Bm[(start + i) * pc.N + n]) * LOAD_IN(x[e]);
            c = LOAD_IN(Cm[(start + i) * pc.N + n]) * h;
        }
        red[i * WGS + tid] = c;
    }
    barrier();
    for (uint item = tid; item < rows * DP; item += WGS) {
        const uint i = item / DP, j = item % DP;
        const uint dd = grp * DP + j;
        if (dd >= pc.Dch) continue;
        float y = 0.0;
        for (uint l = 0u; l < NL; ++l) y += red[i * WGS + j * NL + l];
        const uint e = (start + i) * pc.Dch + dd;
        if (has(HAS_D)) y += Dv[dd] * LOAD_IN(x[e]);
        if (!has(WRITE_Y) && has(HAS_Z)) y *= silu_(LOAD_IN(z[e]));
        outv[e] = STORE_OUT(y);
    }
}
