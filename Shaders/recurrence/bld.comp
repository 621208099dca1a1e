#version 450
//! variant real -DREAL
//! variant real_qf -DREAL -DQUEUE_FAMILY_SCOPE
//! variant complex -DCOMPLEX
//! variant complex_qf -DCOMPLEX -DQUEUE_FAMILY_SCOPE
//! variant real_w64 -DREAL -DWIDE64
//! variant real_w64_qf -DREAL -DWIDE64 -DQUEUE_FAMILY_SCOPE
//! variant complex_w64 -DCOMPLEX -DWIDE64
//! variant complex_w64_qf -DCOMPLEX -DWIDE64 -DQUEUE_FAMILY_SCOPE
//
// Linear recurrence h = a * h_prev + b over time, layout [B, L, D] (channels contiguous): one
// invocation per (batch, group of channels, time chunk of pc.ct steps); a group is 4 floats of
// a time row (4 real or 2 complex channels) when VEC (rows of D * CW floats, a multiple of 4),
// else one channel. Neighbouring invocations read neighbouring channels (coalesced).
//   PASS 1: each channel's affine map (A, B) over the chunk: h_end = A * h_start + B.
//   PASS 3: replays the chunk from its start state (starts[]) and writes every h.
//   PASS 4 (chained, one pass): takes the start state from the predecessor chunk's published
//     end state; a predecessor unpublished after SPIN polls has its map reduced from the input
//     here instead, and the walk goes on to the one before (never waits without bound). Then
//     replays and publishes the chunk's end state.
// Steps run in processing order u; time t(u) = u, or L - 1 - u when REVERSE.
//
// BACKWARD (the gradient pass): the coefficient of step u is conj(a) of step u - 1 (1 at
// u = 0), b holds dh, the output is g = dL/dh (= db), and PASS 3 also writes
// da[t(u)] = g_u * conj(hf[t(u + 1)]) with hf the forward's h (the forward's h0 past the end).
#extension GL_KHR_memory_scope_semantics : require
#ifdef WIDE64
#extension GL_EXT_shader_explicit_arithmetic_types_int64 : require
#endif
// Atomics visible to every workgroup: QueueFamily scope where the Vulkan memory model is on.
#ifdef QUEUE_FAMILY_SCOPE
#define SCOPE gl_ScopeQueueFamily
#else
#define SCOPE gl_ScopeDevice
#endif
#include "common/scan_recurrence.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint PASS = 1;
layout(constant_id = 2) const bool REVERSE = false;
layout(constant_id = 3) const bool BACKWARD = false;
layout(constant_id = 4) const bool VEC = true;
layout(constant_id = 5) const uint SPIN = 16;  // PASS 4: polls of an unpublished predecessor
layout(constant_id = 6) const uint FORCE_FALLBACK = 0;  // tests: reduce this many predecessors from the input

#ifdef WIDE64
#define VECW u64vec2
#else
#define VECW uvec4
#endif
layout(std430, binding = 0) readonly buffer AV { VECW a_v[]; };
layout(std430, binding = 1) readonly buffer AS { float a_s[]; };
layout(std430, binding = 2) readonly buffer BV { VECW b_v[]; };
layout(std430, binding = 3) readonly buffer BS { float b_s[]; };
layout(std430, binding = 4) writeonly buffer OV { VECW o_v[]; };
layout(std430, binding = 5) writeonly buffer OS { float o_s[]; };
layout(std430, binding = 6) buffer Maps { float maps[]; };        // [2][nc][C * CW]: A plane, B plane
layout(std430, binding = 7) readonly buffer Starts { float starts[]; };  // [nc][C * CW]
layout(std430, binding = 8) readonly buffer FV { VECW f_v[]; };
layout(std430, binding = 9) readonly buffer FS { float f_s[]; };
layout(std430, binding = 10) writeonly buffer DV { VECW d_v[]; };
layout(std430, binding = 11) writeonly buffer DS { float d_s[]; };
layout(std430, binding = 12) readonly buffer H0 { float h0[]; };  // [B][D * CW]
layout(std430, binding = 13) buffer Status { uint status[]; };    // PASS 4: [nc][C * CW] end states, 2 words per float
layout(std430, binding = 14) readonly buffer Init { float init[]; };  // PASS 4: state before step 0 [C * CW]
layout(std430, binding = 15) writeonly buffer Final { float final_[]; };  // PASS 4: final state (BACKWARD: dh0) [C * CW]

layout(push_constant) uniform Push {
    uint L;
    uint D;       // channels per batch
    uint B;       // batches
    uint nc;      // chunks
    uint ct;      // steps per chunk
    uint hasH0;   // BACKWARD: hf past the end is h0 (else 0)
    uint hasInit; // PASS 4: init[] holds the state before step 0 (else 0)
    uint hasFinal;// PASS 4: write final_[]
    uint tFirst;  // PASS 4, BACKWARD: time of the forward's first step (dh0 = conj(a there) * g)
} pc;

