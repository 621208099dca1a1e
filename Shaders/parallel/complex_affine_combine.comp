#version 450
// The combine of an all-scan over complex affine maps S -> a * S + B, row by row: a value is
// `rows` rows of (1 + width) complex numbers [a, b_0 .. b_{width-1}] as (re, im) pairs (a
// complex diagonal decay, as in complex linear recurrences). Applying `earlier` then `later`:
//   a = a_later * a_earlier,  b = a_later * b_earlier + b_later   (complex products).
// IDENTITY writes [1, 0, ..., 0] rows instead. The result must not alias the inputs.
// Grid-stride over rows * (1 + width) complex elements.
#include "common/grid.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const bool IDENTITY = false;

layout(std430, binding = 0) readonly buffer Earlier { vec2 earlier[]; };
layout(std430, binding = 1) readonly buffer Later { vec2 later[]; };
layout(std430, binding = 2) writeonly buffer Result { vec2 result[]; };

layout(push_constant) uniform Push {
    uint rows;
    uint width;
    uint earlier_offset;  // complex elements before each operand in its bound range
    uint later_offset;
    uint result_offset;
} pc;

vec2 cmul(vec2 x, vec2 y) { return vec2(x.x * y.x - x.y * y.y, x.x * y.y + x.y * y.x); }

void main() {
    const uint stride = pc.width + 1u;
    const uint total = pc.rows * stride;
    for (uint i = gl_GlobalInvocationID.x; i < total; i += GRID_STRIDE) {
        const uint c = i % stride;
        if (IDENTITY) {
            result[pc.result_offset + i] = vec2(c == 0u ? 1.0 : 0.0, 0.0);
            continue;
        }
        const vec2 a_later = later[pc.later_offset + i - c];
        const vec2 e = earlier[pc.earlier_offset + i];
        result[pc.result_offset + i] = c == 0u ? cmul(a_later, e) : cmul(a_later, e) + later[pc.later_offset + i];
    }
}
