#version 450
//! variant f32 -DIN_T=float -DOUT_T=float
//! variant f16 -DIN_T=float16_t -DOUT_T=float16_t -DUSE_16BIT
//! variant f16o32 -DIN_T=float16_t -DOUT_T=float -DUSE_16BIT
//! variant bf16 -DIN_T=uint16_t -DOUT_T=uint16_t -DIN_BF16 -DOUT_BF16 -DUSE_16BIT
//! variant bf16o32 -DIN_T=uint16_t -DOUT_T=float -DIN_BF16 -DUSE_16BIT
// Mamba-2 SSD forward epilogue: y = o + D[h] x, one invocation per (t, h, p).
#ifdef USE_16BIT
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_shader_explicit_arithmetic_types_int16 : require
#endif
layout(local_size_x_id = 0) in;
#include "mamba_ssd/ssd_common.glsl"
#include "common/dtype.glsl"

layout(std430, binding = 0) readonly buffer O { float o[]; };
layout(std430, binding = 1) readonly buffer X { IN_T x[]; };
layout(std430, binding = 2) readonly buffer DD { float D[]; };
layout(std430, binding = 3) writeonly buffer Y { OUT_T y[]; };

void main() {
    const uint id = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    if (id >= pc.T * pc.H * pc.P) return;
    const uint h = (id / pc.P) % pc.H;
    y[id] = STORE_OUT(o[id] + ((pc.flags & 1u) != 0u ? D[h] * LOAD_IN(x[id]) : 0.0));
}
