#version 450
//! requires GL_KHR_cooperative_matrix
//! variant f16 -DMAT_T=float16_t
//! variant f16_cpu -DMAT_T=float16_t -DROLLED
// The backward's C x C products over the head dimensions on KHR cooperative matrices, for
// grads.comp (GRAM = 0) to read; one workgroup per (chunk, head). Raw products, no decays:
//   0: Q K^T,   1: dO W^T,   2: dW V^T,   3: dWk K^T,   4: K K^T
// into gram [chunks, H, 5, C, C] (row i, column j of block pairs j's block <= i's). Subgroup s
// owns the row blocks s, s + NS, ... of MM rows; for each block pair and product it stages the
// two MM-row tiles (the right one loaded column-major as the transpose), f16 inputs exact and
// the fp32 W, dW, dWk rounded to f16 after a power of two per tile.
#extension GL_KHR_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_shader_16bit_storage : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_EXT_control_flow_attributes : require
layout(local_size_x_id = 0) in;
layout(constant_id = 2) const uint CH = 32;    // rows per chunk (a multiple of MM)
layout(constant_id = 3) const uint DK = 64;
layout(constant_id = 4) const uint DV = 64;
layout(constant_id = 5) const uint MM = 8;     // square cooperative-matrix shape MM = NN = KK
layout(constant_id = 6) const uint SG = 8;     // subgroup size
// As in output_coopmat.comp: every subgroup runs as many matrix operations on CPU devices.
layout(constant_id = 7) const bool UNIFORM_MATRIX_OPS = false;
#include "delta/delta.glsl"
#include "delta/delta_coopmat.glsl"

layout(std430, binding = 1) readonly buffer Q { MAT_T q[]; };
layout(std430, binding = 2) readonly buffer K { MAT_T k[]; };
layout(std430, binding = 3) readonly buffer V { MAT_T v[]; };
layout(std430, binding = 4) readonly buffer DO { MAT_T dout[]; };
layout(std430, binding = 5) readonly buffer W { float w[]; };
layout(std430, binding = 6) readonly buffer DW { float dw[]; };
layout(std430, binding = 7) readonly buffer DWk { float dwk[]; };
layout(std430, binding = 8) writeonly buffer Gram { float gram[]; };   // [chunks, H, 5, C, C]

const uint NB = CH / MM;                       // row blocks
const uint TB = NB / NS;                       // row blocks per subgroup
const uint DS = (DK > DV ? DK : DV) + 8u;             // 16-bit row stride of the staged tiles
// DeltaRuleCoopmat.gramSharedBytes mirrors these declarations.
shared MAT_T sX[NS * MM * DS];                 // per subgroup: the left rows
shared MAT_T sY[NS * MM * DS];                 // per subgroup: the right rows
shared float sA[NS * MM * AS];                 // per subgroup: an fp32 tile

// Operand `which` (0 q, 1 k, 2 v, 3 dO, 4 W, 5 dW, 6 dWk) of row `row`, element `d`, as fp32.
float operand(uint which, uint row, uint h, uint d) {
    switch (which) {
    case 0u: return float(q[qk_index(row, h, d)]);
    case 1u: return float(k[qk_index(row, h, d)]);
    case 2u: return float(v[vo_index(row, h, d)]);
    case 3u: return float(dout[vo_index(row, h, d)]);
    case 4u: return w[vo_index(row, h, d)];
    case 5u: return dw[vo_index(row, h, d)];
    default: return dwk[qk_index(row, h, d)];
    }
}

// Stages rows b0 ... b0 + MM - 1 of operand `which` (width `width`) into this subgroup's
// `left` (sX) or right (sY) tile, scaled to f16 by a power of two; returns the inverse scale.
float stage(bool left, uint which, uint width, uint r0, uint n, uint h, uint b0, uint tile) {
    float m = 0.0;
    const bool wide = which >= 4u;  // fp32 operands are scaled; f16 inputs are exact
    if (wide) {
        for (uint e = gl_SubgroupInvocationID; e < MM * width; e += SG) {
            const uint rr = e / width, d = e % width, t = b0 + rr;
            if (t < n) m = max(m, abs(operand(which, r0 + t, h, d)));
        }
    }
    const float scale = wide ? tile_scale(m) : 1.0;
    for (uint e = gl_SubgroupInvocationID; e < MM * width; e += SG) {
        const uint rr = e / width, d = e % width, t = b0 + rr;
        const MAT_T x = MAT_T(t < n ? operand(which, r0 + t, h, d) * scale : 0.0);
        if (left) sX[(tile + rr) * DS + d] = x; else sY[(tile + rr) * DS + d] = x;
    }
    return 1.0 / scale;
}

void main() {
    const uint wg = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
    if (wg >= pc.chunks * pc.H) return;  // uniform
    const uint c = wg / pc.H, h = wg % pc.H;
    const uvec4 entry = chunk_table[c];
    const uint r0 = entry.x, n = entry.y;
    const uint sub = gl_SubgroupID, tile = sub * MM;
    const uint base = (c * pc.H + h) * 5u * CH * CH;
    // (left operand, right operand, width) of each product.
    const uvec3 products[5] = uvec3[5](uvec3(0u, 1u, DK), uvec3(3u, 4u, DV), uvec3(5u, 2u, DV), uvec3(6u, 1u, DK), uvec3(1u, 1u, DK));

    for (uint tb = 0u; tb < TB; ++tb) {
        const uint tblock = tb * NS + sub, t0 = tblock * MM;
        for (uint sblock = 0u; sblock < (UNIFORM_MATRIX_OPS ? NB : tblock + 1u); ++sblock) {
            const uint s0 = sblock * MM;
            for (uint pi = 0u; pi < 5u; ++pi) {
                const uvec3 p = products[pi];
                const float unscale = stage(true, p.x, p.z, r0, n, h, t0, tile) * stage(false, p.y, p.z, r0, n, h, s0, tile);
                subgroupMemoryBarrierShared();
                subgroupBarrier();
                MAT_C a = MAT_C(0.0);
                COOP_LOOP for (uint kq = 0u; kq < p.z / MM; ++kq) {
                    MAT_A xa;
                    MAT_B yb;
                    coopMatLoad(xa, sX, tile * DS + kq * MM, DS, gl_CooperativeMatrixLayoutRowMajor);
                    coopMatLoad(yb, sY, tile * DS + kq * MM, DS, gl_CooperativeMatrixLayoutColumnMajor);
                    a = coopMatMulAdd(xa, yb, a);
                }
                coopMatStore(a, sA, tile * AS, AS, gl_CooperativeMatrixLayoutRowMajor);
                subgroupMemoryBarrierShared();
                subgroupBarrier();
                for (uint e = gl_SubgroupInvocationID; e < MM * MM; e += SG) {
                    const uint rr = e / MM, cc = e % MM;
                    gram[base + pi * CH * CH + (t0 + rr) * CH + s0 + cc] = sA[(tile + rr) * AS + cc] * unscale;
                }
                subgroupMemoryBarrierShared();
                subgroupBarrier();
            }
        }
    }
}
