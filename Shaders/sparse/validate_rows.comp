#version 450
//! variant device
//! variant queue_family -DQUEUE_FAMILY_SCOPE
// CSR validation, pass 1 (one invocation per row, grid-stride): the first row whose offsets
// are malformed (start != 0 at row 0, decreasing, past nnz, not ending at nnz) goes to
// result.bad_offset_row by atomicMin; each subgroup writes its row-length statistics
// (longest row, empty rows, sum of squared deviations from the mean) to its own slot of
// `partials`, which the host reduces in fixed order. Statistics are only used when the
// structure is valid.
#extension GL_KHR_shader_subgroup_arithmetic : require
#include "common/grid.glsl"
#include "sparse/atomic_min.glsl"

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer RowOffsets { int row_offsets[]; };
layout(std430, binding = 1) buffer Result { uint bad_offset_row; uint bad_column_row; } result;
layout(std430, binding = 2) writeonly buffer Partials { uvec4 partials[]; };

layout(push_constant) uniform Push {
    uint rows;
    uint nnz;
    float mean;
} pc;

void main() {
    uint longest = 0u;
    uint empty = 0u;
    float squares = 0.0;
    uint bad = 0xFFFFFFFFu;
    for (uint r = gl_GlobalInvocationID.x; r < pc.rows; r += GRID_STRIDE) {
        const int start = row_offsets[r];
        const int end = row_offsets[r + 1u];
        const bool malformed = (r == 0u && start != 0) || end < start || end > int(pc.nnz)
            || (r == pc.rows - 1u && end != int(pc.nnz));
        if (malformed) {
            bad = min(bad, r);
        } else {
            const uint length = uint(end - start);
            longest = max(longest, length);
            empty += length == 0u ? 1u : 0u;
            const float d = float(length) - pc.mean;
            squares += d * d;
        }
    }
    if (bad != 0xFFFFFFFFu) {
        ATOMIC_MIN(result.bad_offset_row, bad);
    }
    longest = subgroupMax(longest);
    empty = subgroupAdd(empty);
    squares = subgroupAdd(squares);
    if (subgroupElect()) {
        const uint slot = gl_WorkGroupID.x * gl_NumSubgroups + gl_SubgroupID;
        partials[slot] = uvec4(longest, empty, floatBitsToUint(squares), 1u);
    }
}
