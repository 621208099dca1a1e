#version 450
//! variant f32 -DOUT_T=float
//! variant f16 -DOUT_T=float16_t -DUSE_F16
//! variant bf16 -DOUT_T=uint16_t -DOUT_BF16 -DUSE_16BIT
// out[i] = sum over s < splits of part[s * count + i], in split order (deterministic): the
// gradients of a backward whose key or query range was split into fp32 partials.
#ifdef USE_F16
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#endif
#if defined(USE_F16) || defined(USE_16BIT)
#extension GL_EXT_shader_16bit_storage : require
#endif
#include "common/grid.glsl"
#include "common/dtype.glsl"

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer Parts { float part[]; };
layout(std430, binding = 1) writeonly buffer Out { OUT_T out_buf[]; };

layout(push_constant) uniform Push {
    uint count;
    uint splits;
} pc;

void main() {
    for (uint i = gl_GlobalInvocationID.x; i < pc.count; i += GRID_STRIDE) {
        float sum = 0.0;
        for (uint s = 0u; s < pc.splits; ++s) sum += part[s * pc.count + i];
        out_buf[i] = STORE_OUT(sum);
    }
}
