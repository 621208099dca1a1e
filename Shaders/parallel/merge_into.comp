#version 450
// Merges a partial attention result into a running one, in place, with the exact LSE rule:
//   m = max(L_acc, L_part), w_a = exp(L_acc - m), w_p = exp(L_part - m),
//   O_acc = (w_a O_acc + w_p O_part) / (w_a + w_p), L_acc = m + log(w_a + w_p).
// fp32 throughout (ring attention never rounds partials to f16 between steps). A side that is
// -inf (no key seen) has weight 0; both -inf leaves O_acc = 0, L_acc = -inf: no -inf - -inf.
// Layout of one query piece: O [tokens, H, D], LSE [H, tokens]. TPR lanes share a row; the
// LSE of the row is read by every lane before lane 0 overwrites it (workgroup barrier).
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint D = 64;
layout(constant_id = 2) const uint TPR = 8;

layout(std430, binding = 0) buffer AccO { float acc_o[]; };
layout(std430, binding = 1) buffer AccL { float acc_l[]; };
layout(std430, binding = 2) readonly buffer PartO { float part_o[]; };
layout(std430, binding = 3) readonly buffer PartL { float part_l[]; };

layout(push_constant) uniform Push {
    uint tokens;
    uint heads;
} pc;

const float NEG_INF = -1.0 / 0.0;

void main() {
    const uint lane = gl_LocalInvocationID.x % TPR;
    const uint rows_per_group = gl_WorkGroupSize.x / TPR;
    const uint row = (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * rows_per_group
        + gl_LocalInvocationID.x / TPR;
    const bool valid = row < pc.tokens * pc.heads;
    const uint token = valid ? row / pc.heads : 0u, h = valid ? row % pc.heads : 0u;
    const uint li = h * pc.tokens + token;
    const float la = valid ? acc_l[li] : NEG_INF;
    const float lp = valid ? part_l[li] : NEG_INF;
    barrier();  // every lane has read acc_l[li] before lane 0 writes it
    if (!valid) return;
    const float m = max(la, lp);
    if (m == NEG_INF) {
        for (uint d = lane; d < D; d += TPR) acc_o[row * D + d] = 0.0;
        if (lane == 0u) acc_l[li] = NEG_INF;
        return;
    }
    const float wa = la == NEG_INF ? 0.0 : exp(la - m);
    const float wp = lp == NEG_INF ? 0.0 : exp(lp - m);
    const float total = wa + wp;
    const float sa = wa / total, sp = wp / total;
    for (uint d = lane; d < D; d += TPR) {
        const uint at = row * D + d;
        acc_o[at] = sa * acc_o[at] + sp * part_o[at];
    }
    if (lane == 0u) acc_l[li] = m + log(total);
}
