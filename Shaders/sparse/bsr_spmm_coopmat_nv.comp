#version 450
//! requires GL_NV_cooperative_matrix
//! variant f32 -DVEC=1
//! variant f16 -DVEC=1 -DVALUE_F16
// Block-CSR SpMM with NV cooperative matrices: the same product as bsr_spmm.comp, with the
// block and the slab of B rounded to f16 in shared memory and multiplied by MM x NN x KK
// matrix-multiply-accumulate ops (f16 inputs, f32 accumulators).
//
// A workgroup of (BS / MM) * (TILE_N / NN) subgroups owns a block row x TILE_N columns; each
// subgroup owns one MM x NN tile of it and keeps its accumulator across the blocks. The
// result goes through shared memory so that alpha, beta and the column bound are applied
// per element.
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_KHR_shader_subgroup_basic : require
#include "sparse/common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint BS = 32;
layout(constant_id = 2) const uint MM = 16;
layout(constant_id = 3) const uint NN = 16;
layout(constant_id = 4) const uint KK = 16;
layout(constant_id = 5) const uint TILE_N = 64;
const uint MAX_BS = 32;
const uint MAX_TILE_N = 64;

layout(std430, binding = 0) readonly buffer BlockOffsets { int block_offsets[]; };
layout(std430, binding = 1) readonly buffer BlockColumns { int block_columns[]; };
layout(std430, binding = 2) readonly buffer Values { VALUE_T values[]; };
layout(std430, binding = 3) readonly buffer B { float b[]; };
layout(std430, binding = 4) buffer C { float c[]; };

layout(push_constant) uniform Push {
    uint block_rows;
    uint block_cols;
    uint n;
    uint blocks;
    float alpha;
    float beta;
} pc;

shared float16_t tile_a[MAX_BS * MAX_BS];
shared float16_t tile_b[MAX_BS * MAX_TILE_N];
shared float tile_c[MAX_BS * MAX_TILE_N];

void main() {
    const uint id = gl_LocalInvocationID.x;
    const uint threads = gl_WorkGroupSize.x;
    const uint tiles_n = TILE_N / NN;
    const uint tile_m = gl_SubgroupID / tiles_n;
    const uint tile_n = gl_SubgroupID % tiles_n;
    const uint col0 = gl_WorkGroupID.x * TILE_N;

    for (uint br = gl_WorkGroupID.y; br < pc.block_rows; br += gl_NumWorkGroups.y) {
        fcoopmatNV<32, gl_ScopeSubgroup, MM, NN> acc = fcoopmatNV<32, gl_ScopeSubgroup, MM, NN>(0.0);
        uint start, end;
        ROW_RANGE(block_offsets, br, pc.blocks, start, end);
        for (uint blk = start; blk < end; ++blk) {
            const uint bc = CLAMP_INDEX(block_columns[blk], pc.block_cols);
            for (uint i = id; i < BS * BS; i += threads) {
                tile_a[i] = float16_t(values[blk * BS * BS + i]);
            }
            for (uint i = id; i < BS * TILE_N; i += threads) {
                const uint r = i / TILE_N;
                const uint col = col0 + i % TILE_N;
                tile_b[i] = float16_t(col < pc.n ? b[(bc * BS + r) * pc.n + col] : 0.0);
            }
            barrier();
            for (uint kk = 0u; kk < BS; kk += KK) {
                fcoopmatNV<16, gl_ScopeSubgroup, MM, KK> a;
                fcoopmatNV<16, gl_ScopeSubgroup, KK, NN> m;
                coopMatLoadNV(a, tile_a, tile_m * MM * BS + kk, BS, false);
                coopMatLoadNV(m, tile_b, kk * TILE_N + tile_n * NN, TILE_N, false);
                acc = coopMatMulAddNV(a, m, acc);
            }
            barrier();
        }
        coopMatStoreNV(acc, tile_c, tile_m * MM * TILE_N + tile_n * NN, TILE_N, false);
        barrier();
        for (uint i = id; i < BS * TILE_N; i += threads) {
            const uint row = br * BS + i / TILE_N;
            const uint col = col0 + i % TILE_N;
            if (col < pc.n) {
                const uint at = row * pc.n + col;
                float result = pc.alpha * tile_c[i];
                if (pc.beta != 0.0) {
                    result += pc.beta * c[at];
                }
                c[at] = result;
            }
        }
        barrier();
    }
}
