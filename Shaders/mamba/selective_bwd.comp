#version 450
//! variant f32 -DIN_T=float
//! variant f16 -DIN_T=float16_t -DUSE_F16
//! variant bf16 -DIN_T=uint16_t -DIN_BF16 -DUSE_16BIT
// Mamba-1 selective scan backward, one workgroup per (chunk k, block of BLOCK channels);
// invocation (dl, n) takes channel cb * BLOCK + r * DP + dl in rounds r (DP = WGS / NL channels
// per round) and state index n. Per (d, n): replays the chunk forward from its start state
// (states plane 0) keeping h_t in registers, then walks it backward from the incoming adjoint
// (states plane 1): g_t = a_{t+1} g_{t+1} + C_t[n] dy_t, dy = dOut silu(z) (dOut without z), and
//   dA[d, n]   += g_t a_t h_{t-1} dt_t                     (per chunk: partials[k][d][n])
//   dx_t[d]     = sum_n g_t dt_t B_t[n] + D[d] dy_t         (shared-memory reduction over n)
//   ddt_t[d]    = sum_n g_t (A[d, n] a_t h_{t-1} + B_t[n] x_t[d]) (into ddelta; steps.comp
//                 then multiplies by softplus')
//   dB_t[n]    += g_t dt_t x_t[d],  dC_t[n] += dy_t h_t[d, n]  (over the block's channels,
//                 partials[cb][t][n]; reduce.comp sums the blocks)
//   dz_t[d]     = dOut_t y_t silu'(z_t) with y (before the gate) from the y workspace; with
//                 WRITE_DD the workspace then receives dy_t x_t[d] (dD's rows).
#if defined(USE_F16) || defined(USE_16BIT)
#extension GL_EXT_shader_16bit_storage : require
#endif
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint NL = 16;
layout(constant_id = 2) const uint CT = 16;
layout(constant_id = 4) const uint WGS = 64;
#include "common/mamba_selective.glsl"
#include "common/dtype.glsl"

const uint BLOCK = 64u;

layout(std430, binding = 0) readonly buffer X { IN_T x[]; };
layout(std430, binding = 1) readonly buffer DT { float dts[]; };     // the steps dt (steps.comp)
layout(std430, binding = 2) readonly buffer AM { float A[]; };
layout(std430, binding = 3) readonly buffer BM { IN_T Bm[]; };
layout(std430, binding = 4) readonly buffer CM { IN_T Cm[]; };
layout(std430, binding = 5) readonly buffer DV { float Dv[]; };
layout(std430, binding = 6) readonly buffer Z { IN_T z[]; };
layout(std430, binding = 7) readonly buffer DY { float dys[]; };     // dy = dOut silu(z) (steps.comp)
layout(std430, binding = 8) readonly buffer TB { uint table[]; };
layout(std430, binding = 9) readonly buffer ST { float states[]; };   // [2][nChunks][Dch][N]
layout(std430, binding = 10) readonly buffer DO { IN_T dout[]; };
layout(std430, binding = 11) buffer YW { float yws[]; };              // [T, Dch]
layout(std430, binding = 12) writeonly buffer DX { float dx[]; };
layout(std430, binding = 13) writeonly buffer DDT { float ddelta[]; };
layout(std430, binding = 14) writeonly buffer DZ { float dz[]; };
layout(std430, binding = 15) writeonly buffer PT { float partials[]; };

shared float sB[CT * WGS];
shared float sC[CT * WGS];
shared float sX[CT * WGS];
shared float sD[CT * WGS];

void main() {
    const uint w = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
    const uint k = w / pc.nGroups, cb = w % pc.nGroups;
    if (k >= pc.nChunks) return;  // uniform
    const uint DP = WGS / NL;
    const uint R = (BLOCK + DP - 1u) / DP;
    const uint tid = gl_LocalInvocationIndex;
    const uint dl = tid / NL, n = tid % NL;
    const uint start = table[4u * k], rows = table[4u * k + 1u];
    for (uint i = 0u; i < rows; ++i) { sB[i * WGS + tid] = 0.0; sC[i * WGS + tid] = 0.0; }
    float hs[CT], as_[CT];
    for (uint r = 0u; r < R; ++r) {
        const uint d = cb * BLOCK + r * DP + dl;
        const bool live = d < pc.Dch && n < pc.N && r * DP + dl < BLOCK;
        if (live) {
            const uint slot = (k * pc.Dch + d) * pc.N + n;
            const float An = A[d * pc.N + n];
            const float h0 = states[slot];
            float h = h0;
            for (uint i = 0u; i < rows; ++i) {
                const uint e = (start + i) * pc.Dch + d;
                const float dt = dts[e];
                const float a = exp(dt * An);
                h = a * h + dt * LOAD_IN(Bm[(start + i) * pc.N + n]) * LOAD_IN(x[e]);
                hs[i] = h;
                as_[i] = a;
            }
            float gn = states[pc.plane + slot];
            float dA = 0.0;
            for (uint j = 0u; j < rows; ++j) {
                const uint i = rows - 1u - j;
                const uint e = (start + i) * pc.Dch + d;
                const float dt = dts[e];
                const float a = as_[i];
                const float dy = dys[e];
                const float b = LOAD_IN(Bm[(start + i) * pc.N + n]), c = LOAD_IN(Cm[(start + i) * pc.N + n]);
                const float xv = LOAD_IN(x[e]);
                const float g = gn + c * dy;
                const float hp = i > 0u ? hs[i - 1u] : h0;
                dA += g * a * hp * dt;
                sX[i * WGS + tid] = g * dt * b;
                sD[i * WGS + tid] = g * (An * a * hp + b * xv);
                sB[i * WGS + tid] += g * dt * xv;
                sC[i * WGS + tid] += dy * hs[i];
                gn = a * g;
            }
            partials[slot] = dA;
        } else {
            for (uint i = 0u; i < rows; ++i) { sX[i * WGS + tid] = 0.0; sD[i * WGS + tid] = 0.0; }
        }
        barrier();
        for (uint item = tid; item < rows * DP; item += WGS) {
            const uint i = item / DP, j = item % DP;
            const uint dd = cb * BLOCK + r * DP + j;
            if (dd >= pc.Dch || r * DP + j >= BLOCK) continue;
            float sx = 0.0, sd = 0.0;
            for (uint l = 0u; l < NL; ++l) { sx += sX[i * WGS + j * NL + l]; sd += sD[i * WGS + j * NL + l]; }
            const uint e = (start + i) * pc.Dch + dd;
            const float dy = dys[e];
            dx[e] = sx + (has(HAS_D) ? Dv[dd] * dy : 0.0);
            ddelta[e] = sd;  // dL/d(dt): steps.comp PASS 1 applies softplus'
            if (has(WRITE_DZ)) dz[e] = LOAD_IN(dout[e]) * yws[e] * dsilu_(LOAD_IN(z[e]));
            if (has(WRITE_DD)) yws[e] = dy * LOAD_IN(x[e]);
        }
        barrier();
    }
    for (uint item = tid; item < rows * NL; item += WGS) {
        const uint i = item / NL, l = item % NL;
        if (l >= pc.N) continue;
        float b = 0.0, c = 0.0;
        for (uint j = 0u; j < DP; ++j) { b += sB[i * WGS + j * NL + l]; c += sC[i * WGS + j * NL + l]; }
        const uint at = (cb * pc.T + start + i) * pc.N + l;
        partials[pc.partB + at] = b;
        partials[pc.partC + at] = c;
    }
}
