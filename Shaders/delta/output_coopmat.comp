#version 450
//! requires GL_KHR_cooperative_matrix
//! variant f16 -DMAT_T=float16_t -DOUT_T=float16_t
//! variant f16_cpu -DMAT_T=float16_t -DOUT_T=float16_t -DROLLED
//! variant f16o32 -DMAT_T=float16_t -DOUT_T=float
//! variant f16o32_cpu -DMAT_T=float16_t -DOUT_T=float -DROLLED
// The delta rule's chunk products on KHR cooperative matrices (output.comp's contract; one
// workgroup per (chunk, head)), from the state S_0 before the chunk:
//   W = U - Wk S_0,   P[i][j] = exp(g_i - g_j) q_i . k_j (j <= i),
// MODE 0 (forward):  o_i = exp(g_i) q_i S_0 + (P W)_i;
// MODE 1 (backward): R = P^T dO and the chunk's part of the state gradient before it,
//   G = Q^T diag(exp(g)) dO - Wk^T R.
// The chunk's CH rows are cut into blocks of MM (= NN = KK) rows; subgroup s owns the TB row
// blocks s, s + NS, ... and keeps their outputs as DV / MM fp32 accumulators each.
//   Phase 1, per row block T: S_0 is staged MM rows at a time as f16, multiplied by one power of
//     two for the whole state (its largest entry near 2^13); the block's q rows (f16 inputs,
//     exact) and Wk rows (fp32, rounded to f16 after one power-of-two scale per block) multiply
//     each slice: Q_T S_0 and Wk_T S_0 in fp32 accumulators. W_T = U_T - Wk_T S_0 (fp32) goes to
//     the w buffer and, scaled by a power of two per block, to shared memory as f16; the
//     accumulators of o start as diag(exp(g)) Q_T S_0.
//   Phase 2, block pairs S <= T: A_TS = Q_T K_S^T (f16 inputs, fp32 accumulation), the decays
//     exp(g_i - g_j) <= 1 and the causal mask by lanes in fp32, rounded to f16 after a power of
//     two per tile: MODE 0 adds P_TS W_S to o's block T; MODE 1 adds P_TS^T dO_T (the tile
//     loaded column-major) to R's block S, owned by the subgroup. R goes to the r buffer (fp32)
//     and, scaled per block, to shared memory as f16.
//   Phase 3 (MODE 1), G's MM x MM tiles dealt to the subgroups: over the row blocks T,
//     (diag(exp(g)) Q_T)^T dO_T - Wk_T^T R_T, the two left factors rounded to f16 after a power
//     of two per tile and loaded column-major.
// Rounding: S_0, Wk, W, P (and R, exp(g) Q) are fp32 values rounded to f16 (relative 2^-11
// each, 2^-12 on average): the results carry a few f16 units of relative error where the scalar
// kernel carries fp32's.
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
// Mesa 26.2's lavapipe loses the later work of a subgroup that runs more cooperative-matrix
// operations than the other subgroups of its workgroup (Shaders/scan/gla_coopmat.glsl): with
// UNIFORM_MATRIX_OPS (set on CPU devices) every subgroup walks every block pair, the unneeded
// ones masked to zero.
layout(constant_id = 7) const bool UNIFORM_MATRIX_OPS = false;
layout(constant_id = 8) const uint MODE = 0;   // 0: forward (o), 1: backward (R, G)
#include "delta/delta.glsl"
#include "common/dtype.glsl"
#include "delta/delta_coopmat.glsl"

