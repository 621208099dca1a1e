#version 450
//! variant f32_v4 -DVEC=4
//! variant f32_v1 -DVEC=1
//! variant f16_v4 -DVEC=4 -DVALUE_F16
//! variant f16_v1 -DVEC=1 -DVALUE_F16
// SDDMM: out[p] = alpha * dot(X[r, :], Y[c, :]) * (SCALE ? values[p] : 1) for every nonzero p
// at (r, c) of a CSR pattern [rows, cols]; X [rows, k] and Y [cols, k] row-major f32, out
// [nnz] f32, fp32 accumulation.
//
// Nonzero-split, so that long rows cost no more than short ones: a team of T lanes of one
// subgroup owns a chunk of consecutive nonzeros, finds the first one's row by binary search
// over the row offsets and then steps rows forward; for each nonzero its lanes split k (vec4
// loads when k % 4 == 0) and combine by shuffles. Teams iterate in subgroup lockstep.
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#include "sparse/common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint T = 8;         // lanes across k
layout(constant_id = 2) const bool SCALE = false;  // multiply by the pattern's values

layout(std430, binding = 0) readonly buffer RowOffsets { int row_offsets[]; };
layout(std430, binding = 1) readonly buffer Columns { int columns[]; };
layout(std430, binding = 2) readonly buffer Values { VALUE_T values[]; };
#if VEC == 4
layout(std430, binding = 3) readonly buffer X { vec4 x[]; };
layout(std430, binding = 5) readonly buffer Y { vec4 y[]; };
#else
layout(std430, binding = 4) readonly buffer X { float x[]; };
layout(std430, binding = 6) readonly buffer Y { float y[]; };
#endif
layout(std430, binding = 7) writeonly buffer Out { float result[]; };

layout(push_constant) uniform Push {
    uint rows;
    uint cols;
    uint k;
    uint nnz;
    uint chunk;
    float alpha;
} pc;

// Largest row r with row_offsets[r] <= p (reads clamped; bounded for any offsets).
uint row_of(uint p) {
    uint lo = 0u, hi = pc.rows - 1u;
    while (lo < hi) {
        const uint mid = (lo + hi + 1u) / 2u;
        if (row_offsets[mid] <= int(p)) { lo = mid; } else { hi = mid - 1u; }
    }
    return lo;
}

void main() {
    const uint lane = gl_SubgroupInvocationID % T;
    const uint teams_per_subgroup = gl_SubgroupSize / T;
    const uint team_in_subgroup = gl_SubgroupInvocationID / T;
    const bool in_team = team_in_subgroup < teams_per_subgroup;
    const uint first_team = (gl_WorkGroupID.x * gl_NumSubgroups + gl_SubgroupID) * teams_per_subgroup;
    const uint team_stride = gl_NumWorkGroups.x * gl_NumSubgroups * teams_per_subgroup;
    const uint chunks = (pc.nnz + pc.chunk - 1u) / pc.chunk;
    const uint vec_k = pc.k / VEC;

    for (uint base = first_team; base < chunks; base += team_stride) {
        const uint chunk_id = base + team_in_subgroup;
        const bool live = in_team && chunk_id < chunks;
        const uint p0 = chunk_id * pc.chunk;
        const uint p1 = live ? min(p0 + pc.chunk, pc.nnz) : 0u;
        uint row = live ? row_of(p0) : 0u;
        for (uint i = 0u; i < pc.chunk; ++i) {
            const uint p = p0 + i;
            const bool in_chunk = p < p1;
            float partial = 0.0;
            if (in_chunk) {
                while (row + 1u < pc.rows && row_offsets[row + 1u] <= int(p)) {
                    ++row;
                }
                const uint col = CLAMP_INDEX(columns[p], pc.cols);
                for (uint kv = lane; kv < vec_k; kv += T) {
#if VEC == 4
                    partial += dot(x[row * vec_k + kv], y[col * vec_k + kv]);
#else
                    partial += x[row * vec_k + kv] * y[col * vec_k + kv];
#endif
                }
            }
            for (uint m = 1u; m < T; m <<= 1u) {
                partial += subgroupShuffleXor(partial, m);
            }
            if (in_chunk && lane == 0u) {
                result[p] = pc.alpha * partial * (SCALE ? float(values[p]) : 1.0);
            }
        }
    }
}
