#version 450
//! variant f32 -DOUT_T=float
//! variant f16 -DOUT_T=float16_t -DUSE_F16
//! variant bf16 -DOUT_T=uint16_t -DOUT_BF16 -DUSE_16BIT
// Merges `splits` partial attention results over disjoint key sets of the same queries:
// LSE = log(sum_s exp(LSE_s)), O = sum_s exp(LSE_s - LSE) * O_s. Partials are fp32, stacked
// split-major: O_s at s * rows * D, LSE_s at s * rows (rows = total_q * heads_q, LSE layout as
// the forward's). Rows whose every partial is -inf (no key seen) get O = 0, LSE = -inf. With
// SINKS, head h's sink logit joins as one more partial whose O is zero.
// TPR lanes share a row; each owns dims lane, lane + TPR, ...
#extension GL_KHR_shader_subgroup_basic : require
#ifdef USE_F16
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#endif
#if defined(USE_F16) || defined(USE_16BIT)
#extension GL_EXT_shader_16bit_storage : require
#endif

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint D = 64;
layout(constant_id = 4) const uint TPR = 8;
layout(constant_id = 5) const bool VARLEN = false;
layout(constant_id = 8) const bool SOFTCAP = false;  // unused here

layout(std430, binding = 0) readonly buffer PartO { float part_o[]; };
layout(std430, binding = 1) readonly buffer PartLse { float part_lse[]; };
layout(std430, binding = 2) writeonly buffer OBuf { OUT_T o_buf[]; };
layout(std430, binding = 3) writeonly buffer LseBuf { float lse_buf[]; };
layout(std430, binding = 4) readonly buffer CuQ { int cu_q[]; };
layout(std430, binding = 5) readonly buffer CuK { int cu_k[]; };
#define SINKS_BINDING 6

#include "attention/params.glsl"
#include "common/dtype.glsl"

void main() {
    const uint lane = gl_LocalInvocationID.x % TPR;
    const uint rows_per_group = gl_WorkGroupSize.x / TPR;
    const uint row = (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * rows_per_group
        + gl_LocalInvocationID.x / TPR;
    const uint rows = pc.total_q * pc.heads_q;
    if (row >= rows) return;
    const uint token = row / pc.heads_q, h = row % pc.heads_q;
    const uint li = VARLEN ? h * pc.total_q + token : ((token / pc.seq_q) * pc.heads_q + h) * pc.seq_q + token % pc.seq_q;

    float m = SINKS ? sink_logits[h] : NEG_INF;
    for (uint s = 0u; s < pc.splits; ++s) m = max(m, part_lse[s * rows + li]);
    if (m == NEG_INF) {
        for (uint d = lane; d < D; d += TPR) o_buf[row * D + d] = STORE_OUT(0.0);
        if (lane == 0u) lse_buf[li] = NEG_INF;
        return;
    }
    float total = SINKS ? exp(sink_logits[h] - m) : 0.0;
    for (uint s = 0u; s < pc.splits; ++s) total += exp(part_lse[s * rows + li] - m);
    const float lse = m + log(total);
    for (uint d = lane; d < D; d += TPR) {
        float acc = 0.0;
        for (uint s = 0u; s < pc.splits; ++s) {
            const float l = part_lse[s * rows + li];
            if (l != NEG_INF) acc += exp(l - lse) * part_o[(s * rows + row) * D + d];
        }
        o_buf[row * D + d] = STORE_OUT(acc);
    }
    if (lane == 0u) lse_buf[li] = lse;
}
