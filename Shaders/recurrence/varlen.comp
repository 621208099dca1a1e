#version 450
//! variant real -DREAL
//! variant complex -DCOMPLEX
//
// Packed sequences (cu_seqlens) for the linear recurrence h = a * h_prev + b: the dense
// kernels run on copies of the inputs in which no state crosses a sequence boundary. One
// invocation per (sequence n, channel d). A sequence's entry step e (its first step, its last
// when reversed) is where its initial state enters, its exit step x where its final state
// leaves.
//   MODE 0 (forward prep, on copies of a and b): a'[e] = 0, b'[e] = b[e] + a[e] * h0_n.
//   MODE 1 (forward final states): final_n = h[x] (h0_n, or 0, for an empty sequence).
//   MODE 2 (backward prep, on copies of a and dh): a'[e] = 0, dh'[x] = dh[x] + dFinal_n.
//   MODE 3 (backward fix-up, after the dense backward on a' and dh'): da[e] = g[e] * conj(h0_n)
//     (0 without h0), dh0_n = conj(a[e]) * g[e] (dFinal_n, or 0, for an empty sequence).
#include "common/scan_recurrence.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint MODE = 0;

layout(std430, binding = 0) readonly buffer Cu { int cu[]; };          // [NSEQ + 1]
layout(std430, binding = 1) readonly buffer A { float a[]; };          // the caller's a
layout(std430, binding = 2) buffer W0 { float w0[]; };   // MODE 0, 2: a'; MODE 1: h; MODE 3: g (db)
layout(std430, binding = 3) buffer W1 { float w1[]; };   // MODE 0: b'; MODE 2: dh'; MODE 3: da
layout(std430, binding = 4) readonly buffer S0 { float s0[]; };        // MODE 0, 1, 3: h0; MODE 2: dFinal [NSEQ, D * CW]
layout(std430, binding = 5) writeonly buffer SO { float sout[]; };     // MODE 1: final; MODE 3: dh0 [NSEQ, D * CW]
layout(std430, binding = 6) readonly buffer S1 { float s1[]; };        // MODE 3: dFinal

layout(push_constant) uniform Push {
    uint T;          // packed steps
    uint D;          // channels
    uint NSEQ;       // sequences
    uint layoutBDL;  // 1: [1, D, T], 0: [1, T, D]
    uint reverse;    // the forward runs from the last step down
    uint hasS0;      // s0 given
    uint hasS1;      // s1 given
    uint hasOut;     // write sout
} pc;

uint at(uint t, uint d) { return (pc.layoutBDL != 0u ? d * pc.T + t : t * pc.D + d) * CW; }
vec2 load(uint which, uint i) {
    if (which == 0u) return vec2(a[i], CW == 2u ? a[i + 1u] : 0.0);
    if (which == 1u) return vec2(w0[i], CW == 2u ? w0[i + 1u] : 0.0);
    return vec2(w1[i], CW == 2u ? w1[i + 1u] : 0.0);
}
void store(uint which, uint i, vec2 x) {
    if (which == 1u) { w0[i] = x.x; if (CW == 2u) w0[i + 1u] = x.y; }
    else { w1[i] = x.x; if (CW == 2u) w1[i + 1u] = x.y; }
}
vec2 state(uint which, uint i) {
    return which == 0u ? vec2(s0[i], CW == 2u ? s0[i + 1u] : 0.0) : vec2(s1[i], CW == 2u ? s1[i + 1u] : 0.0);
}
void store_out(uint i, vec2 x) { sout[i] = x.x; if (CW == 2u) sout[i + 1u] = x.y; }

void main() {
    const uint id = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    const uint d = id % pc.D;
    const uint n = id / pc.D;
    if (n >= pc.NSEQ) return;
    const uint start = uint(cu[n]), end = uint(cu[n + 1u]);
    const uint si = (n * pc.D + d) * CW;
    const bool empty = end == start;
    const uint e = empty ? 0u : (pc.reverse != 0u ? end - 1u : start);
    const uint x = empty ? 0u : (pc.reverse != 0u ? start : end - 1u);
    if (MODE == 0u) {
        if (empty) return;
        const uint i = at(e, d);
        if (pc.hasS0 != 0u) store(2u, i, load(2u, i) + cmul(load(0u, i), state(0u, si)));
        store(1u, i, C_ZERO);
    } else if (MODE == 1u) {
        if (pc.hasOut == 0u) return;
        store_out(si, empty ? (pc.hasS0 != 0u ? state(0u, si) : C_ZERO) : load(1u, at(x, d)));
    } else if (MODE == 2u) {
        if (empty) return;
        store(1u, at(e, d), C_ZERO);
        if (pc.hasS0 != 0u) { const uint i = at(x, d); store(2u, i, load(2u, i) + state(0u, si)); }
    } else {
        if (empty) {
            if (pc.hasOut != 0u) store_out(si, pc.hasS1 != 0u ? state(1u, si) : C_ZERO);
            return;
        }
        const uint i = at(e, d);
        const vec2 g = load(1u, i);
        store(2u, i, pc.hasS0 != 0u ? cmul(g, cconj(state(0u, si))) : C_ZERO);
        if (pc.hasOut != 0u) store_out(si, cmul(cconj(load(0u, i)), g));
    }
}
