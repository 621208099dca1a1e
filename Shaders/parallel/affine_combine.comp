#version 450
// The combine of an all-scan over affine maps S -> a * S + B, row by row: a value is `rows`
// rows of (1 + width) floats [a, b_0 .. b_{width-1}] (a diagonal decay acting on one row of a
// state, as in gated linear attention). Applying `earlier` then `later`:
//   a = a_later * a_earlier,  b = a_later * b_earlier + b_later.
// IDENTITY writes [1, 0, ..., 0] rows instead (the exclusive prefix of rank 0). The result
// must not alias the inputs. Grid-stride over rows * (1 + width) elements.
#include "common/grid.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const bool IDENTITY = false;

layout(std430, binding = 0) readonly buffer Earlier { float earlier[]; };
layout(std430, binding = 1) readonly buffer Later { float later[]; };
layout(std430, binding = 2) writeonly buffer Result { float result[]; };

layout(push_constant) uniform Push {
    uint rows;
    uint width;
    uint earlier_offset;  // floats before each operand in its bound range
    uint later_offset;
    uint result_offset;
} pc;

void main() {
    const uint stride = pc.width + 1u;
    const uint total = pc.rows * stride;
    for (uint i = gl_GlobalInvocationID.x; i < total; i += GRID_STRIDE) {
        const uint c = i % stride;
        if (IDENTITY) {
            result[pc.result_offset + i] = c == 0u ? 1.0 : 0.0;
            continue;
        }
        const float a_later = later[pc.later_offset + i - c];
        const float e = earlier[pc.earlier_offset + i];
        result[pc.result_offset + i] = c == 0u ? a_later * e : a_later * e + later[pc.later_offset + i];
    }
}
