#version 450
//! variant f32 -DIN_T=float
//! variant f16 -DIN_T=float16_t -DUSE_F16
//! variant bf16 -DIN_T=uint16_t -DIN_BF16 -DUSE_16BIT
// Mamba-1 selective scan, elementwise over [T, Dch]:
//   PASS 0: the steps dt = delta + bias, softplus'd with SOFTPLUS (into io), read by the
//           per-chunk kernels so that the softplus runs once per (row, channel), not per n.
//   PASS 1 (backward, SOFTPLUS): io holds dL/d(dt); multiplies it by softplus'(delta + bias).
//   PASS 2 (backward): the steps into io and dy = dOut silu(z) (dOut without z) into dyo, so
//           that the per-chunk kernels run no transcendental per state index for them.
#if defined(USE_F16) || defined(USE_16BIT)
#extension GL_EXT_shader_16bit_storage : require
#endif
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint PASS = 0;
#include "common/mamba_selective.glsl"
#include "common/dtype.glsl"

layout(std430, binding = 0) readonly buffer DT { IN_T delta[]; };  // [T, Dch]
layout(std430, binding = 1) readonly buffer BI { float bias[]; };   // [Dch]
layout(std430, binding = 2) buffer IO { float io[]; };              // [T, Dch]
layout(std430, binding = 3) readonly buffer DO { IN_T dout[]; };    // [T, Dch]
layout(std430, binding = 4) readonly buffer Z { IN_T z[]; };        // [T, Dch]
layout(std430, binding = 5) writeonly buffer DY { float dyo[]; };   // [T, Dch]

void main() {
    const uint id = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    if (id >= pc.T * pc.Dch) return;
    const float raw = LOAD_IN(delta[id]) + (has(HAS_BIAS) ? bias[id % pc.Dch] : 0.0);
    if (PASS == 1u) {
        io[id] *= dsoftplus_(raw);
        return;
    }
    io[id] = step_of(raw);
    if (PASS == 2u) dyo[id] = LOAD_IN(dout[id]) * (has(HAS_Z) ? silu_(LOAD_IN(z[id])) : 1.0);
}
