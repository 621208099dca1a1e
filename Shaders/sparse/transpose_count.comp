#version 450
// CSR transpose, pass 1: counts[c * tiles + t] = nonzeros of column c in tile t's rows.
// Tile t is subgroup t of the dispatch; it owns its counts entries, so plain read-modify-
// writes suffice (the chunk ranks fold duplicate columns into one update).
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#include "sparse/common.glsl"
#include "sparse/transpose_rank.glsl"

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer RowOffsets { int row_offsets[]; };
layout(std430, binding = 1) readonly buffer Columns { int columns[]; };
layout(std430, binding = 2) buffer Counts { uint counts[]; };

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
            if (column >= 0 && last) counts[uint(column) * pc.tiles + tile] += rank + 1u;
            subgroupMemoryBarrierBuffer();
            subgroupBarrier();
        }
    }
}