layout(std430, binding = 1) readonly buffer Q { MAT_T q[]; };
layout(std430, binding = 2) readonly buffer K { MAT_T k[]; };
layout(std430, binding = 3) readonly buffer GCum { float gcum[]; };
layout(std430, binding = 4) readonly buffer U { float u[]; };
layout(std430, binding = 5) readonly buffer Wk { float wk[]; };
layout(std430, binding = 6) readonly buffer S { float states[]; };
layout(std430, binding = 7) buffer W { float w[]; };                 // [T, H, Dv]
layout(std430, binding = 8) readonly buffer DO { MAT_T dout[]; };
layout(std430, binding = 9) writeonly buffer O { OUT_T o[]; };
layout(std430, binding = 10) buffer R { float r[]; };                // [T, H, Dv]
layout(std430, binding = 11) writeonly buffer G { float g_out[]; };  // [chunks, H, Dk, Dv]

const uint NB = CH / MM;                       // row blocks
const uint TB = NB / NS;                       // row blocks per subgroup
// DeltaRuleCoopmat.outputSharedBytes mirrors these declarations.
shared MAT_T sW[CH * VS];                      // W's rows (MODE 0) or R's (MODE 1), scaled per block
shared MAT_T sD[MODE == 1u ? CH * VS : 1u];    // MODE 1: the chunk's dO rows
shared MAT_T sSlice[MM * VS];                  // MM rows of S_0, scaled
shared MAT_T sX[NS * MM * KS];                 // per subgroup: q rows
shared MAT_T sY[NS * MM * KS];                 // per subgroup: Wk rows (scaled) or k rows
shared float sA[NS * MM * AS];                 // per subgroup: an fp32 tile
shared MAT_T sP[NS * MM * PS];                 // per subgroup: a P tile scaled to 16 bits
shared float sg[CH];
shared float sWUnscale[NB];
shared float sMax[NS];

// The products of one chunk's P with its block pair (T, S): A_TS = Q_T K_S^T masked and decayed
// (fp32, in the subgroup's sA tile), then rounded to f16 in its sP tile; returns the inverse of
// the tile's power-of-two scale. sX holds Q_T's rows and sY K_S's.
float p_tile(uint n, uint t0, uint s0, uint tile) {
    subgroupMemoryBarrierShared();
    subgroupBarrier();
    MAT_C a = MAT_C(0.0);
    COOP_LOOP for (uint kq = 0u; kq < DK / MM; ++kq) {
        MAT_A xa;
        MAT_B yb;
        coopMatLoad(xa, sX, tile * KS + kq * MM, KS, gl_CooperativeMatrixLayoutRowMajor);
        coopMatLoad(yb, sY, tile * KS + kq * MM, KS, gl_CooperativeMatrixLayoutColumnMajor);
        a = coopMatMulAdd(xa, yb, a);
    }
    coopMatStore(a, sA, tile * AS, AS, gl_CooperativeMatrixLayoutRowMajor);
    subgroupMemoryBarrierShared();
    subgroupBarrier();
    float p_max = 0.0;
    for (uint e = gl_SubgroupInvocationID; e < MM * MM; e += SG) {
        const uint rr = e / MM, cc = e % MM, t = t0 + rr, s = s0 + cc;
        const float x = sA[(tile + rr) * AS + cc];
        const float p = t < n && s <= t ? x * exp(sg[t] - sg[s]) : 0.0;
        sA[(tile + rr) * AS + cc] = p;
        p_max = max(p_max, abs(p));
    }
    const float p_scale = tile_scale(p_max);
    for (uint e = gl_SubgroupInvocationID; e < MM * MM; e += SG) {
        const uint rr = e / MM, cc = e % MM;
        sP[(tile + rr) * PS + cc] = MAT_T(sA[(tile + rr) * AS + cc] * p_scale);
    }
    subgroupMemoryBarrierShared();
    subgroupBarrier();
    return 1.0 / p_scale;
}

