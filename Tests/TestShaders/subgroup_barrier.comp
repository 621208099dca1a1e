#version 450
// A minimal reproduction kept as a test (SubgroupBarrierTests): subgroup s of a workgroup runs
// (s mod ROUNDS) + 1 rounds of { one lane marks its slot; subgroupBarrier() }. A barrier of
// subgroup scope concerns its own subgroup only, so unequal counts across the subgroups of a
// workgroup are legal and every mark must land. Mesa 26's lavapipe loses them (docs/ARCHITECTURE.md).
#extension GL_KHR_shader_subgroup_basic : require

layout(local_size_x_id = 0) in;

// marks[(global subgroup) * rounds + round] = round + 1; unreached slots keep what the host
// wrote. subgroups[0] = gl_NumSubgroups (the host does not assume a subgroup size).
layout(std430, binding = 0) buffer Marks { uint marks[]; };
layout(std430, binding = 1) writeonly buffer Subgroups { uint subgroups[]; };

layout(push_constant) uniform Push {
    uint rounds;
} pc;

void main() {
    const uint subgroup = gl_WorkGroupID.x * gl_NumSubgroups + gl_SubgroupID;
    if (gl_GlobalInvocationID.x == 0u) subgroups[0] = gl_NumSubgroups;
    const uint mine = gl_SubgroupID % (pc.rounds + 1u);
    for (uint r = 0u; r < mine; ++r) {
        if (subgroupElect()) marks[subgroup * pc.rounds + r] = r + 1u;
        subgroupBarrier();
    }
}
