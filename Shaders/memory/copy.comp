#version 450
// dst[i] = src[i] for `words` 32-bit words: uvec4 loads and stores in a grid-stride loop, the
// last words % 4 words by the first invocations through a uint view. The host binds each
// range twice (bindings 0/2 and 1/3): declaring two blocks on one binding instead makes
// lavapipe's compiler give up on the vector path (100x slower).
#include "common/grid.glsl"

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer SrcV { uvec4 src_v[]; };
layout(std430, binding = 1) writeonly buffer DstV { uvec4 dst_v[]; };
layout(std430, binding = 2) readonly buffer SrcS { uint src_s[]; };
layout(std430, binding = 3) writeonly buffer DstS { uint dst_s[]; };

layout(push_constant) uniform Push {
    uint words;
} pc;

void main() {
    const uint vecs = pc.words / 4u;
    const uint stride = GRID_STRIDE;
    for (uint i = gl_GlobalInvocationID.x; i < vecs; i += stride) {
        dst_v[i] = src_v[i];
    }
    const uint tail = vecs * 4u + gl_GlobalInvocationID.x;
    if (gl_GlobalInvocationID.x < 4u && tail < pc.words) {
        dst_s[tail] = src_s[tail];
    }
}
