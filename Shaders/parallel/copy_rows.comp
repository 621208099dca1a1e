#version 450
// Strided row copy in 32-bit words: for r < rows, c < width,
//   dst[dst_offset + r * dst_stride + c] = src[src_offset + r * src_stride + c]
// (ACCUMULATE: dst += src, as floats). Packs a head slice of a [tokens, heads, D] tensor into
// a contiguous [tokens, slice, D] one and back (Ulysses, head-sliced all-gather), moves LSE
// columns between [H, tokens] blocks, and sums gradient contributions. Word units serve f32
// and f16 alike (head dims are even). Grid-stride over rows * width.
#include "common/grid.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const bool ACCUMULATE = false;

layout(std430, binding = 0) readonly buffer Src { uint src[]; };
layout(std430, binding = 1) buffer Dst { uint dst[]; };

layout(push_constant) uniform Push {
    uint rows;
    uint width;
    uint src_offset;
    uint src_stride;
    uint dst_offset;
    uint dst_stride;
} pc;

void main() {
    const uint total = pc.rows * pc.width;
    for (uint i = gl_GlobalInvocationID.x; i < total; i += GRID_STRIDE) {
        const uint r = i / pc.width, c = i % pc.width;
        const uint from = pc.src_offset + r * pc.src_stride + c;
        const uint to = pc.dst_offset + r * pc.dst_stride + c;
        if (ACCUMULATE) {
            dst[to] = floatBitsToUint(uintBitsToFloat(dst[to]) + uintBitsToFloat(src[from]));
        } else {
            dst[to] = src[from];
        }
    }
}
