#version 450
//! requires GL_KHR_cooperative_matrix
//! variant f16 -DMAT_T=float16_t
// Block-CSR SpMM on KHR cooperative matrices: the product of bsr_spmm.comp with 16-bit block
// values and a 16-bit dense B (MAT_T, never rounded here: the caller chose 16-bit operands),
// fp32 accumulation, C fp32.
//
// A workgroup of (BS / MM) * (TILE_N / NN) subgroups owns a block row x TILE_N columns; each
// subgroup owns one MM x NN tile of it and keeps its accumulator across the row's blocks. For
// each block the workgroup stages the block and the BS x TILE_N slab of B (zeros past n) in
// shared memory. The result passes through shared memory so that alpha, beta and the column
// bound are applied per element. Block rows are walked grid-stride along y, uniformly per
// workgroup.
#extension GL_KHR_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_shader_16bit_storage : require
#extension GL_KHR_shader_subgroup_basic : require
#include "sparse/common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint BS = 32;
layout(constant_id = 2) const uint MM = 8;
layout(constant_id = 3) const uint NN = 8;
layout(constant_id = 4) const uint KK = 8;
layout(constant_id = 5) const uint TILE_N = 64;

layout(std430, binding = 0) readonly buffer BlockOffsets { int block_offsets[]; };
layout(std430, binding = 1) readonly buffer BlockColumns { int block_columns[]; };
layout(std430, binding = 2) readonly buffer Values { MAT_T values[]; };
layout(std430, binding = 3) readonly buffer B { MAT_T b[]; };
layout(std430, binding = 4) buffer C { float c[]; };

layout(push_constant) uniform Push {
    uint block_rows;
    uint block_cols;
    uint n;
    uint blocks;
    float alpha;
    float beta;
} pc;

shared MAT_T tile_a[BS * BS];
shared MAT_T tile_b[BS * TILE_N];
shared float tile_c[BS * TILE_N];

void main() {
    const uint id = gl_LocalInvocationID.x;
    const uint threads = gl_WorkGroupSize.x;
    const uint tiles_n = TILE_N / NN;
    const uint tile_m = gl_SubgroupID / tiles_n;
    const uint tile_n = gl_SubgroupID % tiles_n;
    const uint col0 = gl_WorkGroupID.x * TILE_N;

    for (uint br = gl_WorkGroupID.y; br < pc.block_rows; br += gl_NumWorkGroups.y) {
        coopmat<float, gl_ScopeSubgroup, MM, NN, gl_MatrixUseAccumulator> acc =
            coopmat<float, gl_ScopeSubgroup, MM, NN, gl_MatrixUseAccumulator>(0.0);
        uint start, end;
        ROW_RANGE(block_offsets, br, pc.blocks, start, end);
        for (uint blk = start; blk < end; ++blk) {
            const uint bc = CLAMP_INDEX(block_columns[blk], pc.block_cols);
            for (uint i = id; i < BS * BS; i += threads) tile_a[i] = values[blk * BS * BS + i];
            for (uint i = id; i < BS * TILE_N; i += threads) {
                const uint r = i / TILE_N, col = col0 + i % TILE_N;
                tile_b[i] = col < pc.n ? b[(bc * BS + r) * pc.n + col] : MAT_T(0.0);
            }
            barrier();
            for (uint kk = 0u; kk < BS; kk += KK) {
                coopmat<MAT_T, gl_ScopeSubgroup, MM, KK, gl_MatrixUseA> a;
                coopmat<MAT_T, gl_ScopeSubgroup, KK, NN, gl_MatrixUseB> m;
                coopMatLoad(a, tile_a, tile_m * MM * BS + kk, BS, gl_CooperativeMatrixLayoutRowMajor);
                coopMatLoad(m, tile_b, kk * TILE_N + tile_n * NN, TILE_N, gl_CooperativeMatrixLayoutRowMajor);
                acc = coopMatMulAdd(a, m, acc);
            }
            barrier();
        }
        coopMatStore(acc, tile_c, tile_m * MM * TILE_N + tile_n * NN, TILE_N, gl_CooperativeMatrixLayoutRowMajor);
        barrier();
        for (uint i = id; i < BS * TILE_N; i += threads) {
            const uint row = br * BS + i / TILE_N, col = col0 + i % TILE_N;
            if (col < pc.n) {
                const uint at = row * pc.n + col;
                float result = pc.alpha * tile_c[i];
                if (pc.beta != 0.0) result += pc.beta * c[at];
                c[at] = result;
            }
        }
        barrier();
    }
}
