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
// Linear recurrence h = a * h_prev + b over time, layout [B, D, L] (time contiguous), one
// invocation per (channel, time chunk of pc.ct steps); chunks of a channel are independent
// here and joined by the carries pass (recurrence/carries.comp):
//   PASS 1: the chunk's affine map (A, B): h_end = A * h_start + B.
//   PASS 3: replays the chunk from its start state (starts[]) and writes every h.
//   PASS 4 (chained, one pass): takes the start state from the predecessor chunk's published
//     end state; a predecessor unpublished after SPIN polls has its map reduced from the input
//     here instead, and the walk goes on to the one before (never waits without bound). Then
//     replays and publishes the chunk's end state.
// Steps run in processing order u; time t(u) = u, or L - 1 - u when REVERSE. Loads move 4
// floats (4 real or 2 complex steps) when VEC (rows aligned), else one value.
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
layout(std430, binding = 12) readonly buffer H0 { float h0[]; };  // [C * CW]
layout(std430, binding = 13) buffer Status { uint status[]; };    // PASS 4: [nc][C * CW] end states, 2 words per float
layout(std430, binding = 14) readonly buffer Init { float init[]; };  // PASS 4: state before step 0 [C * CW]
layout(std430, binding = 15) writeonly buffer Final { float final_[]; };  // PASS 4: final state (BACKWARD: dh0) [C * CW]

layout(push_constant) uniform Push {
    uint L;
    uint C;       // channels (B * D)
    uint nc;      // chunks per channel
    uint ct;      // steps per chunk (a multiple of 4)
    uint hasH0;   // BACKWARD: hf past the end is h0 (else 0)
    uint hasInit; // PASS 4: init[] holds the state before step 0 (else 0)
    uint hasFinal;// PASS 4: write final_[]
    uint tFirst;  // PASS 4, BACKWARD: time of the forward's first step (dh0 = conj(a there) * g)
} pc;

#include "common/scan_chain.glsl"

const uint SPB = VEC ? 4u / CW : 1u;  // steps per load

#define LOAD4(view, idx) load4_##view(idx)
#ifdef WIDE64
#define DEF_LOAD(view) vec4 load4_##view(uint i) { const u64vec2 p = view##_v[i]; return uintBitsToFloat(uvec4(unpackUint2x32(p.x), unpackUint2x32(p.y))); }
#else
#define DEF_LOAD(view) vec4 load4_##view(uint i) { return uintBitsToFloat(view##_v[i]); }
#endif
DEF_LOAD(a)
DEF_LOAD(b)
DEF_LOAD(f)

void store4_o(uint i, vec4 x) {
    const uvec4 w = floatBitsToUint(x);
#ifdef WIDE64
    o_v[i] = u64vec2(packUint2x32(w.xy), packUint2x32(w.zw));
#else
    o_v[i] = w;
#endif
}

void store4_d(uint i, vec4 x) {
    const uvec4 w = floatBitsToUint(x);
#ifdef WIDE64
    d_v[i] = u64vec2(packUint2x32(w.xy), packUint2x32(w.zw));
#else
    d_v[i] = w;
#endif
}

uint time_of(uint u) { return REVERSE ? pc.L - 1u - u : u; }

vec2 scalar_value(uint which, uint c, uint t) {
    const uint i = (c * pc.L + t) * CW;
    float x = which == 0u ? a_s[i] : (which == 1u ? b_s[i] : f_s[i]);
    float y = 0.0;
#if defined(COMPLEX)
    y = which == 0u ? a_s[i + 1u] : (which == 1u ? b_s[i + 1u] : f_s[i + 1u]);
#endif
    return vec2(x, y);
}

// The block of SPB steps with first memory time tb, as 4 floats (VEC) or one value.
vec4 load_block(uint which, uint c, uint tb) {
    if (VEC) {
        const uint v = (c * pc.L + tb) * CW / 4u;
        return which == 0u ? LOAD4(a, v) : (which == 1u ? LOAD4(b, v) : LOAD4(f, v));
    }
    return vec4(scalar_value(which, c, tb), 0.0, 0.0);
}

void store_block(uint which, uint c, uint tb, vec4 x) {
    if (VEC) {
        const uint v = (c * pc.L + tb) * CW / 4u;
        if (which == 0u) store4_o(v, x); else store4_d(v, x);
        return;
    }
    const uint i = (c * pc.L + tb) * CW;
    if (which == 0u) { o_s[i] = x.x; } else { d_s[i] = x.x; }
#if defined(COMPLEX)
    if (which == 0u) { o_s[i + 1u] = x.y; } else { d_s[i + 1u] = x.y; }
#endif
}

// The affine map (A, B) of chunk k of channel c: h_end = A * h_start + B.
void chunk_map(uint c, uint k, out vec2 A, out vec2 B) {
    const uint u0 = k * pc.ct;
    const uint u1 = min(u0 + pc.ct, pc.L);
    vec2 prevA = C_ONE;  // BACKWARD: the coefficient of step u is a of step u - 1
    if (BACKWARD && u0 > 0u) prevA = scalar_value(0u, c, time_of(u0 - 1u));
    A = C_ONE;
    B = C_ZERO;
    const uint blocks = (u1 - u0) / SPB;
    for (uint bi = 0u; bi < blocks; ++bi) {
        const uint ub = u0 + bi * SPB;
        const uint tb = REVERSE ? pc.L - ub - SPB : ub;
        const vec4 va = load_block(0u, c, tb);
        const vec4 vb = load_block(1u, c, tb);
        for (uint j = 0u; j < SPB; ++j) {
            const uint comp = REVERSE ? SPB - 1u - j : j;
            const vec2 av = value_of(va, comp);
            vec2 coef = av;
            if (BACKWARD) { coef = cconj(prevA); prevA = av; }
            A = cmul(coef, A);
            B = cmul(coef, B) + value_of(vb, comp);
        }
    }
}

