#version 450
//! variant f32 -DVEC=1 -DDENSE_T=float
//! variant f16 -DVEC=1 -DVALUE_F16 -DDENSE_T=float
//! variant f32b16 -DVEC=1 -DDENSE_T=float16_t -DDENSE_16
//! variant f16b16 -DVEC=1 -DVALUE_F16 -DDENSE_T=float16_t -DDENSE_16
//! variant bf16 -DVEC=1 -DVALUE_BF16 -DDENSE_T=float
//! variant f32bbf16 -DVEC=1 -DDENSE_T=uint16_t -DDENSE_16 -DDENSE_BF16
//! variant bf16bbf16 -DVEC=1 -DVALUE_BF16 -DDENSE_T=uint16_t -DDENSE_16 -DDENSE_BF16
// Block-CSR SpMM, scalar: C = alpha * A * B + beta * C, A [block_rows * BS, block_cols * BS]
// with square BS x BS blocks (16 or 32, row-major each; values f32, f16 or bf16), B
// [block_cols * BS, n] row-major f32, f16 or bf16 (DENSE_T), C row-major f32, fp32 accumulation.
// bf16 is read as 16-bit words and widened exactly (Shaders/sparse/common.glsl).
//
// A workgroup of 256 invocations (16 x 16) owns a block row x 64 output columns. For each block
// of the block row it stages the block and the matching BS x 64 slab of B in shared memory,
// then each invocation accumulates BS / 16 rows x 4 columns. Block rows are walked grid-stride
// along y (uniformly per workgroup: the barriers are reached by all).
#include "sparse/common.glsl"
#ifdef DENSE_16
#extension GL_EXT_shader_16bit_storage : require
#endif

layout(local_size_x = 256) in;
layout(constant_id = 0) const uint BS = 32;
const uint TILE_N = 64;
const uint MAX_BS = 32;

layout(std430, binding = 0) readonly buffer BlockOffsets { int block_offsets[]; };
layout(std430, binding = 1) readonly buffer BlockColumns { int block_columns[]; };
layout(std430, binding = 2) readonly buffer Values { VALUE_T values[]; };
layout(std430, binding = 3) readonly buffer B { DENSE_T b[]; };
layout(std430, binding = 4) buffer C { float c[]; };

layout(push_constant) uniform Push {
    uint block_rows;
    uint block_cols;
    uint n;
    uint blocks;
    float alpha;
    float beta;
} pc;

shared float tile_a[MAX_BS * MAX_BS];
shared float tile_b[MAX_BS * TILE_N];

void main() {
    const uint id = gl_LocalInvocationID.x;
    const uint tx = id % 16u;
    const uint ty = id / 16u;
    const uint col0 = gl_WorkGroupID.x * TILE_N;
    const uint row_steps = BS / 16u;

    for (uint br = gl_WorkGroupID.y; br < pc.block_rows; br += gl_NumWorkGroups.y) {
        float acc[2][4];
        for (uint i = 0u; i < 2u; ++i) {
            for (uint q = 0u; q < 4u; ++q) { acc[i][q] = 0.0; }
        }
        uint start, end;
        ROW_RANGE(block_offsets, br, pc.blocks, start, end);
        for (uint blk = start; blk < end; ++blk) {
            const uint bc = CLAMP_INDEX(block_columns[blk], pc.block_cols);
            for (uint i = id; i < BS * BS; i += 256u) {
                tile_a[i] = LOAD_VALUE(values[blk * BS * BS + i]);
            }
            for (uint i = id; i < BS * TILE_N; i += 256u) {
                const uint r = i / TILE_N;
                const uint col = col0 + i % TILE_N;
                tile_b[i] = col < pc.n ? LOAD_DENSE(b[(bc * BS + r) * pc.n + col]) : 0.0;
            }
            barrier();
            for (uint kk = 0u; kk < BS; ++kk) {
                for (uint i = 0u; i < row_steps; ++i) {
                    const float a = tile_a[(ty + 16u * i) * BS + kk];
                    for (uint q = 0u; q < 4u; ++q) {
                        acc[i][q] += a * tile_b[kk * TILE_N + tx + 16u * q];
                    }
                }
            }
            barrier();
        }
        for (uint i = 0u; i < row_steps; ++i) {
            const uint row = br * BS + ty + 16u * i;
            for (uint q = 0u; q < 4u; ++q) {
                const uint col = col0 + tx + 16u * q;
                if (col < pc.n) {
                    const uint at = row * pc.n + col;
                    float result = pc.alpha * acc[i][q];
                    if (pc.beta != 0.0) {
                        result += pc.beta * c[at];
                    }
                    c[at] = result;
                }
            }
        }
    }
}
