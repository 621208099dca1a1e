#version 450
//! variant f32_v4 -DVEC=4
//! variant f32_v1 -DVEC=1
//! variant f16_v4 -DVEC=4 -DVALUE_F16
//! variant f16_v1 -DVEC=1 -DVALUE_F16
// CSR SpMM, nonzero-split along the merge path: C = alpha * A * B + beta * C (shapes as in
// spmm_row_split.comp). A team of TN consecutive lanes (across the output's column vectors,
// CPL vectors each per pass) walks one path segment at a time, from the partition pass's
// (row, nonzero) coordinates: each row that ends inside the segment is written whole
// (alpha * partial + beta * C); the partial
// sum of the row still open at the segment's end is the segment's carry-out, which
// spmm_merge_fixup.comp adds afterwards. Every row is written by exactly one segment, so no
// two invocations touch the same output and the result is deterministic.
#include "sparse/common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint TN = 8;  // lanes across column vectors
layout(constant_id = 2) const uint CPL = 1; // column vectors per lane (TN apart) per pass

layout(std430, binding = 0) readonly buffer RowOffsets { int row_offsets[]; };
layout(std430, binding = 1) readonly buffer Columns { int columns[]; };
layout(std430, binding = 2) readonly buffer Values { VALUE_T values[]; };
#if VEC == 4
layout(std430, binding = 3) readonly buffer B { vec4 b[]; };
layout(std430, binding = 5) buffer C { vec4 c[]; };
layout(std430, binding = 9) writeonly buffer Carry { vec4 carry[]; };
#else
layout(std430, binding = 4) readonly buffer B { float b[]; };
layout(std430, binding = 6) buffer C { float c[]; };
layout(std430, binding = 10) writeonly buffer Carry { float carry[]; };
#endif
layout(std430, binding = 7) readonly buffer Partition { uvec2 coords[]; };
layout(std430, binding = 8) writeonly buffer CarryRows { uint carry_rows[]; };

layout(push_constant) uniform Push {
    uint rows;
    uint k;
    uint n;
    uint nnz;
    float alpha;
    float beta;
    uint segments;
} pc;

const uint NO_ROW = 0xFFFFFFFFu;

// acc[q] += A[p] * B[column of p, cv0 + q * TN] for the lane's column vectors that exist.
void accumulate(inout ACC_T acc[CPL], uint p, uint cv0, uint vec_n) {
    const uint at = CLAMP_INDEX(columns[p], pc.k) * vec_n + cv0;
    const float a = float(values[p]);
    for (uint q = 0u; q < CPL; ++q) {
        if (cv0 + q * TN < vec_n) {
            acc[q] += a * b[at + q * TN];
        }
    }
}

void main() {
    const uint lane = gl_LocalInvocationID.x % TN;
    const uint team = gl_GlobalInvocationID.x / TN;
    const uint team_stride = gl_NumWorkGroups.x * (gl_WorkGroupSize.x / TN);
    const uint vec_n = pc.n / VEC;

    for (uint s = team; s < pc.segments; s += team_stride) {
        const uvec2 from = coords[s];
        const uvec2 to = coords[s + 1u];
        const uint row_end = min(to.x, pc.rows);
        const uint nz_end = min(to.y, pc.nnz);
        uint row = from.x;
        uint p = min(from.y, nz_end);
        for (uint cb = 0u; cb < vec_n; cb += TN * CPL) {
            row = from.x;
            p = min(from.y, nz_end);
            ACC_T acc[CPL];
            for (; row < row_end; ++row) {
                const uint e = uint(clamp(row_offsets[row + 1u], int(p), int(nz_end)));
                for (uint q = 0u; q < CPL; ++q) {
                    acc[q] = ACC_T(0.0);
                }
                for (; p < e; ++p) {
                    accumulate(acc, p, cb + lane, vec_n);
                }
                for (uint q = 0u; q < CPL; ++q) {
                    const uint cv = cb + lane + q * TN;
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
            for (uint q = 0u; q < CPL; ++q) {
                acc[q] = ACC_T(0.0);
            }
            for (uint t = p; t < nz_end; ++t) {
                accumulate(acc, t, cb + lane, vec_n);
            }
            for (uint q = 0u; q < CPL; ++q) {
                const uint cv = cb + lane + q * TN;
                if (cv < vec_n) {
                    carry[s * vec_n + cv] = acc[q];
                }
            }
        }
        if (lane == 0u) {
            // The row still open at the segment's end carries out if the segment consumed
            // some of its nonzeros (row and p, where its tail starts, are the same after every
            // column pass).
            carry_rows[s] = row < pc.rows && p < nz_end ? row : NO_ROW;
        }
    }
}
