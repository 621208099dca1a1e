#version 450
//! requires GL_KHR_cooperative_matrix
//! variant f16 -DMAT_T=float16_t
//! variant f16_cpu -DMAT_T=float16_t -DROLLED
// The backward's products of one chunk with the states on KHR cooperative matrices, before
// grads.comp (STATE_PRODUCTS = 0) forms the rest; one workgroup per (chunk, head). With S_0 the
// state before the chunk, dS_1 the gradient of the state after it and g_n the last row's g:
//   dW    = R + diag(exp(g_n - g)) K dS_1       (in place over R)
//   dWk   = -dW S_0^T
//   fromS = diag(exp(g_n - g)) W dS_1^T        (into grads.comp's pk scratch)
//   inter = diag(exp(g)) dO S_0^T              (into grads.comp's pq scratch)
// Subgroup s owns the row blocks s, s + NS, ... of MM rows. S_0 and dS_1 are staged MM rows
// (of Dk) at a time as f16, each multiplied by one power of two for the whole state; their
// transposes are B operands loaded column-major. K and dO are f16 inputs (exact); dW and W are
// fp32, rounded to f16 after a power of two per row block. Rounding adds a few f16 units of
// relative error, as in output_coopmat.comp.
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
#include "delta/delta.glsl"
#include "delta/delta_coopmat.glsl"

layout(std430, binding = 1) readonly buffer K { MAT_T k[]; };
layout(std430, binding = 2) readonly buffer DO { MAT_T dout[]; };
layout(std430, binding = 3) readonly buffer GCum { float gcum[]; };
layout(std430, binding = 4) readonly buffer S { float states[]; };
layout(std430, binding = 5) readonly buffer DS { float dstates[]; };
layout(std430, binding = 6) readonly buffer W { float w[]; };
layout(std430, binding = 7) buffer DW { float dw[]; };                 // R in, dW out: [T, H, Dv]
layout(std430, binding = 8) writeonly buffer DWk { float dwk[]; };     // [T, H, Dk]
layout(std430, binding = 9) writeonly buffer FS { float from_s[]; };   // [T, H, Dk]
layout(std430, binding = 10) writeonly buffer IN { float inter[]; };   // [T, H, Dk]

const uint TB = CH / MM / NS;                  // row blocks per subgroup
// DeltaRuleCoopmat.gradsStateSharedBytes mirrors these declarations.
shared MAT_T sS0[MM * VS];                     // MM rows of S_0, scaled
shared MAT_T sS1[MM * VS];                     // MM rows of dS_1, scaled
shared MAT_T sK[NS * MM * KS];                 // per subgroup: k rows
shared MAT_T sDW[NS * MM * VS];                // per subgroup: dW rows, scaled
shared MAT_T sWr[NS * MM * VS];                // per subgroup: W rows, scaled
shared MAT_T sDO[NS * MM * VS];                // per subgroup: dO rows
shared float sA[NS * MM * AS];                 // per subgroup: an fp32 tile
shared float sg[CH];
shared float sMax[2 * NS];

