#version 450
//! variant v4 -DVEC=4
//! variant v1 -DVEC=1
// Merge-path SpMM fix-up: adds alpha * (carry-outs) to the rows that spanned segments. One
// invocation per (segment, column vector); only the first segment of a run of segments
// carrying the same row acts, summing the run in segment order (deterministic, no atomics).
#include "common/grid.glsl"

layout(local_size_x_id = 0) in;

#if VEC == 4
layout(std430, binding = 0) buffer C { vec4 c[]; };
layout(std430, binding = 2) readonly buffer Carry { vec4 carry[]; };
#define ACC_T vec4
#else
layout(std430, binding = 1) buffer C { float c[]; };
layout(std430, binding = 3) readonly buffer Carry { float carry[]; };
#define ACC_T float
#endif
layout(std430, binding = 4) readonly buffer CarryRows { uint carry_rows[]; };

layout(push_constant) uniform Push {
    uint rows;
    uint n;
    uint segments;
    float alpha;
} pc;

const uint NO_ROW = 0xFFFFFFFFu;

void main() {
    const uint vec_n = pc.n / VEC;
    const uint items = pc.segments * vec_n;
    for (uint i = gl_GlobalInvocationID.x; i < items; i += GRID_STRIDE) {
        const uint s = i / vec_n;
        const uint cv = i % vec_n;
        const uint row = carry_rows[s];
        if (row >= pc.rows || (s > 0u && carry_rows[s - 1u] == row)) {
            continue;
        }
        ACC_T sum = carry[s * vec_n + cv];
        for (uint t = s + 1u; t < pc.segments && carry_rows[t] == row; ++t) {
            sum += carry[t * vec_n + cv];
        }
        c[row * vec_n + cv] += pc.alpha * sum;
    }
}
