#version 450
// Merge-path partition for CSR SpMM (Merrill & Garland's merge-based decomposition): the
// path merges the row ends (row_offsets[1..rows]) with the nonzero indices 0..nnz-1; it has
// rows + nnz items, and segment s owns items [s * items_per_segment, (s+1) * items_per_segment).
// One invocation per segment boundary s in [0, segments] finds where diagonal d = s * items
// crosses the path by binary search and writes (rows consumed, nonzeros consumed).
// Row ends are clamped into [0, nnz], so malformed offsets still give in-range coordinates.
#include "common/grid.glsl"

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer RowOffsets { int row_offsets[]; };
layout(std430, binding = 1) writeonly buffer Partition { uvec2 coords[]; };

layout(push_constant) uniform Push {
    uint rows;
    uint nnz;
    uint segments;
    uint items_per_segment;
} pc;

void main() {
    const uint total = pc.rows + pc.nnz;
    for (uint s = gl_GlobalInvocationID.x; s <= pc.segments; s += GRID_STRIDE) {
        const uint d = min(s * pc.items_per_segment, total);
        uint lo = d > pc.nnz ? d - pc.nnz : 0u;
        uint hi = min(d, pc.rows);
        // Row end i is consumed before nonzero j when row_offsets[i + 1] <= j.
        while (lo < hi) {
            const uint mid = (lo + hi) / 2u;
            const uint row_end = uint(clamp(row_offsets[mid + 1u], 0, int(pc.nnz)));
            if (row_end <= d - mid - 1u) { lo = mid + 1u; } else { hi = mid; }
        }
        coords[s] = uvec2(lo, d - lo);
    }
}