void main() {
    const uint wg = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
    if (wg >= pc.chunks * pc.H) return;  // uniform
    const uint c = wg / pc.H, h = wg % pc.H;
    const uvec4 entry = chunk_table[c];
    const uint r0 = entry.x, n = entry.y, slot = entry.w;
    const uint sub = gl_SubgroupID, lane = gl_SubgroupInvocationID, lid = gl_LocalInvocationIndex;
    const uint tile = sub * MM;

    for (uint i = lid; i < CH; i += WG) sg[i] = i < n ? gcum[gate_index(r0 + i, h)] : 0.0;
    // One power of two for each whole state.
    float m0 = 0.0, m1 = 0.0;
    for (uint e = lid; e < DK * DV; e += WG) {
        m0 = max(m0, abs(states[state_index(slot, h, e / DV, e % DV)]));
        m1 = max(m1, abs(dstates[state_index(slot + 1u, h, e / DV, e % DV)]));
    }
    m0 = subgroupMax(m0);
    m1 = subgroupMax(m1);
    if (lane == 0u) {
        sMax[sub] = m0;
        sMax[NS + sub] = m1;
    }
    barrier();
    float max0 = 0.0, max1 = 0.0;
    for (uint x = 0u; x < NS; ++x) {
        max0 = max(max0, sMax[x]);
        max1 = max(max1, sMax[NS + x]);
    }
    const float s0_scale = pow2_scale(max0), s1_scale = pow2_scale(max1);
    const float s0_unscale = 1.0 / s0_scale, s1_unscale = 1.0 / s1_scale;
    const float gn = sg[n - 1u];

    for (uint tb = 0u; tb < TB; ++tb) {
        const uint t0 = (tb * NS + sub) * MM;
        float wr_max = 0.0;
        for (uint e = lane; e < MM * DK; e += SG) {
            const uint rr = e / DK, d = e % DK, t = t0 + rr;
            sK[(tile + rr) * KS + d] = t < n ? k[qk_index(r0 + t, h, d)] : MAT_T(0.0);
        }
        for (uint e = lane; e < MM * DV; e += SG) {
            const uint rr = e / DV, x = e % DV, t = t0 + rr;
            sDO[(tile + rr) * VS + x] = t < n ? dout[vo_index(r0 + t, h, x)] : MAT_T(0.0);
            if (t < n) wr_max = max(wr_max, abs(w[vo_index(r0 + t, h, x)]));
        }
        const float wr_scale = tile_scale(wr_max);
        for (uint e = lane; e < MM * DV; e += SG) {
            const uint rr = e / DV, x = e % DV, t = t0 + rr;
            sWr[(tile + rr) * VS + x] = MAT_T(t < n ? w[vo_index(r0 + t, h, x)] * wr_scale : 0.0);
        }
        // Pass A: K_T dS_1 over dS_1's row slices.
        MAT_C acc[DV / MM];
        for (uint x = 0u; x < DV / MM; ++x) acc[x] = MAT_C(0.0);
        COOP_LOOP for (uint kq = 0u; kq < DK / MM; ++kq) {
            barrier();  // the previous slice is consumed (and this subgroup's tiles are written)
            for (uint e = lid; e < MM * DV; e += WG) {
                const uint ii = e / DV, x = e % DV;
                sS1[ii * VS + x] = MAT_T(dstates[state_index(slot + 1u, h, kq * MM + ii, x)] * s1_scale);
            }
            barrier();
            MAT_A ka;
            coopMatLoad(ka, sK, tile * KS + kq * MM, KS, gl_CooperativeMatrixLayoutRowMajor);
            COOP_LOOP for (uint nb = 0u; nb < DV / MM; ++nb) {
                MAT_B sb;
                coopMatLoad(sb, sS1, nb * MM, VS, gl_CooperativeMatrixLayoutRowMajor);
                acc[nb] = coopMatMulAdd(ka, sb, acc[nb]);
            }
        }
        // dW = R + diag(exp(g_n - g)) K dS_1 into dw (fp32), then as f16 (each lane rereads its own).
        float dw_max = 0.0;
        COOP_LOOP for (uint nb = 0u; nb < DV / MM; ++nb) {
            coopMatStore(acc[nb], sA, tile * AS, AS, gl_CooperativeMatrixLayoutRowMajor);
            subgroupMemoryBarrierShared();
            subgroupBarrier();
            for (uint e = lane; e < MM * MM; e += SG) {
                const uint rr = e / MM, cc = e % MM, t = t0 + rr;
                if (t < n) {
                    const uint at = vo_index(r0 + t, h, nb * MM + cc);
                    const float x = dw[at] + exp(gn - sg[t]) * sA[(tile + rr) * AS + cc] * s1_unscale;
                    dw[at] = x;
                    dw_max = max(dw_max, abs(x));
                }
            }
            subgroupMemoryBarrierShared();
            subgroupBarrier();
        }
        const float dw_scale = tile_scale(dw_max);
        for (uint nb = 0u; nb < DV / MM; ++nb) {
            for (uint e = lane; e < MM * MM; e += SG) {
                const uint rr = e / MM, cc = e % MM, t = t0 + rr;
                sDW[(tile + rr) * VS + nb * MM + cc] = MAT_T(t < n ? dw[vo_index(r0 + t, h, nb * MM + cc)] * dw_scale : 0.0);
            }
        }
        // Pass B, per slice of Dk: dWk, fromS and inter's tiles (S_0^T, dS_1^T loaded column-major).
        COOP_LOOP for (uint kq = 0u; kq < DK / MM; ++kq) {
            barrier();
            for (uint e = lid; e < MM * DV; e += WG) {
                const uint ii = e / DV, x = e % DV;
                sS0[ii * VS + x] = MAT_T(states[state_index(slot, h, kq * MM + ii, x)] * s0_scale);
                sS1[ii * VS + x] = MAT_T(dstates[state_index(slot + 1u, h, kq * MM + ii, x)] * s1_scale);
            }
            barrier();
            MAT_C a1 = MAT_C(0.0), a2 = MAT_C(0.0), a3 = MAT_C(0.0);
            COOP_LOOP for (uint xb = 0u; xb < DV / MM; ++xb) {
                MAT_A dwa, wra, doa;
                MAT_B b0, b1;
                coopMatLoad(dwa, sDW, tile * VS + xb * MM, VS, gl_CooperativeMatrixLayoutRowMajor);
                coopMatLoad(wra, sWr, tile * VS + xb * MM, VS, gl_CooperativeMatrixLayoutRowMajor);
                coopMatLoad(doa, sDO, tile * VS + xb * MM, VS, gl_CooperativeMatrixLayoutRowMajor);
                coopMatLoad(b0, sS0, xb * MM, VS, gl_CooperativeMatrixLayoutColumnMajor);
                coopMatLoad(b1, sS1, xb * MM, VS, gl_CooperativeMatrixLayoutColumnMajor);
                a1 = coopMatMulAdd(dwa, b0, a1);
                a2 = coopMatMulAdd(wra, b1, a2);
                a3 = coopMatMulAdd(doa, b0, a3);
            }
            coopMatStore(a1, sA, tile * AS, AS, gl_CooperativeMatrixLayoutRowMajor);
            subgroupMemoryBarrierShared();
            subgroupBarrier();
            for (uint e = lane; e < MM * MM; e += SG) {
                const uint rr = e / MM, cc = e % MM, t = t0 + rr;
                if (t < n) dwk[qk_index(r0 + t, h, kq * MM + cc)] = -sA[(tile + rr) * AS + cc] * (s0_unscale / dw_scale);
            }
            subgroupMemoryBarrierShared();
            subgroupBarrier();
            coopMatStore(a2, sA, tile * AS, AS, gl_CooperativeMatrixLayoutRowMajor);
            subgroupMemoryBarrierShared();
            subgroupBarrier();
            for (uint e = lane; e < MM * MM; e += SG) {
                const uint rr = e / MM, cc = e % MM, t = t0 + rr;
                if (t < n) from_s[qk_index(r0 + t, h, kq * MM + cc)] = sA[(tile + rr) * AS + cc] * (s1_unscale / wr_scale) * exp(gn - sg[t]);
            }
            subgroupMemoryBarrierShared();
            subgroupBarrier();
            coopMatStore(a3, sA, tile * AS, AS, gl_CooperativeMatrixLayoutRowMajor);
            subgroupMemoryBarrierShared();
            subgroupBarrier();
            for (uint e = lane; e < MM * MM; e += SG) {
                const uint rr = e / MM, cc = e % MM, t = t0 + rr;
                if (t < n) inter[qk_index(r0 + t, h, kq * MM + cc)] = sA[(tile + rr) * AS + cc] * s0_unscale * exp(sg[t]);
            }
            subgroupMemoryBarrierShared();
            subgroupBarrier();
        }
    }
}
