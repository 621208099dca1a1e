#version 450
//! requires GL_KHR_cooperative_matrix
//! variant f16 -DMAT_T=float16_t -DOUT_T=float16_t
//! variant f16_cpu -DMAT_T=float16_t -DOUT_T=float16_t -DROLLED
//! variant f16o32 -DMAT_T=float16_t -DOUT_T=float
//! variant f16o32_cpu -DMAT_T=float16_t -DOUT_T=float -DROLLED
// Gated linear attention, the output of one chunk on KHR cooperative matrices (the contract of
// gla_output.comp; one workgroup per (b, h, chunk)):
//   o_t = (q_t * exp(gcum_t)) S_start + sum_{s <= t in the chunk} A[t][s] v_s,
//   A[t][s] = sum_i q_t[i] k_s[i] exp(gcum_t[i] - gcum_s[i]).
// The chunk's rows are cut into blocks of MM (= NN = KK) rows; each subgroup owns TB row blocks
// T and keeps their outputs as DV/NN fp32 accumulators each.
//   Inter-chunk: S_start (fp32) is staged KK rows at a time as 16-bit words, multiplied by one
//     power of two for the whole state so its largest entry sits near 2^13; each block adds
//     (q exp(gcum)) [T, slice] x slice, the q tile scaled the same way per tile (strong decay
//     sinks exp(gcum) below f16's range), times the inverse powers.
//   Intra-chunk, block pairs S <= T: A_TS is a cooperative-matrix product of 16-bit tiles whose
//     decays are never above 1: per-head or no gates, raw q k^T with the decay applied by lanes
//     afterwards; per-key gates, S < T, q exp(gcum - gcum_r) times (k exp(gcum_r - gcum))^T with
//     r the first row of T, and the diagonal block S = T by lanes in fp32 (secondary chunking).
//     A_TS, masked, is scaled to 16 bits by a power of two per tile (tile_scale) and multiplied
//     by V_S.
#extension GL_KHR_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_shader_16bit_storage : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_EXT_control_flow_attributes : require
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint GATE = 2;   // 0: none, 1: per head, 2: per key dimension
layout(constant_id = 3) const uint CH = 32;    // rows per chunk
layout(constant_id = 4) const uint DK = 64;
layout(constant_id = 5) const uint DV = 64;
layout(constant_id = 6) const uint MM = 8;     // square cooperative-matrix shape MM = NN = KK
layout(constant_id = 7) const uint SG = 8;     // subgroup size
#define GLA_TABLE_BINDING 6
#include "common/scan_gla.glsl"
#include "common/dtype.glsl"
#include "scan/gla_coopmat.glsl"

layout(std430, binding = 0) readonly buffer Q { MAT_T q[]; };
layout(std430, binding = 1) readonly buffer K { MAT_T k[]; };
layout(std430, binding = 2) readonly buffer V { MAT_T v[]; };
layout(std430, binding = 3) readonly buffer GC { float gcum[]; };
layout(std430, binding = 4) readonly buffer S { float states[]; };
layout(std430, binding = 5) writeonly buffer O { OUT_T o[]; };

const uint TB = CH / MM / NS;                  // row blocks per subgroup
// GLAPlan.coopmatOutputSharedBytes mirrors these declarations.
shared MAT_T sV[CH * VS];                      // the chunk's v rows
shared MAT_T sSlice[MM * VS];                  // KK rows of the state, scaled
shared MAT_T sX[NS * MM * KS];                 // per subgroup: q rows (scaled by decays)
shared MAT_T sY[NS * MM * KS];                 // per subgroup: k rows (scaled by decays)
shared float sA[NS * MM * AS];                 // per subgroup: an A tile (fp32), then output blocks
shared MAT_T sP[NS * MM * PS];                 // per subgroup: an A tile scaled to 16 bits
shared float sMax[NS];

float gc(uint b, uint t, uint h, uint i) { return GATE != 0u ? gcum[gate_index(b, t, h, i)] : 0.0; }

