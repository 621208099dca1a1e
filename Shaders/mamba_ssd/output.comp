#version 450
//! variant f32 -DIN_T=float -DOUT_T=float
//! variant f16 -DIN_T=float16_t -DOUT_T=float16_t -DUSE_16BIT
//! variant f16o32 -DIN_T=float16_t -DOUT_T=float -DUSE_16BIT
//! variant bf16 -DIN_T=uint16_t -DOUT_T=uint16_t -DIN_BF16 -DOUT_BF16 -DUSE_16BIT
//! variant bf16o32 -DIN_T=uint16_t -DOUT_T=float -DIN_BF16 -DUSE_16BIT
// Mamba-2 SSD epilogues around GLA's o (f32), one invocation per (t, h, p), with
// y_pre = o + D[h] x (D when flag 1) and the gate silu(z) = z sigmoid(z) (when flag 16):
//   MODE 0 (forward): y = y_pre silu(z).
//   MODE 1 (backward, with z): dz = dy y_pre silu'(z), and GLA's output gradient
//     dy_eff = dy silu(z) (x's type).
#ifdef USE_16BIT
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_shader_explicit_arithmetic_types_int16 : require
#endif
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint MODE = 0;
#include "mamba_ssd/ssd_common.glsl"
#include "common/dtype.glsl"
#ifdef IN_BF16
#define STORE_IN(x) uint16_t(float_to_bf16(x))
#else
#define STORE_IN(x) IN_T(x)
#endif

layout(std430, binding = 0) readonly buffer O { float o[]; };
layout(std430, binding = 1) readonly buffer X { IN_T x[]; };
layout(std430, binding = 2) readonly buffer DD { float D[]; };
layout(std430, binding = 3) writeonly buffer Y { OUT_T y[]; };       // MODE 1: dz
layout(std430, binding = 4) readonly buffer Z { IN_T z[]; };
layout(std430, binding = 5) readonly buffer DY { IN_T dy[]; };
layout(std430, binding = 6) writeonly buffer DYE { IN_T dyEff[]; };

void main() {
    const uint id = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    if (id >= pc.T * pc.H * pc.P) return;
    const uint h = (id / pc.P) % pc.H;
    const float pre = o[id] + ((pc.flags & 1u) != 0u ? D[h] * LOAD_IN(x[id]) : 0.0);
    const bool gated = (pc.flags & 16u) != 0u;
    const float zv = gated ? LOAD_IN(z[id]) : 0.0;
    const float sg = sigmoid(zv);
    if (MODE == 0u) {
        y[id] = STORE_OUT(gated ? pre * zv * sg : pre);
        return;
    }
    const float g = LOAD_IN(dy[id]);
    y[id] = STORE_OUT(g * pre * sg * (1.0 + zv * (1.0 - sg)));
    dyEff[id] = STORE_IN(g * zv * sg);
}