void main() {
    const uint wg = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
    if (wg >= pc.chunks * pc.H) return;  // uniform
    const uint c = wg / pc.H, h = wg % pc.H;
    const uvec4 entry = chunk_table[c];
    const uint r0 = entry.x, n = entry.y, slot = entry.w;
    const uint sub = gl_SubgroupID, lane = gl_SubgroupInvocationID, lid = gl_LocalInvocationIndex;
    const uint tile = sub * MM;                // this subgroup's rows of the per-subgroup tiles

    for (uint i = lid; i < CH; i += WG) sg[i] = i < n ? gcum[gate_index(r0 + i, h)] : 0.0;
    // One power of two for the whole state.
    float local_max = 0.0;
    for (uint e = lid; e < DK * DV; e += WG) local_max = max(local_max, abs(states[state_index(slot, h, e / DV, e % DV)]));
    local_max = subgroupMax(local_max);
    if (lane == 0u) sMax[sub] = local_max;
    barrier();
    float state_max = 0.0;
    for (uint x = 0u; x < NS; ++x) state_max = max(state_max, sMax[x]);
    const float s_scale = pow2_scale(state_max), s_unscale = 1.0 / s_scale;

    MAT_C acc[TB * (DV / MM)];

    // Phase 1: W and the inter-chunk term, per row block.
    for (uint tb = 0u; tb < TB; ++tb) {
        const uint t0 = (tb * NS + sub) * MM;
        float wk_max = 0.0;
        for (uint e = lane; e < MM * DK; e += SG) {
            const uint rr = e / DK, d = e % DK, t = t0 + rr;
            sX[(tile + rr) * KS + d] = t < n ? q[qk_index(r0 + t, h, d)] : MAT_T(0.0);
            if (t < n) wk_max = max(wk_max, abs(wk[qk_index(r0 + t, h, d)]));
        }
        const float y_scale = tile_scale(wk_max);
        for (uint e = lane; e < MM * DK; e += SG) {
            const uint rr = e / DK, d = e % DK, t = t0 + rr;
            sY[(tile + rr) * KS + d] = MAT_T(t < n ? wk[qk_index(r0 + t, h, d)] * y_scale : 0.0);
        }
        MAT_C qs[DV / MM], ws[DV / MM];
        for (uint x = 0u; x < DV / MM; ++x) {
            qs[x] = MAT_C(0.0);
            ws[x] = MAT_C(0.0);
        }
        COOP_LOOP for (uint kq = 0u; kq < DK / MM; ++kq) {
            barrier();  // the previous slice is consumed (and this subgroup's tiles are written)
            for (uint e = lid; e < MM * DV; e += WG) {
                const uint ii = e / DV, x = e % DV;
                sSlice[ii * VS + x] = MAT_T(states[state_index(slot, h, kq * MM + ii, x)] * s_scale);
            }
            barrier();
            MAT_A qa, wa;
            coopMatLoad(qa, sX, tile * KS + kq * MM, KS, gl_CooperativeMatrixLayoutRowMajor);
            coopMatLoad(wa, sY, tile * KS + kq * MM, KS, gl_CooperativeMatrixLayoutRowMajor);
            COOP_LOOP for (uint nb = 0u; nb < DV / MM; ++nb) {
                MAT_B sb;
                coopMatLoad(sb, sSlice, nb * MM, VS, gl_CooperativeMatrixLayoutRowMajor);
                if (MODE == 0u) qs[nb] = coopMatMulAdd(qa, sb, qs[nb]);
                ws[nb] = coopMatMulAdd(wa, sb, ws[nb]);
            }
        }
        // W = U - Wk S_0 into w (fp32), then o's accumulators = diag(exp(g)) Q S_0.
        const float w_unscale = s_unscale / y_scale;
        float w_max = 0.0;
        COOP_LOOP for (uint nb = 0u; nb < DV / MM; ++nb) {
            coopMatStore(ws[nb], sA, tile * AS, AS, gl_CooperativeMatrixLayoutRowMajor);
            subgroupMemoryBarrierShared();
            subgroupBarrier();
            for (uint e = lane; e < MM * MM; e += SG) {
                const uint rr = e / MM, cc = e % MM, t = t0 + rr;
                if (t < n) {
                    const uint at = vo_index(r0 + t, h, nb * MM + cc);
                    const float x = u[at] - sA[(tile + rr) * AS + cc] * w_unscale;
                    w[at] = x;
                    w_max = max(w_max, abs(x));
                }
            }
            subgroupMemoryBarrierShared();
            subgroupBarrier();
            if (MODE != 0u) continue;
            coopMatStore(qs[nb], sA, tile * AS, AS, gl_CooperativeMatrixLayoutRowMajor);
            subgroupMemoryBarrierShared();
            subgroupBarrier();
            for (uint e = lane; e < MM * MM; e += SG) {
                const uint rr = e / MM, cc = e % MM, t = t0 + rr;
                const float x = sA[(tile + rr) * AS + cc];
                sA[(tile + rr) * AS + cc] = t < n ? x * s_unscale * exp(sg[t]) : 0.0;
            }
            subgroupMemoryBarrierShared();
            subgroupBarrier();
            coopMatLoad(acc[tb * (DV / MM) + nb], sA, tile * AS, AS, gl_CooperativeMatrixLayoutRowMajor);
            subgroupMemoryBarrierShared();
            subgroupBarrier();
        }
        if (MODE != 0u) continue;
        // W's block as f16, one power of two for it (each lane rereads the w it wrote).
        const float w_scale = tile_scale(w_max);
        for (uint nb = 0u; nb < DV / MM; ++nb) {
            for (uint e = lane; e < MM * MM; e += SG) {
                const uint rr = e / MM, cc = e % MM, t = t0 + rr;
                sW[(t0 + rr) * VS + nb * MM + cc] = MAT_T(t < n ? w[vo_index(r0 + t, h, nb * MM + cc)] * w_scale : 0.0);
            }
        }
        if (lane == 0u) sWUnscale[t0 / MM] = 1.0 / w_scale;
    }
    if (MODE == 1u) {
        for (uint e = lid; e < CH * DV; e += WG) {
            const uint t = e / DV, x = e % DV;
            sD[t * VS + x] = t < n ? dout[vo_index(r0 + t, h, x)] : MAT_T(0.0);
        }
        for (uint x = 0u; x < TB * (DV / MM); ++x) acc[x] = MAT_C(0.0);
    }
    barrier();  // every block of W (MODE 0) or dO (MODE 1) is in shared memory

    // Phase 2: o += P W, block pairs S <= T.
    for (uint tb = 0u; tb < TB && MODE == 0u; ++tb) {
        const uint tblock = tb * NS + sub, t0 = tblock * MM;
        for (uint e = lane; e < MM * DK; e += SG) {
            const uint rr = e / DK, d = e % DK, t = t0 + rr;
            sX[(tile + rr) * KS + d] = t < n ? q[qk_index(r0 + t, h, d)] : MAT_T(0.0);
        }
        // Every subgroup runs as many matrix operations as the others on CPU devices.
        for (uint sblock = 0u; sblock < (UNIFORM_MATRIX_OPS ? NB : tblock + 1u); ++sblock) {
            const uint s0 = sblock * MM;
            for (uint e = lane; e < MM * DK; e += SG) {
                const uint rr = e / DK, d = e % DK, s = s0 + rr;
                sY[(tile + rr) * KS + d] = s < n ? k[qk_index(r0 + s, h, d)] : MAT_T(0.0);
            }
            const float unscale = p_tile(n, t0, s0, tile) * sWUnscale[sblock];
            MAT_A pa;
            coopMatLoad(pa, sP, tile * PS, PS, gl_CooperativeMatrixLayoutRowMajor);
            COOP_LOOP for (uint nb = 0u; nb < DV / MM; ++nb) {
                MAT_B wb;
                coopMatLoad(wb, sW, s0 * VS + nb * MM, VS, gl_CooperativeMatrixLayoutRowMajor);
                MAT_C t = coopMatMulAdd(pa, wb, MAT_C(0.0));
                acc[tb * (DV / MM) + nb] = acc[tb * (DV / MM) + nb] + t * unscale;
            }
            subgroupMemoryBarrierShared();
            subgroupBarrier();
        }
    }

    // MODE 1 (dO's rows in sD, acc zero): R (phase 2) and G (phase 3).
    if (MODE == 1u) {
        // Phase 2: R_S = sum_{T >= S} P_TS^T dO_T for this subgroup's blocks S.
        for (uint tb = 0u; tb < TB; ++tb) {
            const uint sblock = tb * NS + sub, s0 = sblock * MM;
            for (uint e = lane; e < MM * DK; e += SG) {
                const uint rr = e / DK, d = e % DK, s = s0 + rr;
                sY[(tile + rr) * KS + d] = s < n ? k[qk_index(r0 + s, h, d)] : MAT_T(0.0);
            }
            // Every subgroup runs as many matrix operations as the others on CPU devices.
            for (uint tblock = UNIFORM_MATRIX_OPS ? 0u : sblock; tblock < NB; ++tblock) {
                const uint t0 = tblock * MM;
                for (uint e = lane; e < MM * DK; e += SG) {
                    const uint rr = e / DK, d = e % DK, t = t0 + rr;
                    sX[(tile + rr) * KS + d] = t < n ? q[qk_index(r0 + t, h, d)] : MAT_T(0.0);
                }
                const float unscale = p_tile(n, t0, s0, tile);
                MAT_A pa;
                coopMatLoad(pa, sP, tile * PS, PS, gl_CooperativeMatrixLayoutColumnMajor);  // P_TS^T
                COOP_LOOP for (uint nb = 0u; nb < DV / MM; ++nb) {
                    MAT_B db;
                    coopMatLoad(db, sD, t0 * VS + nb * MM, VS, gl_CooperativeMatrixLayoutRowMajor);
                    MAT_C t = coopMatMulAdd(pa, db, MAT_C(0.0));
                    acc[tb * (DV / MM) + nb] = acc[tb * (DV / MM) + nb] + t * unscale;
                }
                subgroupMemoryBarrierShared();
                subgroupBarrier();
            }
            // R's block into r (fp32), then into sW as f16 (each lane rereads the r it wrote).
            float r_max = 0.0;
            COOP_LOOP for (uint nb = 0u; nb < DV / MM; ++nb) {
                coopMatStore(acc[tb * (DV / MM) + nb], sA, tile * AS, AS, gl_CooperativeMatrixLayoutRowMajor);
                subgroupMemoryBarrierShared();
                subgroupBarrier();
                for (uint e = lane; e < MM * MM; e += SG) {
                    const uint rr = e / MM, cc = e % MM, s = s0 + rr;
                    if (s < n) {
                        const float x = sA[(tile + rr) * AS + cc];
                        r[vo_index(r0 + s, h, nb * MM + cc)] = x;
                        r_max = max(r_max, abs(x));
                    }
                }
                subgroupMemoryBarrierShared();
                subgroupBarrier();
            }
            const float r_scale = tile_scale(r_max);
            for (uint nb = 0u; nb < DV / MM; ++nb) {
                for (uint e = lane; e < MM * MM; e += SG) {
                    const uint rr = e / MM, cc = e % MM, s = s0 + rr;
                    sW[(s0 + rr) * VS + nb * MM + cc] = MAT_T(s < n ? r[vo_index(r0 + s, h, nb * MM + cc)] * r_scale : 0.0);
                }
            }
            if (lane == 0u) sWUnscale[sblock] = 1.0 / r_scale;
        }
        barrier();  // every block of R is in sW

        // Phase 3: G's tiles, dealt round-robin (every subgroup walks as many; spare ones store nothing).
        const uint tiles = (DK / MM) * (DV / MM);
        const uint base = (c * pc.H + h) * DK * DV;
        for (uint j = 0u; j < (tiles + NS - 1u) / NS; ++j) {
            const uint x = j * NS + sub;
            const uint di = (x % tiles) / (DV / MM), nb = (x % tiles) % (DV / MM);
            MAT_C gacc = MAT_C(0.0);
            for (uint tblock = 0u; tblock < NB; ++tblock) {
                const uint t0 = tblock * MM;
                // exp(g) Q_T's and Wk_T's columns of block di, each scaled to f16 by a power of two.
                float e_max = 0.0, f_max = 0.0;
                for (uint e = lane; e < MM * MM; e += SG) {
                    const uint rr = e / MM, cc = e % MM, t = t0 + rr;
                    const float ev = t < n ? float(q[qk_index(r0 + t, h, di * MM + cc)]) * exp(sg[t]) : 0.0;
                    const float fv = t < n ? wk[qk_index(r0 + t, h, di * MM + cc)] : 0.0;
                    sA[(tile + rr) * AS + cc] = ev;
                    e_max = max(e_max, abs(ev));
                    f_max = max(f_max, abs(fv));
                }
                const float e_scale = tile_scale(e_max), f_scale = tile_scale(f_max);
                for (uint e = lane; e < MM * MM; e += SG) {
                    const uint rr = e / MM, cc = e % MM, t = t0 + rr;
                    sP[(tile + rr) * PS + cc] = MAT_T(sA[(tile + rr) * AS + cc] * e_scale);
                    sX[(tile + rr) * KS + cc] = MAT_T(t < n ? wk[qk_index(r0 + t, h, di * MM + cc)] * f_scale : 0.0);
                }
                subgroupMemoryBarrierShared();
                subgroupBarrier();
                MAT_A ea, fa;
                MAT_B db, rb;
                coopMatLoad(ea, sP, tile * PS, PS, gl_CooperativeMatrixLayoutColumnMajor);  // (exp(g) Q_T)^T
                coopMatLoad(fa, sX, tile * KS, KS, gl_CooperativeMatrixLayoutColumnMajor);  // Wk_T^T
                coopMatLoad(db, sD, t0 * VS + nb * MM, VS, gl_CooperativeMatrixLayoutRowMajor);
                coopMatLoad(rb, sW, t0 * VS + nb * MM, VS, gl_CooperativeMatrixLayoutRowMajor);
                MAT_C te = coopMatMulAdd(ea, db, MAT_C(0.0));
                MAT_C tf = coopMatMulAdd(fa, rb, MAT_C(0.0));
                gacc = gacc + te * (1.0 / e_scale) - tf * (sWUnscale[tblock] / f_scale);
                subgroupMemoryBarrierShared();
                subgroupBarrier();
            }
            coopMatStore(gacc, sA, tile * AS, AS, gl_CooperativeMatrixLayoutRowMajor);
            subgroupMemoryBarrierShared();
            subgroupBarrier();
            if (x < tiles) {
                for (uint e = lane; e < MM * MM; e += SG) {
                    const uint rr = e / MM, cc = e % MM;
                    g_out[base + (di * MM + rr) * DV + nb * MM + cc] = sA[(tile + rr) * AS + cc];
                }
            }
            subgroupMemoryBarrierShared();
            subgroupBarrier();
        }
        return;
    }

    // o, through the subgroup's fp32 tile.
    for (uint tb = 0u; tb < TB; ++tb) {
        const uint t0 = (tb * NS + sub) * MM;
        COOP_LOOP for (uint nb = 0u; nb < DV / MM; ++nb) {
            coopMatStore(acc[tb * (DV / MM) + nb], sA, tile * AS, AS, gl_CooperativeMatrixLayoutRowMajor);
            subgroupMemoryBarrierShared();
            subgroupBarrier();
            for (uint e = lane; e < MM * MM; e += SG) {
                const uint rr = e / MM, cc = e % MM, t = t0 + rr;
                if (t < n) o[vo_index(r0 + t, h, nb * MM + cc)] = STORE_OUT(sA[(tile + rr) * AS + cc]);
            }
            subgroupMemoryBarrierShared();
            subgroupBarrier();
        }
    }
}
