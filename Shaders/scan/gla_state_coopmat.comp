#version 450
//! requires GL_KHR_cooperative_matrix
//! variant f16 -DMAT_T=float16_t
//! variant f16_cpu -DMAT_T=float16_t -DROLLED
// Gated linear attention, per-chunk state contributions on KHR cooperative matrices (the
// contract of gla_state.comp; one workgroup per (b, h, chunk)):
//   MODE 0 (forward):  dS_c = Xf^T v with Xf[s][i] = k_s[i] exp(gcum_last[i] - gcum_s[i]),
//                      into slot c + 1 of the boundary states;
//   MODE 1 (backward): dG_c = Xb^T dO with Xb[t][i] = q_t[i] exp(gcum_t[i]), into slot c.
// The decayed rows are at most the inputs, but exp(gcum_t) can sink below f16's range (strong
// decay, and per key dimension with per-key gates): in each staged block of RB rows, column i
// is multiplied by a power of two sigma_i that brings its largest entry near 2^13. Row i of the
// result is column i's, so the block's product is multiplied back by an M x M tile whose row i'
// holds 1 / sigma_(i0 + i'). Each subgroup owns MM x MM tiles of the Dk x Dv result, adds a row
// block's product to the tile's fp32 partial kept in the states buffer itself, and writes it
// back (no other subgroup touches that tile).
#extension GL_KHR_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_shader_16bit_storage : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_EXT_control_flow_attributes : require
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint GATE = 2;   // 0: none, 1: per head, 2: per key dimension
layout(constant_id = 2) const uint MODE = 0;
layout(constant_id = 3) const uint RB = 32;    // rows staged at a time (a multiple of MM)
layout(constant_id = 4) const uint DK = 64;
layout(constant_id = 5) const uint DV = 64;
layout(constant_id = 6) const uint MM = 8;
layout(constant_id = 7) const uint SG = 8;
#define GLA_TABLE_BINDING 4
#include "common/scan_gla.glsl"
#include "scan/gla_coopmat.glsl"

layout(std430, binding = 0) readonly buffer X { MAT_T x[]; };   // k (forward) or q (backward)
layout(std430, binding = 1) readonly buffer Y { MAT_T y[]; };   // v (forward) or dO (backward)
layout(std430, binding = 2) readonly buffer GC { float gcum[]; };
layout(std430, binding = 3) buffer St { float states[]; };

// GLAPlan.coopmatStateSharedBytes mirrors these declarations.
shared MAT_T sX[RB * KS];
shared MAT_T sY[RB * VS];
shared uint sColMax[DK];               // per column of the block: the largest |x| (float bits)
shared float sUnscale[DK * MM];        // row i: 1 / sigma_i, MM times

float gc(uint b, uint t, uint h, uint i) { return GATE != 0u ? gcum[gate_index(b, t, h, i)] : 0.0; }

// sigma_i: the power of two bringing column i's largest entry near 2^13 (1 for an all-zero
// column).
float column_scale(uint i) {
    const float m = uintBitsToFloat(sColMax[i]);
    if (!(m > 0.0) || isinf(m)) return 1.0;
    int e;
    frexp(m, e);
    return exp2(float(clamp(14 - e, -100, 100)));
}

// Row t (of the chunk), element i of the decayed x rows.
float decayed(uint b, uint h, uint t0, uint last, uint rows, uint t, uint i) {
    if (t >= rows) return 0.0;
    float value = float(x[qk_index(b, t0 + t, h, i)]);
    if (GATE != 0u) value *= exp(MODE == 0u ? gc(b, last, h, i) - gc(b, t0 + t, h, i) : gc(b, t0 + t, h, i));
    return value;
}

void main() {
    const uint wg = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
    const uint c = wg % pc.NC;
    const uint bh = wg / pc.NC;
    if (bh >= pc.B * pc.H) return;  // uniform
    const uint b = bh / pc.H, h = bh % pc.H;
    const uint rows = chunk_len(c);
    const uint t0 = chunk_t0(c);
    const uint last = t0 + rows - 1u;
    const uint sub = gl_SubgroupID;
    const uint lid = gl_LocalInvocationIndex;
    const uint slot = MODE == 0u ? chunk_slot(c) + 1u : chunk_slot(c);
    const uint tiles = (DK / MM) * (DV / MM);

    for (uint rb0 = 0u; rb0 < rows; rb0 += RB) {
        memoryBarrierBuffer();  // this subgroup reads its tiles back (coopmat stores spread over lanes)
        barrier();              // the previous row block is consumed
        for (uint i = lid; i < DK; i += WG) sColMax[i] = 0u;
        barrier();
        for (uint e = lid; e < RB * DK; e += WG) {
            atomicMax(sColMax[e % DK], floatBitsToUint(abs(decayed(b, h, t0, last, rows, rb0 + e / DK, e % DK))));
        }
        barrier();
        for (uint e = lid; e < DK * MM; e += WG) sUnscale[e] = 1.0 / column_scale(e / MM);
        for (uint e = lid; e < RB * DK; e += WG) {
            const uint r = e / DK, i = e % DK;
            sX[r * KS + i] = MAT_T(decayed(b, h, t0, last, rows, rb0 + r, i) * column_scale(i));
        }
        for (uint e = lid; e < RB * DV; e += WG) {
            const uint r = e / DV, j = e % DV, t = rb0 + r;
            sY[r * VS + j] = t < rows ? y[vo_index(b, t0 + t, h, j)] : MAT_T(0.0);
        }
        barrier();
        for (uint tile = sub; tile < tiles; tile += NS) {
            const uint i0 = (tile / (DV / MM)) * MM, j0 = (tile % (DV / MM)) * MM;
            const uint at = state_index(b, h, slot, i0, j0);
            MAT_C acc = MAT_C(0.0);
            if (rb0 > 0u) coopMatLoad(acc, states, at, DV, gl_CooperativeMatrixLayoutRowMajor);
            MAT_C block = MAT_C(0.0);
            COOP_LOOP for (uint kk = 0u; kk < RB / MM; ++kk) {
                MAT_A xa;
                MAT_B yb;
                coopMatLoad(xa, sX, kk * MM * KS + i0, KS, gl_CooperativeMatrixLayoutColumnMajor);
                coopMatLoad(yb, sY, kk * MM * VS + j0, VS, gl_CooperativeMatrixLayoutRowMajor);
                block = coopMatMulAdd(xa, yb, block);
            }
            MAT_C unscale;
            coopMatLoad(unscale, sUnscale, i0 * MM, MM, gl_CooperativeMatrixLayoutRowMajor);
            coopMatStore(acc + block * unscale, states, at, DV, gl_CooperativeMatrixLayoutRowMajor);
        }
    }
}
