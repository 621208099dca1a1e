#version 450
//! requires GL_KHR_cooperative_matrix
//! variant f16 -DMAT_T=float16_t
//! variant f16_cpu -DMAT_T=float16_t -DROLLED
// The WY form's products of one chunk on KHR cooperative matrices (prep.comp's U and Wk, after
// prep.comp has made T with PRODUCTS = 0; one workgroup per (chunk, head)):
//   U = T diag(beta) V,   Wk = T diag(beta exp(g)) K.
// The chunk's CH rows are cut into blocks of MM rows; subgroup s owns the row blocks s, s + NS,
// ... For each block pair S <= T the tiles T_TS diag(beta_S) and T_TS diag(beta_S exp(g_S))
// (fp32) are rounded to f16 after a power of two per tile and multiply V_S and K_S (f16 inputs,
// exact) into fp32 accumulators. Rounding: T diag(.) is fp32 rounded to f16 (relative 2^-11,
// 2^-12 on average), so U and Wk (and the maps, states and outputs after them) carry a few f16
// units of relative error where the scalar kernel carries fp32's.
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

layout(std430, binding = 1) readonly buffer K { MAT_T k[]; };
layout(std430, binding = 2) readonly buffer V { MAT_T v[]; };
layout(std430, binding = 3) readonly buffer Beta { float beta[]; };
layout(std430, binding = 4) readonly buffer GCum { float gcum[]; };
layout(std430, binding = 5) readonly buffer TIn { float t_in[]; };         // [chunks, H, C, C]
layout(std430, binding = 6) writeonly buffer UOut { float u_out[]; };      // [T, H, Dv]
layout(std430, binding = 7) writeonly buffer WkOut { float wk_out[]; };    // [T, H, Dk]

const uint NB = CH / MM;                       // row blocks
const uint TB = NB / NS;                       // row blocks per subgroup
// DeltaRuleCoopmat.wySharedBytes mirrors these declarations.
shared MAT_T sV[CH * VS];                      // the chunk's v rows
shared MAT_T sK[CH * KS];                      // the chunk's k rows
shared float sA[NS * MM * AS];                 // per subgroup: an fp32 tile
shared MAT_T sP[NS * MM * PS];                 // per subgroup: T diag(beta), scaled
shared MAT_T sQ[NS * MM * PS];                 // per subgroup: T diag(beta exp(g)), scaled
shared float sb[CH];                           // beta
shared float se[CH];                           // beta exp(g)

