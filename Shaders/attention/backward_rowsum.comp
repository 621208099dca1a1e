#version 450
//! variant f32 -DDO_T=float -DO_T=float
//! variant f16 -DDO_T=float16_t -DO_T=float16_t -DUSE_F16
//! variant f16o32 -DDO_T=float16_t -DO_T=float -DUSE_F16
//! variant bf16 -DDO_T=uint16_t -DO_T=uint16_t -DDO_BF16 -DO_BF16 -DUSE_16BIT
//! variant bf16o32 -DDO_T=uint16_t -DO_T=float -DDO_BF16 -DUSE_16BIT
// Backward pre-pass: Delta_i = sum_d dO[i, d] * O[i, d] for every (token, query head), written
// in the LSE layout (dense [B, Hq, Sq], packed [Hq, totalQ]). TPR lanes share a row.
#extension GL_KHR_shader_subgroup_shuffle : require
#ifdef USE_F16
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#endif
#if defined(USE_F16) || defined(USE_16BIT)
#extension GL_EXT_shader_16bit_storage : require
#endif

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint D = 64;   // the row width of dO and O (Dv)
layout(constant_id = 4) const uint TPR = 8;
layout(constant_id = 5) const bool VARLEN = false;
layout(constant_id = 8) const bool SOFTCAP = false;  // unused here

layout(std430, binding = 0) readonly buffer DOBuf { DO_T do_buf[]; };
layout(std430, binding = 1) readonly buffer OBuf { O_T o_buf[]; };
layout(std430, binding = 2) writeonly buffer DeltaBuf { float delta_buf[]; };
layout(std430, binding = 3) readonly buffer CuQ { int cu_q[]; };
layout(std430, binding = 4) readonly buffer CuK { int cu_k[]; };

#include "attention/params.glsl"
#include "common/dtype.glsl"

void main() {
    const uint lane = gl_LocalInvocationID.x % TPR;
    const uint rows_per_group = gl_WorkGroupSize.x / TPR;
    const uint row = (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * rows_per_group
        + gl_LocalInvocationID.x / TPR;
    const uint rows = pc.total_q * pc.heads_q;
    float acc = 0.0;
    if (row < rows) {
        for (uint d = lane; d < D; d += TPR) acc += LOAD_DO(do_buf[row * D + d]) * LOAD_O(o_buf[row * D + d]);
    }
    for (uint o = TPR >> 1; o > 0u; o >>= 1) acc += subgroupShuffleXor(acc, o);
    if (row < rows && lane == 0u) {
        const uint token = row / pc.heads_q, h = row % pc.heads_q;
        // Dense tokens are b * Sq + i; packed tokens index [Hq, totalQ] directly.
        delta_buf[VARLEN ? h * pc.total_q + token : ((token / pc.seq_q) * pc.heads_q + h) * pc.seq_q + token % pc.seq_q] = acc;
    }
}
