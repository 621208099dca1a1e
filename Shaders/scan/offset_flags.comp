#version 450
// Segment starts given as offsets -> head flags, for the flags of elements [base, base + n)
// (one bindable chunk; the flags were zeroed before): flags[o - base] = 1 for each offset o in
// that range. Other offsets (past the end, or negative, read as huge unsigned) are ignored, so
// no offset can write outside the flags.
#include "common/grid.glsl"

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer Offsets { uint offsets[]; };
layout(std430, binding = 1) buffer Flags { uint flags[]; };

layout(push_constant) uniform Push {
    uint count;  // offsets
    uint n;      // flags in this chunk
    uint base;   // flat index of the chunk's first flag
} pc;

void main() {
    for (uint i = gl_GlobalInvocationID.x; i < pc.count; i += GRID_STRIDE) {
        const uint o = offsets[i] - pc.base;  // wraps past n when below base
        if (o < pc.n) flags[o] = 1u;
    }
}
