#version 450
//! variant f32 -DIN_T=float
//! variant f16 -DIN_T=float16_t -DUSE_16BIT
//! variant bf16 -DIN_T=uint16_t -DIN_BF16 -DUSE_16BIT
// Mamba-2 SSD as GLA, the inputs: one invocation per (t, h, n):
//   q[t][h][n] = C[t][g][n],  k[t][h][n] = dt_eff[t][h] * B[t][g][n],  and for n = 0
//   gate[t][h] = dt_eff[t][h] * A[h] (the per-head log-gate).
#ifdef USE_16BIT
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_shader_explicit_arithmetic_types_int16 : require
#endif
layout(local_size_x_id = 0) in;
#include "mamba_ssd/ssd_common.glsl"
#include "common/dtype.glsl"
#ifdef IN_BF16
#define STORE_IN(x) uint16_t(float_to_bf16(x))
#else
#define STORE_IN(x) IN_T(x)
#endif

layout(std430, binding = 0) readonly buffer DT { float dt[]; };
layout(std430, binding = 1) readonly buffer Bias { float bias[]; };
layout(std430, binding = 2) readonly buffer AA { float A[]; };
layout(std430, binding = 3) readonly buffer BB { IN_T Bm[]; };
layout(std430, binding = 4) readonly buffer CC { IN_T Cm[]; };
layout(std430, binding = 5) writeonly buffer Q { IN_T q[]; };
layout(std430, binding = 6) writeonly buffer K { IN_T k[]; };
layout(std430, binding = 7) writeonly buffer GT { float gate[]; };

void main() {
    const uint id = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    const uint n = id % pc.N;
    const uint th = id / pc.N;
    if (th >= pc.T * pc.H) return;
    const uint h = th % pc.H, t = th / pc.H;
    float d = dt[th] + ((pc.flags & 4u) != 0u ? bias[h] : 0.0);
    if ((pc.flags & 2u) != 0u) d = softplus(d);
    const uint src = (t * pc.G + group_of(h)) * pc.N + n;
    q[id] = Cm[src];
    k[id] = STORE_IN(d * LOAD_IN(Bm[src]));
    if (n == 0u) gate[th] = d * A[h];
}