// Replays chunk k of channel c from state h (left at the chunk's end state), writing every h
// (and, BACKWARD, da).
void replay(uint c, uint k, inout vec2 h) {
    const uint u0 = k * pc.ct;
    const uint u1 = min(u0 + pc.ct, pc.L);
    vec2 prevA = C_ONE;
    if (BACKWARD && u0 > 0u) prevA = scalar_value(0u, c, time_of(u0 - 1u));
    const uint blocks = (u1 - u0) / SPB;
    for (uint bi = 0u; bi < blocks; ++bi) {
        const uint ub = u0 + bi * SPB;                  // first processing step of the block
        const uint tb = REVERSE ? pc.L - ub - SPB : ub; // first memory time of the block
        const vec4 va = load_block(0u, c, tb);
        const vec4 vb = load_block(1u, c, tb);
        vec4 vo = vec4(0.0);
        for (uint j = 0u; j < SPB; ++j) {
            const uint comp = REVERSE ? SPB - 1u - j : j;
            const vec2 av = value_of(va, comp);
            vec2 coef = av;
            if (BACKWARD) { coef = cconj(prevA); prevA = av; }
            h = cmul(coef, h) + value_of(vb, comp);
            set_value(vo, comp, h);
        }
        store_block(0u, c, tb, vo);
        if (BACKWARD) {
            // da of each step: g times conj(forward h one step further on).
            const vec4 vf = load_block(2u, c, tb);
            const uint un = ub + SPB;
            vec2 hnext = C_ZERO;
            if (un < pc.L) hnext = scalar_value(2u, c, time_of(un));
            else if (pc.hasH0 != 0u) hnext = vec2(h0[c * CW], CW == 2u ? h0[c * CW + 1u] : 0.0);
            vec4 vd = vec4(0.0);
            for (uint j = 0u; j < SPB; ++j) {
                const uint comp = REVERSE ? SPB - 1u - j : j;
                const uint compNext = REVERSE ? SPB - 2u - j : j + 1u;
                const vec2 hf = j + 1u < SPB ? value_of(vf, compNext) : hnext;
                set_value(vd, comp, cmul(value_of(vo, comp), cconj(hf)));
            }
            store_block(1u, c, tb, vd);
        }
    }
}

// PASS 4: the state before chunk k of channel c, from the nearest published predecessor end
// state composed with the maps of the unpublished ones in between (reduced here).
vec2 chained_start(uint c, uint k) {
    vec2 accA = C_ONE, accB = C_ZERO;  // end of chunk `pos` -> start of chunk k
    int pos = int(k) - 1;
    uint polls = 0u;
    while (pos >= 0) {
        const uint f = (uint(pos) * pc.C + c) * CW;
        vec2 e = C_ZERO;
        bool ready = chain_read(f, e.x);
        if (CW == 2u) ready = chain_read(f + 1u, e.y) && ready;
        if (k - uint(pos) <= FORCE_FALLBACK) ready = false;
        if (ready) return cmul(accA, e) + accB;
        if (++polls <= SPIN && k - uint(pos) > FORCE_FALLBACK) continue;
        vec2 mA, mB;
        chunk_map(c, uint(pos), mA, mB);
        accB = cmul(accA, mB) + accB;
        accA = cmul(accA, mA);
        pos -= 1;
        polls = 0u;
    }
    const vec2 init0 = pc.hasInit != 0u ? vec2(init[c * CW], CW == 2u ? init[c * CW + 1u] : 0.0) : C_ZERO;
    return cmul(accA, init0) + accB;
}

void main() {
    const uint id = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    // Channels vary fastest in PASS 4, so a chunk's predecessor ran a few workgroups earlier.
    const uint k = PASS == 4u ? id / pc.C : id % pc.nc;
    const uint c = PASS == 4u ? id % pc.C : id / pc.nc;
    if (c >= pc.C || k >= pc.nc) return;
    const uint slot = (k * pc.C + c) * CW;
    if (PASS == 1u) {
        vec2 A, B;
        chunk_map(c, k, A, B);
        const uint plane = pc.nc * pc.C * CW;
        maps[slot] = A.x;
        maps[plane + slot] = B.x;
        if (CW == 2u) {
            maps[slot + 1u] = A.y;
            maps[plane + slot + 1u] = B.y;
        }
        return;
    }
    vec2 h = PASS == 4u ? chained_start(c, k) : vec2(starts[slot], CW == 2u ? starts[slot + 1u] : 0.0);
    replay(c, k, h);
    if (PASS == 4u) {
        chain_publish(slot, h.x);
        if (CW == 2u) chain_publish(slot + 1u, h.y);
        if (k + 1u == pc.nc && pc.hasFinal != 0u) {
            if (BACKWARD) h = cmul(cconj(scalar_value(0u, c, pc.tFirst)), h);
            final_[c * CW] = h.x;
            if (CW == 2u) final_[c * CW + 1u] = h.y;
        }
    }
}
