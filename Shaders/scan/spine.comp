#version 450
//! variant add_f32 -DOP_ADD -DT=float -DT_F32
//! variant add_i32 -DOP_ADD -DT=int -DT_I32
//! variant add_u32 -DOP_ADD -DT=uint -DT_U32
//! variant max_f32 -DOP_MAX -DT=float -DT_F32
//
// Middle pass of reduce-then-scan: one workgroup turns the tile totals spine[2t] (value bits)
// and spine[2t + 1] (1 when the tile holds a segment head) into exclusive tile prefixes,
// written over spine[2t]. Each round covers WG * ITEMS tiles (ITEMS consecutive ones per
// invocation, scanned serially); the running total is carried between rounds.
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#extension GL_KHR_shader_subgroup_shuffle_relative : require
#include "common/scan_op.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint ITEMS = 16;
layout(constant_id = 2) const uint SEG = 0;
layout(constant_id = 7) const uint MAX_SUBGROUP = 128;  // the device's largest subgroup

layout(std430, binding = 0) buffer Spine { uint spine[]; };

layout(push_constant) uniform Push {
    uint tiles;
} pc;

#include "common/scan_block.glsl"

shared uint s_v[gl_WorkGroupSize.x];
shared uint s_h[gl_WorkGroupSize.x];
shared uint s_agg, s_aggh;

// Workgroup scan of one (v, h) per invocation: this invocation's exclusive prefix (pv, ph)
// and the workgroup's total (av, ah).
void block_scan(T v, bool h, out T pv, out bool ph, out T av, out bool ah) {
    T iv = v;
    bool ih = h;
    subgroup_inclusive(iv, ih);
    T ev;
    bool eh;
    subgroup_shift(iv, ih, ev, eh);
    barrier();  // earlier readers of the shared words are done
    if (gl_SubgroupInvocationID == subgroupMax(gl_SubgroupInvocationID)) {
        s_v[gl_SubgroupID] = t_bits(iv);
        s_h[gl_SubgroupID] = ih ? 1u : 0u;
    }
    barrier();
    if (gl_SubgroupID == 0u) {
        T carry = SCAN_IDENTITY;
        bool carryH = false;
        for (uint base = 0u; base < gl_NumSubgroups; base += gl_SubgroupSize) {
            const uint i = base + gl_SubgroupInvocationID;
            T x = SCAN_IDENTITY;
            bool xh = false;
            if (i < gl_NumSubgroups) { x = T_FROM(s_v[i]); xh = s_h[i] != 0u; }
            subgroup_inclusive(x, xh);
            T xe;
            bool xeh;
            subgroup_shift(x, xh, xe, xeh);
            combine(carry, carryH, xe, xeh);
            if (i < gl_NumSubgroups) { s_v[i] = t_bits(xe); s_h[i] = xeh ? 1u : 0u; }
            T tv;
            bool th;
            subgroup_last(x, xh, tv, th);
            combine(carry, carryH, tv, th);
            carry = tv;
            carryH = th;
        }
        if (gl_SubgroupInvocationID == 0u) { s_agg = t_bits(carry); s_aggh = carryH ? 1u : 0u; }
    }
    barrier();
    combine(T_FROM(s_v[gl_SubgroupID]), s_h[gl_SubgroupID] != 0u, ev, eh);
    pv = ev;
    ph = eh;
    av = T_FROM(s_agg);
    ah = s_aggh != 0u;
}

void main() {
    T carry = SCAN_IDENTITY;
    bool carryH = false;
    const uint round = gl_WorkGroupSize.x * ITEMS;
    for (uint base = 0u; base < pc.tiles; base += round) {
        const uint first = base + gl_LocalInvocationIndex * ITEMS;
        T x[ITEMS];
        uint heads = 0u;
        for (uint k = 0u; k < ITEMS; ++k) {
            x[k] = SCAN_IDENTITY;
            if (first + k < pc.tiles) {
                x[k] = T_FROM(spine[2u * (first + k)]);
                if (spine[2u * (first + k) + 1u] != 0u) heads |= 1u << k;
            }
        }
        T tv = SCAN_IDENTITY;
        bool th = false;
        for (uint k = 0u; k < ITEMS; ++k) {
            const bool hk = ((heads >> k) & 1u) != 0u;
            T v = x[k];
            bool vh = hk;
            combine(tv, th, v, vh);
            tv = v;
            th = vh;
        }
        T pv, av;
        bool ph, ah;
        block_scan(tv, th, pv, ph, av, ah);
        // Exclusive prefix of tile first + k: carry, invocations before, items before.
        T pre = pv;
        bool preH = ph;
        combine(carry, carryH, pre, preH);
        for (uint k = 0u; k < ITEMS; ++k) {
            if (first + k < pc.tiles) spine[2u * (first + k)] = t_bits(pre);
            T v = x[k];
            bool vh = ((heads >> k) & 1u) != 0u;
            combine(pre, preH, v, vh);
            pre = v;
            preH = vh;
        }
        combine(carry, carryH, av, ah);
        carry = av;
        carryH = ah;
    }
}
