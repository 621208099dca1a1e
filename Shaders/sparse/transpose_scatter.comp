#version 450
//! variant f32
//! variant f16 -DVALUE_F16
// CSR transpose, pass 3: tile t walks its rows in order and moves each nonzero (row r,
// column c, value v) to position cursor[c * tiles + t] + rank of the transpose, writing r as
// its column index and v as its value; the cursors start as the exclusive scan of the counts.
// Rows keep their order within each column (the transpose is stable and the same every run).
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#include "sparse/common.glsl"
#include "sparse/transpose_rank.glsl"

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer RowOffsets { int row_offsets[]; };
layout(std430, binding = 1) readonly buffer Columns { int columns[]; };
layout(std430, binding = 2) readonly buffer Values { VALUE_T values[]; };
layout(std430, binding = 3) buffer Cursors { uint cursors[]; };
layout(std430, binding = 4) writeonly buffer OutColumns { int out_columns[]; };
layout(std430, binding = 5) writeonly buffer OutValues { VALUE_T out_values[]; };

layout(push_constant) uniform Push {
    uint rows;
    uint cols;
    uint nnz;
    uint tiles;
} pc;

void main() {
    const uint tile = gl_WorkGroupID.x * gl_NumSubgroups + gl_SubgroupID;
    if (tile >= pc.tiles) return;  // uniform over the subgroup
    uint first_row, end_row;
    TILE_FIRST_ROW(row_offsets, tile, pc.tiles, pc.rows, pc.nnz, first_row);
    TILE_FIRST_ROW(row_offsets, tile + 1u, pc.tiles, pc.rows, pc.nnz, end_row);
    if (tile + 1u == pc.tiles) end_row = pc.rows;  // trailing empty rows belong to the last tile
    for (uint row = first_row; row < end_row; ++row) {
        uint start, end;
        ROW_RANGE(row_offsets, row, pc.nnz, start, end);
        for (uint base = start; base < end; base += gl_SubgroupSize) {
            const uint p = base + gl_SubgroupInvocationID;
            const int column = p < end ? int(CLAMP_INDEX(columns[p], pc.cols)) : -1 - int(gl_SubgroupInvocationID);
            uint rank;
            bool last;
            column_rank(column, rank, last);
            uint slot = 0u;
            if (column >= 0) slot = cursors[uint(column) * pc.tiles + tile];
            subgroupMemoryBarrierBuffer();
            subgroupBarrier();  // every lane has read its cursor before the last ones advance it
            if (column >= 0) {
                const uint at = min(slot + rank, max(pc.nnz, 1u) - 1u);
                out_columns[at] = int(row);
                out_values[at] = values[p];
                if (last) cursors[uint(column) * pc.tiles + tile] = slot + rank + 1u;
            }
            subgroupMemoryBarrierBuffer();
            subgroupBarrier();
        }
    }
}