#include "common/scan_chain.glsl"

const uint W = VEC ? 4u : CW;   // floats per invocation
const uint NV = W / CW;         // values per invocation

#ifdef WIDE64
vec4 unpack4(u64vec2 p) { return uintBitsToFloat(uvec4(unpackUint2x32(p.x), unpackUint2x32(p.y))); }
VECW pack4(vec4 x) { const uvec4 w = floatBitsToUint(x); return u64vec2(packUint2x32(w.xy), packUint2x32(w.zw)); }
#else
vec4 unpack4(uvec4 p) { return uintBitsToFloat(p); }
VECW pack4(vec4 x) { return floatBitsToUint(x); }
#endif

// The group's W floats at float index i (a multiple of W).
vec4 load_group(uint which, uint i) {
    if (VEC) {
        const uint v = i / 4u;
        return unpack4(which == 0u ? a_v[v] : (which == 1u ? b_v[v] : f_v[v]));
    }
    vec4 x = vec4(0.0);
    x.x = which == 0u ? a_s[i] : (which == 1u ? b_s[i] : f_s[i]);
    if (CW == 2u) x.y = which == 0u ? a_s[i + 1u] : (which == 1u ? b_s[i + 1u] : f_s[i + 1u]);
    return x;
}

void store_group(uint which, uint i, vec4 x) {
    if (VEC) {
        if (which == 0u) o_v[i / 4u] = pack4(x); else d_v[i / 4u] = pack4(x);
        return;
    }
    if (which == 0u) o_s[i] = x.x; else d_s[i] = x.x;
    if (CW == 2u) { if (which == 0u) o_s[i + 1u] = x.y; else d_s[i + 1u] = x.y; }
}

vec4 read_starts(uint i) {
    vec4 x = vec4(0.0);
    for (uint j = 0u; j < W; ++j) x[j] = starts[i + j];
    return x;
}

uint time_of(uint u) { return REVERSE ? pc.L - 1u - u : u; }

// The affine maps (A, B) of chunk k for the group's values (batch b, first float f0).
void chunk_map(uint b, uint f0, uint k, out vec2 A[4], out vec2 Bm[4]) {
    const uint rowFloats = pc.D * CW;
    const uint batchBase = b * pc.L * rowFloats + f0;
    const uint u0 = k * pc.ct;
    const uint u1 = min(u0 + pc.ct, pc.L);
    vec2 prevA[4];
    vec4 pa = vec4(0.0);
    if (BACKWARD && u0 > 0u) pa = load_group(0u, batchBase + time_of(u0 - 1u) * rowFloats);
    for (uint j = 0u; j < NV; ++j) {
        A[j] = C_ONE;
        Bm[j] = C_ZERO;
        prevA[j] = (BACKWARD && u0 > 0u) ? value_of(pa, j) : C_ONE;
    }
    for (uint u = u0; u < u1; ++u) {
        const uint at = batchBase + time_of(u) * rowFloats;
        const vec4 va = load_group(0u, at);
        const vec4 vb = load_group(1u, at);
        for (uint j = 0u; j < NV; ++j) {
            const vec2 av = value_of(va, j);
            vec2 coef = av;
            if (BACKWARD) { coef = cconj(prevA[j]); prevA[j] = av; }
            A[j] = cmul(coef, A[j]);
            Bm[j] = cmul(coef, Bm[j]) + value_of(vb, j);
        }
    }
}

// Replays chunk k from states h (left at the chunk's end states), writing every h (and,
// BACKWARD, da).
void replay(uint b, uint f0, uint k, inout vec2 h[4]) {
    const uint rowFloats = pc.D * CW;
    const uint batchBase = b * pc.L * rowFloats + f0;
    const uint u0 = k * pc.ct;
    const uint u1 = min(u0 + pc.ct, pc.L);
    vec2 prevA[4];
    vec4 pa = vec4(0.0);
    if (BACKWARD && u0 > 0u) pa = load_group(0u, batchBase + time_of(u0 - 1u) * rowFloats);
    for (uint j = 0u; j < NV; ++j) prevA[j] = (BACKWARD && u0 > 0u) ? value_of(pa, j) : C_ONE;
    for (uint u = u0; u < u1; ++u) {
        const uint at = batchBase + time_of(u) * rowFloats;
        const vec4 va = load_group(0u, at);
        const vec4 vb = load_group(1u, at);
        vec4 vo = vec4(0.0);
        for (uint j = 0u; j < NV; ++j) {
            const vec2 av = value_of(va, j);
            vec2 coef = av;
            if (BACKWARD) { coef = cconj(prevA[j]); prevA[j] = av; }
            h[j] = cmul(coef, h[j]) + value_of(vb, j);
            set_value(vo, j, h[j]);
        }
        store_group(0u, at, vo);
        if (BACKWARD) {
            // da = g times conj(forward h one step further on; h0 past the end).
            vec4 vf = vec4(0.0);
            if (u + 1u < pc.L) vf = load_group(2u, batchBase + time_of(u + 1u) * rowFloats);
            else if (pc.hasH0 != 0u) for (uint j = 0u; j < W; ++j) vf[j] = h0[b * rowFloats + f0 + j];
            vec4 vd = vec4(0.0);
            for (uint j = 0u; j < NV; ++j) set_value(vd, j, cmul(h[j], cconj(value_of(vf, j))));
            store_group(1u, at, vd);
        }
    }
}

