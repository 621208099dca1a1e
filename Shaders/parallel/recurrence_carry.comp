#version 450
//! variant reads
//! variant backward -DWRITES_Z
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
// COMPLEX: every value is a (re, im) pair, products are complex, the scan's rows are
// [a, s] complex (4 floats) and da takes conj(hprev) (PyTorch's convention).
// Grid-stride loop; every operand bound at an aligned offset plus a word offset.
// Only the backward variant (WRITES_Z, MODE 2) writes z: in the others binding 4 is read-only,
// so the placeholder bound there is never a write (synchronization validation would otherwise
// see back-to-back dispatches writing and reading the shared placeholder).
#include "common/grid.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint MODE = 0;
layout(constant_id = 2) const bool COMPLEX = false;

layout(std430, binding = 0) readonly buffer M { float m[]; };
layout(std430, binding = 1) readonly buffer X { float x[]; };
layout(std430, binding = 2) readonly buffer Scan { float scan[]; };
layout(std430, binding = 3) buffer Y { float y[]; };
#ifdef WRITES_Z
layout(std430, binding = 4) buffer Z { float z[]; };
#else
layout(std430, binding = 4) readonly buffer Z { float z[]; };
#endif
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

// Value k (a float, or a (re, im) pair) of each operand.
#define CW (COMPLEX ? 2u : 1u)
vec2 loadM(uint k) { return COMPLEX ? vec2(m[pc.m_offset + 2u * k], m[pc.m_offset + 2u * k + 1u]) : vec2(m[pc.m_offset + k], 0.0); }
vec2 loadX(uint k) { return COMPLEX ? vec2(x[pc.x_offset + 2u * k], x[pc.x_offset + 2u * k + 1u]) : vec2(x[pc.x_offset + k], 0.0); }
vec2 loadH(uint k) { return COMPLEX ? vec2(h[pc.h_offset + 2u * k], h[pc.h_offset + 2u * k + 1u]) : vec2(h[pc.h_offset + k], 0.0); }
vec2 loadIncoming(uint k) {
    return COMPLEX ? vec2(incoming[pc.incoming_offset + 2u * k], incoming[pc.incoming_offset + 2u * k + 1u])
                   : vec2(incoming[pc.incoming_offset + k], 0.0);
}
// The scan's state s of channel c: b of row [a, b].
vec2 loadS(uint c) {
    return COMPLEX ? vec2(scan[pc.scan_offset + 4u * c + 2u], scan[pc.scan_offset + 4u * c + 3u]) : vec2(scan[pc.scan_offset + 2u * c + 1u], 0.0);
}
vec2 cmul(vec2 p, vec2 q) { return vec2(p.x * q.x - p.y * q.y, p.x * q.y + p.y * q.x); }

void storeY(uint k, vec2 v, bool add) {
    if (COMPLEX) {
        y[pc.y_offset + 2u * k] = add ? y[pc.y_offset + 2u * k] + v.x : v.x;
        y[pc.y_offset + 2u * k + 1u] = add ? y[pc.y_offset + 2u * k + 1u] + v.y : v.y;
    } else {
        y[pc.y_offset + k] = add ? y[pc.y_offset + k] + v.x : v.x;
    }
}

void addZ(uint k, vec2 v) {
#ifdef WRITES_Z
    if (COMPLEX) {
        z[pc.z_offset + 2u * k] += v.x;
        z[pc.z_offset + 2u * k + 1u] += v.y;
    } else {
        z[pc.z_offset + k] += v.x;
    }
#endif
}

void main() {
    for (uint i = gl_GlobalInvocationID.x; i < pc.n; i += GRID_STRIDE) {
        if (MODE == 0u) {
            // Row [a, b] of channel i.
            const uint row = 2u * CW * i;
            const vec2 a = loadM(i), b = loadX(i);
            y[pc.y_offset + row] = a.x;
            if (COMPLEX) y[pc.y_offset + row + 1u] = a.y;
            y[pc.y_offset + row + CW] = b.x;
            if (COMPLEX) y[pc.y_offset + row + CW + 1u] = b.y;
            continue;
        }
        if (MODE == 3u) {
            const vec2 s = loadS(i);
            storeY(i, (pc.flags & 1u) != 0u ? loadX(i) + cmul(loadM(i), s) : s, false);
            continue;
        }
        // Channel and time of value i.
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
        const vec2 g = cmul(loadM(i), loadS(c));
        storeY(i, g, true);
        if (MODE == 2u) {
            // The state before step t in the forward's order: h_{t-1}, or h_{t+1} reversed; the
            // incoming state at the shard's first step.
            const bool reversed = (pc.flags & 4u) != 0u;
            vec2 previous = vec2(0.0);
            if (!reversed && t > 0u) {
                previous = loadH(i - timeStride);
            } else if (reversed && t + 1u < pc.steps) {
                previous = loadH(i + timeStride);
            } else if ((pc.flags & 2u) != 0u) {
                previous = loadIncoming(c);
            }
            addZ(i, cmul(g, vec2(previous.x, -previous.y)));
        }
    }
}
