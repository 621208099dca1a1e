#version 450
// f32 -> f16 for pairs of values (n2 pairs): the final rounding of an fp32 accumulator (ring
// attention keeps O, dQ, dK, dV in fp32 between steps) into an f16 output. packHalf2x16
// writes two halves per word, so no 16-bit storage feature is needed.
#include "common/grid.glsl"

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer Src { float src[]; };
layout(std430, binding = 1) writeonly buffer Dst { uint dst[]; };

layout(push_constant) uniform Push {
    uint pairs;
    uint src_offset;  // floats before the first value in the bound range
    uint dst_offset;  // words before the first pair
} pc;

void main() {
    for (uint i = gl_GlobalInvocationID.x; i < pc.pairs; i += GRID_STRIDE) {
        const uint at = pc.src_offset + 2u * i;
        dst[pc.dst_offset + i] = packHalf2x16(vec2(src[at], src[at + 1u]));
    }
}
