#version 450
//! variant device
//! variant queue_family -DQUEUE_FAMILY_SCOPE
// CSR validation, pass 2 (one invocation per nonzero, grid-stride): for the nonzeros of the
// rows before the first row with malformed offsets (pass 1), a column index outside [0, cols)
// sends its row to result.bad_column_row by atomicMin. The row of a nonzero is found by binary
// search over those rows' offsets, which pass 1 proved non-decreasing.
#include "common/grid.glsl"
#include "sparse/atomic_min.glsl"

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer RowOffsets { int row_offsets[]; };
layout(std430, binding = 1) readonly buffer Columns { int columns[]; };
layout(std430, binding = 2) buffer Result { uint bad_offset_row; uint bad_column_row; } result;

layout(push_constant) uniform Push {
    uint rows;
    uint cols;
    uint nnz;
} pc;

void main() {
    const uint good_rows = min(result.bad_offset_row, pc.rows);
    // Nonzeros of rows [0, good_rows): up to the start of the first bad row (0 if that is row 0).
    const uint limit = good_rows == 0u ? 0u : uint(clamp(row_offsets[good_rows], 0, int(pc.nnz)));
    for (uint p = gl_GlobalInvocationID.x; p < limit; p += GRID_STRIDE) {
        const int c = columns[p];
        if (c < 0 || c >= int(pc.cols)) {
            // Largest row r < good_rows with row_offsets[r] <= p.
            uint lo = 0u, hi = good_rows - 1u;
            while (lo < hi) {
                const uint mid = (lo + hi + 1u) / 2u;
                if (uint(row_offsets[mid]) <= p) { lo = mid; } else { hi = mid - 1u; }
            }
            ATOMIC_MIN(result.bad_column_row, lo);
        }
    }
}
