#version 450
// The cross-rank carry of a linear recurrence h_t = a_t h_{t-1} + b_t sharded over time
// (ContextParallelRecurrence). A rank's shard is an affine map per channel, state -> A S + B;
// the all-scan's exclusive prefix is rows [a, s] per channel, s the state entering the shard
// (forward) or the gradient arriving at its end (backward). MODE (specialization):
//   0 pack:      value[2c] = m[c], value[2c + 1] = x[c]                (the shard's map)
//   1 forward:   y[i] += m[i] * s(ch(i))       m: prod of a up to t within the shard
//   2 backward:  y[i] += g, z[i] += g * hprev(i), g = m[i] * s(ch(i))  m: prod of a after t
//                (after in the forward's order of steps)
//   3 state:     y[c] = AFFINE ? x[c] + m[c] * s(c) : s(c)
// Elements are [B, L, D] (BDL = 0) or [B, D, L] (BDL = 1) fp32; channels c = b * D + d.
// Grid-stride loop; every operand bound at an aligned offset plus a word offset.
#include "common/grid.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint MODE = 0;

layout(std430, binding = 0) readonly buffer M { float m[]; };
layout(std430, binding = 1) readonly buffer X { float x[]; };
layout(std430, binding = 2) readonly buffer Scan { float scan[]; };
layout(std430, binding = 3) buffer Y { float y[]; };
layout(std430, binding = 4) buffer Z { float z[]; };
layout(std430, binding = 5) readonly buffer H { float h[]; };
layout(std430, binding = 6) readonly buffer Incoming { float incoming[]; };

layout(push_constant) uniform Push {
    uint n;            // elements (modes 1, 2) or channels (modes 0, 3)
    uint steps;        // L of the shard
    uint channels;     // D
    uint bdl;
    uint flags;        // bit 0: AFFINE (mode 3); bit 1: incoming given (mode 2); bit 2: the
                       // recurrence runs backward in time (h_{t+1} precedes h_t)
    uint m_offset;
    uint x_offset;
    uint scan_offset;
    uint y_offset;
    uint z_offset;
    uint h_offset;
    uint incoming_offset;
} pc;

void main() {
    for (uint i = gl_GlobalInvocationID.x; i < pc.n; i += GRID_STRIDE) {
        if (MODE == 0u) {
            y[pc.y_offset + 2u * i] = m[pc.m_offset + i];
            y[pc.y_offset + 2u * i + 1u] = x[pc.x_offset + i];
            continue;
        }
        if (MODE == 3u) {
            const float s = scan[pc.scan_offset + 2u * i + 1u];
            y[pc.y_offset + i] = (pc.flags & 1u) != 0u ? x[pc.x_offset + i] + m[pc.m_offset + i] * s : s;
            continue;
        }
        // Channel and time of element i.
        uint c, t, timeStride;
        if (pc.bdl != 0u) {
            c = i / pc.steps;
            t = i % pc.steps;
            timeStride = 1u;
        } else {
            const uint row = i / pc.channels;
            c = (row / pc.steps) * pc.channels + i % pc.channels;
            t = row % pc.steps;
            timeStride = pc.channels;
        }
        const float g = m[pc.m_offset + i] * scan[pc.scan_offset + 2u * c + 1u];
        y[pc.y_offset + i] += g;
        if (MODE == 2u) {
            // The state before step t in the forward's order: h_{t-1}, or h_{t+1} reversed; the
            // incoming state at the shard's first step.
            const bool reversed = (pc.flags & 4u) != 0u;
            float previous = 0.0;
            if (!reversed && t > 0u) {
                previous = h[pc.h_offset + i - timeStride];
            } else if (reversed && t + 1u < pc.steps) {
                previous = h[pc.h_offset + i + timeStride];
            } else if ((pc.flags & 2u) != 0u) {
                previous = incoming[pc.incoming_offset + c];
            }
            z[pc.z_offset + i] += g * previous;
        }
    }
}