void main() {
    const uint wg = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
    const uint c = wg % pc.NC;
    const uint bh = wg / pc.NC;
    if (bh >= pc.B * pc.H) return;  // uniform
    const uint b = bh / pc.H, h = bh % pc.H;
    const uint rows = chunk_len(c);
    const uint t0 = chunk_t0(c);
    const uint sub = gl_SubgroupID, lane = gl_SubgroupInvocationID;
    const uint lid = gl_LocalInvocationIndex;

    for (uint e = lid; e < CH * DV; e += WG) {
        const uint r = e / DV, j = e % DV;
        sV[r * VS + j] = r < rows ? v[vo_index(b, t0 + r, h, j)] : MAT_T(0.0);
    }

    MAT_C acc[TB * (DV / MM)];
    for (uint x = 0u; x < TB * (DV / MM); ++x) acc[x] = MAT_C(0.0);

    // Inter-chunk: one scale for the whole state.
    float local_max = 0.0;
    for (uint e = lid; e < DK * DV; e += WG) local_max = max(local_max, abs(states[state_index(b, h, chunk_slot(c), e / DV, e % DV)]));
    local_max = subgroupMax(local_max);
    if (lane == 0u) sMax[sub] = local_max;
    barrier();
    float state_max = 0.0;
    for (uint x = 0u; x < NS; ++x) state_max = max(state_max, sMax[x]);
    int ex;
    frexp(state_max, ex);
    const float s_scale = state_max > 0.0 && !isinf(state_max) ? exp2(float(clamp(14 - ex, -100, 100))) : 1.0;
    const float s_unscale = 1.0 / s_scale;
    COOP_LOOP for (uint kq = 0u; kq < DK / MM; ++kq) {
        barrier();  // the previous slice is consumed
        for (uint e = lid; e < MM * DV; e += WG) {
            const uint ii = e / DV, j = e % DV;
            sSlice[ii * VS + j] = MAT_T(states[state_index(b, h, chunk_slot(c), kq * MM + ii, j)] * s_scale);
        }
        barrier();
        for (uint tb = 0u; tb < TB; ++tb) {
            const uint r0 = (tb * NS + sub) * MM;
            // q exp(gcum_t) can sink below f16's range (strong decay): scaled per tile.
            float q_max = 0.0;
            for (uint e = lane; e < MM * MM; e += SG) {
                const uint rr = e / MM, ii = e % MM, t = r0 + rr, i = kq * MM + ii;
                const float x = t < rows ? float(q[qk_index(b, t0 + t, h, i)]) * (GATE != 0u ? exp(gc(b, t0 + t, h, i)) : 1.0) : 0.0;
                sA[(sub * MM + rr) * AS + ii] = x;
                q_max = max(q_max, abs(x));
            }
            const float q_scale = tile_scale(q_max);
            for (uint e = lane; e < MM * MM; e += SG) {
                const uint rr = e / MM, ii = e % MM;
                sX[(sub * MM + rr) * KS + ii] = MAT_T(sA[(sub * MM + rr) * AS + ii] * q_scale);
            }
            subgroupMemoryBarrierShared();
            subgroupBarrier();
            const float unscale = s_unscale / q_scale;
            MAT_A qa;
            coopMatLoad(qa, sX, sub * MM * KS, KS, gl_CooperativeMatrixLayoutRowMajor);
            COOP_LOOP for (uint n = 0u; n < DV / MM; ++n) {
                MAT_B sb;
                coopMatLoad(sb, sSlice, n * MM, VS, gl_CooperativeMatrixLayoutRowMajor);
                MAT_C t = coopMatMulAdd(qa, sb, MAT_C(0.0));
                acc[tb * (DV / MM) + n] = acc[tb * (DV / MM) + n] + t * unscale;
            }
            subgroupMemoryBarrierShared();
            subgroupBarrier();
        }
    }

    // Intra-chunk, block pairs S <= T.
    for (uint tb = 0u; tb < TB; ++tb) {
        const uint tblock = tb * NS + sub;
        const uint r0 = tblock * MM;
        const uint ref = min(t0 + r0, t0 + rows - 1u);  // the decay reference row (per-key gates)
        // q rows of T: raw (per-head, none) or times exp(gcum_t - gcum_ref) (per-key).
        for (uint e = lane; e < MM * DK; e += SG) {
            const uint rr = e / DK, i = e % DK, t = r0 + rr;
            float x = 0.0;
            if (t < rows) {
                x = float(q[qk_index(b, t0 + t, h, i)]);
                if (GATE == 2u) x *= exp(gc(b, t0 + t, h, i) - gc(b, ref, h, i));
            }
            sX[(sub * MM + rr) * KS + i] = MAT_T(x);
        }
        // Every subgroup of a workgroup must run as many matrix operations as the others on the
        // CPU device (see gla_coopmat.glsl): there the upper blocks are walked too, masked to 0.
        for (uint sblock = 0u; sblock < (UNIFORM_MATRIX_OPS ? CH / MM : tblock + 1u); ++sblock) {
            const uint s0 = sblock * MM;
            const bool lanes_diagonal = GATE == 2u && sblock == tblock;
            if (!lanes_diagonal) {
                for (uint e = lane; e < MM * DK; e += SG) {
                    const uint rr = e / DK, i = e % DK, s = s0 + rr;
                    float y = 0.0;
                    if (s < rows) {
                        y = float(k[qk_index(b, t0 + s, h, i)]);
                        if (GATE == 2u) y *= exp(gc(b, ref, h, i) - gc(b, t0 + s, h, i));
                    }
                    sY[(sub * MM + rr) * KS + i] = MAT_T(y);
                }
                subgroupMemoryBarrierShared();
                subgroupBarrier();
                MAT_C a = MAT_C(0.0);
                COOP_LOOP for (uint kq = 0u; kq < DK / MM; ++kq) {
                    MAT_A xa;
                    MAT_B yb;
                    coopMatLoad(xa, sX, sub * MM * KS + kq * MM, KS, gl_CooperativeMatrixLayoutRowMajor);
                    coopMatLoad(yb, sY, sub * MM * KS + kq * MM, KS, gl_CooperativeMatrixLayoutColumnMajor);
                    a = coopMatMulAdd(xa, yb, a);
                }
                coopMatStore(a, sA, sub * MM * AS, AS, gl_CooperativeMatrixLayoutRowMajor);
                subgroupMemoryBarrierShared();
                subgroupBarrier();
            }
            // Lanes: the diagonal block's fp32 products (per-key), decays, the causal mask, the tile scale.
            float a_max = 0.0;
            for (uint e = lane; e < MM * MM; e += SG) {
                const uint rr = e / MM, cc = e % MM, t = r0 + rr, s = s0 + cc;
                float a = 0.0;
                if (t < rows && s < rows && s <= t && sblock <= tblock) {
                    if (lanes_diagonal) {
                        for (uint i = 0u; i < DK; ++i) {
                            a += float(q[qk_index(b, t0 + t, h, i)]) * float(k[qk_index(b, t0 + s, h, i)])
                                 * exp(gc(b, t0 + t, h, i) - gc(b, t0 + s, h, i));
                        }
                    } else {
                        a = sA[(sub * MM + rr) * AS + cc];
                        if (GATE == 1u) a *= exp(gc(b, t0 + t, h, 0u) - gc(b, t0 + s, h, 0u));
                    }
                }
                sA[(sub * MM + rr) * AS + cc] = a;
                a_max = max(a_max, abs(a));
            }
            const float p_scale = tile_scale(a_max);
            for (uint e = lane; e < MM * MM; e += SG) {
                const uint rr = e / MM, cc = e % MM;
                sP[(sub * MM + rr) * PS + cc] = MAT_T(sA[(sub * MM + rr) * AS + cc] * p_scale);
            }
            subgroupMemoryBarrierShared();
            subgroupBarrier();
            MAT_A pa;
            coopMatLoad(pa, sP, sub * MM * PS, PS, gl_CooperativeMatrixLayoutRowMajor);
            const float p_unscale = 1.0 / p_scale;
            COOP_LOOP for (uint n = 0u; n < DV / MM; ++n) {
                MAT_B vb;
                coopMatLoad(vb, sV, s0 * VS + n * MM, VS, gl_CooperativeMatrixLayoutRowMajor);
                MAT_C t = coopMatMulAdd(pa, vb, MAT_C(0.0));
                acc[tb * (DV / MM) + n] = acc[tb * (DV / MM) + n] + t * p_unscale;
            }
            subgroupMemoryBarrierShared();
            subgroupBarrier();
        }
    }

    // o, through the subgroup's fp32 tile.
    for (uint tb = 0u; tb < TB; ++tb) {
        const uint r0 = (tb * NS + sub) * MM;
        COOP_LOOP for (uint n = 0u; n < DV / MM; ++n) {
            coopMatStore(acc[tb * (DV / MM) + n], sA, sub * MM * AS, AS, gl_CooperativeMatrixLayoutRowMajor);
            subgroupMemoryBarrierShared();
            subgroupBarrier();
            for (uint e = lane; e < MM * MM; e += SG) {
                const uint rr = e / MM, cc = e % MM, t = r0 + rr;
                if (t < rows) o[vo_index(b, t0 + t, h, n * MM + cc)] = STORE_OUT(sA[(sub * MM + rr) * AS + cc]);
            }
            subgroupMemoryBarrierShared();
            subgroupBarrier();
        }
    }
}
