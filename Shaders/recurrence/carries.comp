#version 450
//! variant real -DREAL
//! variant complex -DCOMPLEX
//
// Middle pass of the chunked linear recurrence: for each channel, walks its chunks' affine maps
// (A, B) in processing order from the initial state, writing each chunk's start state, then
// the final state. Backward: the initial state is dL/d(final state), and the output is
// dL/dh0 = conj(a of the forward's first step) * (the state after the last chunk).
// Channel c = b * D + d; maps and starts are [nc][C * CW] (planes A then B for maps).
#include "common/scan_recurrence.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 3) const bool BACKWARD = false;

layout(std430, binding = 0) readonly buffer Maps { float maps[]; };
layout(std430, binding = 1) writeonly buffer Starts { float starts[]; };
layout(std430, binding = 2) readonly buffer Init { float init[]; };   // [C * CW]
layout(std430, binding = 3) writeonly buffer Final { float final_[]; };  // [C * CW]
layout(std430, binding = 4) readonly buffer A { float a[]; };         // BACKWARD: the coefficients

layout(push_constant) uniform Push {
    uint C;
    uint nc;
    uint hasInit;
    uint hasFinal;
    uint L;
    uint D;
    uint layoutBDL;  // 1: [B, D, L], 0: [B, L, D]
    uint tFirst;     // BACKWARD: time of the forward's first step
} pc;

vec2 pair(uint i) { return vec2(maps[i], CW == 2u ? maps[i + 1u] : 0.0); }

void main() {
    const uint c = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    if (c >= pc.C) return;
    vec2 carry = C_ZERO;
    if (pc.hasInit != 0u) carry = vec2(init[c * CW], CW == 2u ? init[c * CW + 1u] : 0.0);
    const uint plane = pc.nc * pc.C * CW;
    for (uint k = 0u; k < pc.nc; ++k) {
        const uint slot = (k * pc.C + c) * CW;
        starts[slot] = carry.x;
        if (CW == 2u) starts[slot + 1u] = carry.y;
        carry = cmul(pair(slot), carry) + pair(plane + slot);
    }
    if (pc.hasFinal == 0u) return;
    if (BACKWARD) {
        const uint b = c / pc.D, d = c % pc.D;
        const uint i = (pc.layoutBDL != 0u ? (c * pc.L + pc.tFirst) : ((b * pc.L + pc.tFirst) * pc.D + d)) * CW;
        carry = cmul(cconj(vec2(a[i], CW == 2u ? a[i + 1u] : 0.0)), carry);
    }
    final_[c * CW] = carry.x;
    if (CW == 2u) final_[c * CW + 1u] = carry.y;
}