// PASS 4: the group's states before chunk k, from the nearest published predecessor end
// states composed with the maps of the unpublished chunks in between (reduced here).
void chained_start(uint b, uint f0, uint k, out vec2 h[4]) {
    const uint rowFloats = pc.D * CW;
    vec2 accA[4], accB[4];
    for (uint j = 0u; j < NV; ++j) { accA[j] = C_ONE; accB[j] = C_ZERO; }
    int pos = int(k) - 1;
    uint polls = 0u;
    while (pos >= 0) {
        const uint f = (uint(pos) * pc.B + b) * rowFloats + f0;
        vec4 e = vec4(0.0);
        bool ready = true;
        for (uint j = 0u; j < W; ++j) ready = chain_read(f + j, e[j]) && ready;
        if (k - uint(pos) <= FORCE_FALLBACK) ready = false;
        if (ready) {
            for (uint j = 0u; j < NV; ++j) h[j] = cmul(accA[j], value_of(e, j)) + accB[j];
            return;
        }
        if (++polls <= SPIN && k - uint(pos) > FORCE_FALLBACK) continue;
        vec2 mA[4], mB[4];
        chunk_map(b, f0, uint(pos), mA, mB);
        for (uint j = 0u; j < NV; ++j) {
            accB[j] = cmul(accA[j], mB[j]) + accB[j];
            accA[j] = cmul(accA[j], mA[j]);
        }
        pos -= 1;
        polls = 0u;
    }
    vec4 e = vec4(0.0);
    if (pc.hasInit != 0u) for (uint j = 0u; j < W; ++j) e[j] = init[b * rowFloats + f0 + j];
    for (uint j = 0u; j < NV; ++j) h[j] = cmul(accA[j], value_of(e, j)) + accB[j];
}

void main() {
    const uint rowFloats = pc.D * CW;
    const uint groups = rowFloats / W;
    const uint id = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    const uint g = id % groups;
    const uint rest = id / groups;
    const uint b = rest % pc.B;
    const uint k = rest / pc.B;  // chunks vary slowest: a chunk's predecessor ran earlier
    if (k >= pc.nc) return;
    const uint f0 = g * W;                                  // float offset within a row
    const uint slot = (k * pc.B + b) * rowFloats + f0;       // maps / starts / status
    if (PASS == 1u) {
        vec2 A[4], Bm[4];
        chunk_map(b, f0, k, A, Bm);
        const uint plane = pc.nc * pc.B * rowFloats;
        for (uint j = 0u; j < NV; ++j) {
            maps[slot + j * CW] = A[j].x;
            maps[plane + slot + j * CW] = Bm[j].x;
            if (CW == 2u) {
                maps[slot + j * CW + 1u] = A[j].y;
                maps[plane + slot + j * CW + 1u] = Bm[j].y;
            }
        }
        return;
    }
    vec2 h[4];
    if (PASS == 4u) {
        chained_start(b, f0, k, h);
    } else {
        const vec4 init0 = read_starts(slot);
        for (uint j = 0u; j < NV; ++j) h[j] = value_of(init0, j);
    }
    replay(b, f0, k, h);
    if (PASS == 4u) {
        vec4 e = vec4(0.0);
        for (uint j = 0u; j < NV; ++j) set_value(e, j, h[j]);
        for (uint j = 0u; j < W; ++j) chain_publish(slot + j, e[j]);
        if (k + 1u == pc.nc && pc.hasFinal != 0u) {
            if (BACKWARD) {
                const vec4 af = load_group(0u, b * pc.L * rowFloats + f0 + pc.tFirst * rowFloats);
                for (uint j = 0u; j < NV; ++j) set_value(e, j, cmul(cconj(value_of(af, j)), h[j]));
            }
            for (uint j = 0u; j < W; ++j) final_[b * rowFloats + f0 + j] = e[j];
        }
    }
}
