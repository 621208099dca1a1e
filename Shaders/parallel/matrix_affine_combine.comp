#version 450
// The combine of an all-scan over matrix affine maps S -> M S + B (the delta rule's chunk and
// shard maps: M [Dk, Dk] not diagonal): a value is `rows` blocks of Dk rows [M | B] of Dk + Dv
// floats (one block per sequence and head). Applying `earlier` then `later`:
//   [M | B] = [M_l M_e | M_l B_e + B_l].
// IDENTITY writes [I | 0] blocks instead (the exclusive prefix of the first rank). The result
// must not alias the inputs. Grid-stride over rows * Dk * (Dk + Dv) elements, Dk products each.
#include "common/grid.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const bool IDENTITY = false;

layout(std430, binding = 0) readonly buffer Earlier { float earlier[]; };
layout(std430, binding = 1) readonly buffer Later { float later[]; };
layout(std430, binding = 2) writeonly buffer Result { float result[]; };

layout(push_constant) uniform Push {
    uint rows;            // blocks
    uint dk, dv;
    uint earlier_offset;  // floats before each operand in its bound range
    uint later_offset;
    uint result_offset;
} pc;

void main() {
    const uint width = pc.dk + pc.dv;
    const uint block = pc.dk * width;
    const uint total = pc.rows * block;
    for (uint i = gl_GlobalInvocationID.x; i < total; i += GRID_STRIDE) {
        const uint base = i - i % block;
        const uint d = (i % block) / width, x = i % width;
        if (IDENTITY) {
            result[pc.result_offset + i] = x == d ? 1.0 : 0.0;
            continue;
        }
        float acc = x >= pc.dk ? later[pc.later_offset + i] : 0.0;
        for (uint f = 0u; f < pc.dk; ++f) {
            acc += later[pc.later_offset + base + d * width + f] * earlier[pc.earlier_offset + base + f * width + x];
        }
        result[pc.result_offset + i] = acc;
    }
}
