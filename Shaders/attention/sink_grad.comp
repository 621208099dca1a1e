#version 450
// Gradient of the attention sinks: with head h's sink logit s_h in every row's softmax
// denominator, dL/ds_h = -sum over the head's rows i of exp(s_h - LSE_i) * Delta_i, where LSE
// includes the sink and Delta_i = rowsum(dO * O) (attention/backward_rowsum.comp). One
// workgroup per query head; its invocations stride over the head's rows and add up in a fixed
// order (the same result every run).
#extension GL_KHR_shader_subgroup_basic : require

layout(local_size_x_id = 0) in;
layout(constant_id = 5) const bool VARLEN = false;
layout(constant_id = 8) const bool SOFTCAP = false;  // unused here

layout(std430, binding = 0) readonly buffer LseBuf { float lse_buf[]; };
layout(std430, binding = 1) readonly buffer DeltaBuf { float delta_buf[]; };
layout(std430, binding = 2) writeonly buffer DSinks { float dsinks[]; };
layout(std430, binding = 3) readonly buffer CuQ { int cu_q[]; };
layout(std430, binding = 4) readonly buffer CuK { int cu_k[]; };
#define SINKS_BINDING 5

#include "attention/params.glsl"

shared float partial[gl_WorkGroupSize.x];

void main() {
    const uint h = gl_WorkGroupID.x;
    const uint lane = gl_LocalInvocationID.x;
    const float sink = sink_logits[h];
    float acc = 0.0;
    for (uint t = lane; t < pc.total_q; t += gl_WorkGroupSize.x) {
        // Token t of the packed [Hq, totalQ] layout, or (b, i) = (t / Sq, t % Sq) of [B, Hq, Sq].
        const uint at = VARLEN ? h * pc.total_q + t : ((t / pc.seq_q) * pc.heads_q + h) * pc.seq_q + t % pc.seq_q;
        acc += exp(sink - lse_buf[at]) * delta_buf[at];
    }
    partial[lane] = acc;
    barrier();
    for (uint width = gl_WorkGroupSize.x / 2u; width > 0u; width /= 2u) {
        if (lane < width) partial[lane] += partial[lane + width];
        barrier();
    }
    if (lane == 0u) dsinks[h] = -partial[0];
}
