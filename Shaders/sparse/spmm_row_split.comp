#version 450
//! variant f32_v4 -DVEC=4
//! variant f32_v1 -DVEC=1
//! variant f16_v4 -DVEC=4 -DVALUE_F16
//! variant f16_v1 -DVEC=1 -DVALUE_F16
// CSR SpMM, row-split: C = alpha * A * B + beta * C, A [rows, k] CSR, B [k, n] and C [rows, n]
// row-major f32, fp32 accumulation.
//
// A team of TN * TK lanes of one subgroup owns a row at a time: TN lanes across the output's
// columns (CPL vectors of VEC columns each: vec4 loads of B and C when n % 4 == 0, so one
// pass over the row's nonzeros covers TN * CPL * VEC columns), TK lanes striding over
// the row's nonzeros, their partial sums combined by shuffles. Teams walk rows grid-stride
// in subgroup lockstep, so every lane reaches the shuffles. beta == 0 never reads C.
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#include "sparse/common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint TN = 8;  // lanes across column vectors
layout(constant_id = 2) const uint TK = 1;  // lanes across a row's nonzeros
layout(constant_id = 3) const uint CPL = 1; // column vectors per lane (TN apart) per pass

layout(std430, binding = 0) readonly buffer RowOffsets { int row_offsets[]; };
layout(std430, binding = 1) readonly buffer Columns { int columns[]; };
layout(std430, binding = 2) readonly buffer Values { VALUE_T values[]; };
#if VEC == 4
layout(std430, binding = 3) readonly buffer B { vec4 b[]; };
layout(std430, binding = 5) buffer C { vec4 c[]; };
#else
layout(std430, binding = 4) readonly buffer B { float b[]; };
layout(std430, binding = 6) buffer C { float c[]; };
#endif

layout(push_constant) uniform Push {
    uint rows;
    uint k;
    uint n;
    uint nnz;
    float alpha;
    float beta;
} pc;

void main() {
    const uint T = TN * TK;
    const uint lane = gl_SubgroupInvocationID % T;
    const uint tn = lane % TN;
    const uint tk = lane / TN;
    const uint teams_per_subgroup = gl_SubgroupSize / T;
    const uint team_in_subgroup = gl_SubgroupInvocationID / T;
    const uint vec_n = pc.n / VEC;
    // Lanes past the last whole team of a subgroup (subgroup size not a multiple of T) idle.
    const bool in_team = team_in_subgroup < teams_per_subgroup;
    const uint first_team = (gl_WorkGroupID.x * gl_NumSubgroups + gl_SubgroupID) * teams_per_subgroup;
    const uint team_stride = gl_NumWorkGroups.x * gl_NumSubgroups * teams_per_subgroup;

    for (uint base = first_team; base < pc.rows; base += team_stride) {
        const uint row = base + team_in_subgroup;
        const bool live = in_team && row < pc.rows;
        uint start = 0u, end = 0u;
        if (live) {
            ROW_RANGE(row_offsets, row, pc.nnz, start, end);
        }
        for (uint cb = 0u; cb < vec_n; cb += TN * CPL) {
            ACC_T acc[CPL];
            for (uint q = 0u; q < CPL; ++q) {
                acc[q] = ACC_T(0.0);
            }
            if (live) {
                for (uint p = start + tk; p < end; p += TK) {
                    const uint at = CLAMP_INDEX(columns[p], pc.k) * vec_n + cb + tn;
                    const float a = float(values[p]);
                    for (uint q = 0u; q < CPL; ++q) {
                        if (cb + tn + q * TN < vec_n) {
                            acc[q] += a * b[at + q * TN];
                        }
                    }
                }
            }
            for (uint q = 0u; q < CPL; ++q) {
                for (uint m = TN; m < T; m <<= 1u) {
                    acc[q] += subgroupShuffleXor(acc[q], m);
                }
            }
            if (live && tk == 0u) {
                for (uint q = 0u; q < CPL; ++q) {
                    const uint cv = cb + tn + q * TN;
                    if (cv < vec_n) {
                        const uint at = row * vec_n + cv;
                        ACC_T result = pc.alpha * acc[q];
                        if (pc.beta != 0.0) {
                            result += pc.beta * c[at];
                        }
                        c[at] = result;
                    }
                }
            }
        }
    }
}
