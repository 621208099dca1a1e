// Subgroup-level pieces of the tiled scans: the segmented operator on (value, head) pairs and
// subgroup scans of them. Include after scan_op.glsl and the SEG and MAX_SUBGROUP
// specialization constants.
#ifndef VKATTN_SCAN_BLOCK_GLSL
#define VKATTN_SCAN_BLOCK_GLSL

// (earlier) then (later): the segmented operator, folded into `later`.
void combine(T ev, bool eh, inout T lv, inout bool lh) {
    if (!lh) lv = SCAN_OP(ev, lv);
    lh = lh || eh;
}

// Inclusive scan of (v, h) across the subgroup. The shuffle loop runs MAX_SUBGROUP (a
// specialization constant) steps so that it unrolls: lavapipe caps the loop iterations of an
// invocation (65535 in all, over every loop), so kernels keep runtime-bounded loops few.
void subgroup_inclusive(inout T v, inout bool h) {
    if (SEG == 0u) {
#if defined(OP_ADD)
        v = subgroupInclusiveAdd(v);
#else
        v = key_value(subgroupInclusiveMax(max_key(v)));
#endif
        return;
    }
    for (uint d = 1u; d < MAX_SUBGROUP; d <<= 1) {
        if (d < gl_SubgroupSize) {
            T ov = subgroupShuffleUp(v, d);
            bool oh = subgroupShuffleUp(h, d);
            if (gl_SubgroupInvocationID >= d) combine(ov, oh, v, h);
        }
    }
}

// Unsegmented subgroup reduction and exclusive scan: one subgroup operation each (lavapipe
// runs every subgroup operation as a loop over the lanes, so the unsegmented paths use as few
// as possible).
T subgroup_total(T v) {
#if defined(OP_ADD)
    return subgroupAdd(v);
#else
    return key_value(subgroupMax(max_key(v)));
#endif
}

T subgroup_exclusive(T v) {
#if defined(OP_ADD)
    return subgroupExclusiveAdd(v);
#else
    return key_value(subgroupExclusiveMax(max_key(v)));
#endif
}

// Exclusive form of an inclusive subgroup scan (lane 0 gets the identity).
void subgroup_shift(T iv, bool ih, out T ev, out bool eh) {
    ev = subgroupShuffleUp(iv, 1u);
    eh = subgroupShuffleUp(ih, 1u);
    if (gl_SubgroupInvocationID == 0u) { ev = SCAN_IDENTITY; eh = false; }
}

// Total of an inclusive subgroup scan: the value of the highest active lane.
void subgroup_last(T iv, bool ih, out T tv, out bool th) {
    const uint top = subgroupMax(gl_SubgroupInvocationID);
    tv = subgroupShuffle(iv, top);
    th = subgroupShuffle(ih, top);
}

#endif
