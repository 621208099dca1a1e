#version 450
// y[i] = op(y[i], x[i]) over n floats: the combine of all-reduce (sum, max) and the
// accumulation of partial gradients. OP (specialization): 0 sum, 1 max. Grid-stride loop.
#include "common/grid.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint OP = 0;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint n;
    uint x_offset;  // elements before x[0] in the bound range
    uint y_offset;
} pc;

void main() {
    for (uint i = gl_GlobalInvocationID.x; i < pc.n; i += GRID_STRIDE) {
        const uint a = pc.y_offset + i, b = pc.x_offset + i;
        y[a] = OP == 0u ? y[a] + x[b] : max(y[a], x[b]);
    }
}
