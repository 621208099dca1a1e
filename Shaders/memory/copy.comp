#version 450
//! variant u32x4
//! variant u64x2 -DWIDE
// dst[i] = src[i] for `words` 32-bit words, 16 bytes per load and store in a grid-stride
// loop: as uvec4, or (WIDE, where the device has 64-bit integers) as u64vec2, which
// lavapipe moves about twice as fast (it turns each 32-bit element access into a scalar
// load). The last words % 4 words go through a uint view by the first invocations. The host
// binds each range twice (bindings 0/2 and 1/3): declaring two blocks on one binding instead
// makes lavapipe's compiler give up on the vector path (100x slower).
#ifdef WIDE
#extension GL_EXT_shader_explicit_arithmetic_types_int64 : require
#define VEC u64vec2
#else
#define VEC uvec4
#endif
#include "common/grid.glsl"

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer SrcV { VEC src_v[]; };
layout(std430, binding = 1) writeonly buffer DstV { VEC dst_v[]; };
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