void main() {
    const uint wg = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
    if (wg >= pc.chunks * pc.H) return;  // uniform
    const uint c = wg / pc.H, h = wg % pc.H;
    const uvec4 entry = chunk_table[c];
    const uint r0 = entry.x, n = entry.y;
    const uint sub = gl_SubgroupID, lane = gl_SubgroupInvocationID, lid = gl_LocalInvocationIndex;
    const uint tile = sub * MM;
    const uint tBase = (c * pc.H + h) * pc.C * pc.C;

    for (uint i = lid; i < CH; i += WG) {
        const float b = i < n ? beta[gate_index(r0 + i, h)] : 0.0;
        sb[i] = b;
        se[i] = i < n ? b * exp(gcum[gate_index(r0 + i, h)]) : 0.0;
    }
    for (uint e = lid; e < CH * DV; e += WG) {
        const uint r = e / DV, x = e % DV;
        sV[r * VS + x] = r < n ? v[vo_index(r0 + r, h, x)] : MAT_T(0.0);
    }
    for (uint e = lid; e < CH * DK; e += WG) {
        const uint r = e / DK, d = e % DK;
        sK[r * KS + d] = r < n ? k[qk_index(r0 + r, h, d)] : MAT_T(0.0);
    }
    barrier();

    for (uint tb = 0u; tb < TB; ++tb) {
        const uint tblock = tb * NS + sub, t0 = tblock * MM;
        MAT_C accU[DV / MM], accW[DK / MM];
        for (uint x = 0u; x < DV / MM; ++x) accU[x] = MAT_C(0.0);
        for (uint x = 0u; x < DK / MM; ++x) accW[x] = MAT_C(0.0);
        for (uint sblock = 0u; sblock < (UNIFORM_MATRIX_OPS ? NB : tblock + 1u); ++sblock) {
            const uint s0 = sblock * MM;
            // T's tile (lower triangle, rows and columns of the chunk), times the column factors.
            float u_max = 0.0, w_max = 0.0;
            for (uint e = lane; e < MM * MM; e += SG) {
                const uint rr = e / MM, cc = e % MM, t = t0 + rr, s = s0 + cc;
                const float x = t < n && s <= t ? t_in[tBase + t * pc.C + s] : 0.0;
                sA[(tile + rr) * AS + cc] = x;
                u_max = max(u_max, abs(x * sb[s]));
                w_max = max(w_max, abs(x * se[s]));
            }
            const float u_scale = tile_scale(u_max), w_scale = tile_scale(w_max);
            for (uint e = lane; e < MM * MM; e += SG) {
                const uint rr = e / MM, cc = e % MM, s = s0 + cc;
                const float x = sA[(tile + rr) * AS + cc];
                sP[(tile + rr) * PS + cc] = MAT_T(x * sb[s] * u_scale);
                sQ[(tile + rr) * PS + cc] = MAT_T(x * se[s] * w_scale);
            }
            subgroupMemoryBarrierShared();
            subgroupBarrier();
            MAT_A pa, qa;
            coopMatLoad(pa, sP, tile * PS, PS, gl_CooperativeMatrixLayoutRowMajor);
            coopMatLoad(qa, sQ, tile * PS, PS, gl_CooperativeMatrixLayoutRowMajor);
            const float u_unscale = 1.0 / u_scale, w_unscale = 1.0 / w_scale;
            COOP_LOOP for (uint nb = 0u; nb < DV / MM; ++nb) {
                MAT_B vb;
                coopMatLoad(vb, sV, s0 * VS + nb * MM, VS, gl_CooperativeMatrixLayoutRowMajor);
                MAT_C t = coopMatMulAdd(pa, vb, MAT_C(0.0));
                accU[nb] = accU[nb] + t * u_unscale;
            }
            COOP_LOOP for (uint db = 0u; db < DK / MM; ++db) {
                MAT_B kb;
                coopMatLoad(kb, sK, s0 * KS + db * MM, KS, gl_CooperativeMatrixLayoutRowMajor);
                MAT_C t = coopMatMulAdd(qa, kb, MAT_C(0.0));
                accW[db] = accW[db] + t * w_unscale;
            }
            subgroupMemoryBarrierShared();
            subgroupBarrier();
        }
        // U and Wk, through the subgroup's fp32 tile.
        COOP_LOOP for (uint nb = 0u; nb < DV / MM; ++nb) {
            coopMatStore(accU[nb], sA, tile * AS, AS, gl_CooperativeMatrixLayoutRowMajor);
            subgroupMemoryBarrierShared();
            subgroupBarrier();
            for (uint e = lane; e < MM * MM; e += SG) {
                const uint rr = e / MM, cc = e % MM, t = t0 + rr;
                if (t < n) u_out[vo_index(r0 + t, h, nb * MM + cc)] = sA[(tile + rr) * AS + cc];
            }
            subgroupMemoryBarrierShared();
            subgroupBarrier();
        }
        COOP_LOOP for (uint db = 0u; db < DK / MM; ++db) {
            coopMatStore(accW[db], sA, tile * AS, AS, gl_CooperativeMatrixLayoutRowMajor);
            subgroupMemoryBarrierShared();
            subgroupBarrier();
            for (uint e = lane; e < MM * MM; e += SG) {
                const uint rr = e / MM, cc = e % MM, t = t0 + rr;
                if (t < n) wk_out[qk_index(r0 + t, h, db * MM + cc)] = sA[(tile + rr) * AS + cc];
            }
            subgroupMemoryBarrierShared();
            subgroupBarrier();
        }
    }
}
