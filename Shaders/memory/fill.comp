#version 450
//! variant f32 -DT=float -DT4=vec4
//! variant u32 -DT=uint -DT4=uvec4
// dst[i] = value for `count` elements of T: T4 stores in a grid-stride loop, the last
// count % 4 elements by the first invocations through a scalar view. The host binds the
// range twice (bindings 0 and 1), see copy.comp for why.
#include "common/grid.glsl"

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) writeonly buffer DstV { T4 dst_v[]; };
layout(std430, binding = 1) writeonly buffer DstS { T dst_s[]; };

layout(push_constant) uniform Push {
    uint count;
    T value;
} pc;

void main() {
    const uint vecs = pc.count / 4u;
    const uint stride = GRID_STRIDE;
    const T4 v = T4(pc.value);
    for (uint i = gl_GlobalInvocationID.x; i < vecs; i += stride) {
        dst_v[i] = v;
    }
    const uint tail = vecs * 4u + gl_GlobalInvocationID.x;
    if (gl_GlobalInvocationID.x < 4u && tail < pc.count) {
        dst_s[tail] = pc.value;
    }
}
