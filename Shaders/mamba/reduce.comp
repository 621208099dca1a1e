#version 450
// Sums over a leading axis in groups: out[g][i] = sum over s in [g G, min((g + 1) G, S)) of
// in[offset + s M + i] (fixed order). The selective scan's gradient reductions: dA over
// chunks, dB and dC over channel blocks, dD and the delta bias's gradient over rows.
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer IN { float inv[]; };
layout(std430, binding = 1) writeonly buffer OUT { float outv[]; };

layout(push_constant) uniform Push {
    uint M;       // elements per slice
    uint S;       // slices
    uint G;       // slices per group
    uint offset;  // float offset into inv
} pc;

void main() {
    const uint id = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    const uint groups = (pc.S + pc.G - 1u) / pc.G;
    if (id >= pc.M * max(groups, 1u)) return;
    const uint g = id / pc.M, i = id % pc.M;
    const uint s1 = min((g + 1u) * pc.G, pc.S);
    float acc = 0.0;
    for (uint s = g * pc.G; s < s1; ++s) acc += inv[pc.offset + s * pc.M + i];
    outv[id] = acc;
}
