#version 450
//! requires GL_KHR_cooperative_matrix
//! variant f16 -DMAT_T=float16_t -DOUT_T=float16_t
//! variant f16_cpu -DMAT_T=float16_t -DOUT_T=float16_t -DROLLED
//! variant f16o32 -DMAT_T=float16_t -DOUT_T=float
//! variant f16o32_cpu -DMAT_T=float16_t -DOUT_T=float -DROLLED
// Gated linear attention backward for one chunk on KHR cooperative matrices: dq, dk, dv of
// gla_grads.comp (one workgroup per (b, h, chunk); gla_zsum.comp then forms the gate gradient's
// local sums from them). With S the state before the chunk, G the gradient of the state after
// it, dA[u][t] = dO_u . v_t and A[u][t] = q_u . k_t e(u, t) (t <= u), e(u, t)[i] =
// exp(gcum_u[i] - gcum_t[i]):
//   dq_t = exp(gcum_t) o (dO_t S^T) + sum_{s <= t} dA[t][s] k_s o e(t, s)
//   dk_t = exp(gcum_last - gcum_t) o (v_t G^T) + sum_{u >= t} dA[u][t] q_u o e(u, t)
//   dv_t = (k_t o exp(gcum_last - gcum_t)) G + sum_{u >= t} A[u][t] dO_u
// Rows are cut into blocks of MM (MM = NN = KK); each subgroup owns TB row blocks T, one at a
// time, with dq, dk, dv as fp32 accumulators (Dk/MM, Dk/MM, Dv/MM). Per T:
//   1. block pairs off the diagonal (all pairs with per-head or no gates): dA and A tiles are
//      cooperative-matrix products of 16-bit tiles whose decays never exceed 1 (per-key gates:
//      rows scaled relative to a reference row of T, the part that depends on the output
//      column applied afterwards by an elementwise factor tile); lanes apply masks and per-head
//      decays and scale each tile to 16 bits by a power of two (tile_scale);
//   2. per-key gates: dq and dk times their factor tiles, then the diagonal block by lanes in
//      fp32 (added through tiles);
//   3. the inter-chunk terms, with S and G staged MM rows at a time as 16-bit words scaled by
//      one power of two each (workgroup loop);
//   4. dq, dk, dv written through the subgroup's fp32 tile.
// On the CPU variants every subgroup walks every block pair (masked), so all subgroups run as
// many matrix operations (see gla_coopmat.glsl).
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
layout(constant_id = 6) const uint MM = 8;
layout(constant_id = 7) const uint SG = 8;
#define GLA_TABLE_BINDING 10
#include "common/scan_gla.glsl"
#include "common/dtype.glsl"
#include "scan/gla_coopmat.glsl"

layout(std430, binding = 0) readonly buffer Q { MAT_T q[]; };
layout(std430, binding = 1) readonly buffer K { MAT_T k[]; };
layout(std430, binding = 2) readonly buffer V { MAT_T v[]; };
layout(std430, binding = 3) readonly buffer GC { float gcum[]; };
layout(std430, binding = 4) readonly buffer S { float states[]; };     // forward boundary states
layout(std430, binding = 5) readonly buffer G { float dstates[]; };    // gradients of the states after each chunk
layout(std430, binding = 6) readonly buffer DO { MAT_T dO[]; };
layout(std430, binding = 7) writeonly buffer DQ { OUT_T dq[]; };
layout(std430, binding = 8) writeonly buffer DK_ { OUT_T dk[]; };
layout(std430, binding = 9) writeonly buffer DV_ { OUT_T dv[]; };

const uint TB = CH / MM / NS;                  // row blocks per subgroup
const uint BLOCKS = CH / MM;
// GLAPlan (GLACoopmat.gradsSharedBytes) mirrors these declarations.
shared MAT_T sV[CH * VS];                      // the chunk's v rows
shared MAT_T sDO[CH * VS];                     // the chunk's dO rows
shared MAT_T sSl[MM * VS];                     // MM rows of S, scaled
shared MAT_T sGl[MM * VS];                     // MM rows of G, scaled
shared MAT_T sX[NS * MM * KS];                 // per subgroup: q-like rows
shared MAT_T sY[NS * MM * KS];                 // per subgroup: k-like rows
shared float sT32[NS * MM * AS];               // per subgroup: an fp32 tile
shared MAT_T sT16[NS * MM * PS];               // per subgroup: a tile scaled to 16 bits
shared float sF[NS * MM * AS];                 // per subgroup: a factor (or addend) tile
shared float sMax[2u * NS];

uint b_, h_, t0_, rows_, last_;

float gc(uint t, uint i) { return GATE != 0u ? gcum[gate_index(b_, t0_ + t, h_, i)] : 0.0; }
float qf(uint t, uint i) { return t < rows_ ? float(q[qk_index(b_, t0_ + t, h_, i)]) : 0.0; }
float kf(uint t, uint i) { return t < rows_ ? float(k[qk_index(b_, t0_ + t, h_, i)]) : 0.0; }
float dof(uint t, uint j) { return t < rows_ ? float(dO[vo_index(b_, t0_ + t, h_, j)]) : 0.0; }

// Rows r0 .. r0 + MM of q (which 0) or k (which 1) into this subgroup's sX (0) or sY (1), each
// element times exp(gcum_t - gcum_ref) (sign +1) or exp(gcum_ref - gcum_t) (sign -1) with
// per-key gates, as they are otherwise. Every such decay is at most 1 where it is used; block
// pairs walked only to keep matrix-op counts even (their tiles are masked to 0) would exceed it,
// so the exponent is capped at 0 (no infinity times 0).
void stage_rows(uint which, uint r0, uint ref, float sign) {
    const uint sub = gl_SubgroupID;
    for (uint e = gl_SubgroupInvocationID; e < MM * DK; e += SG) {
        const uint rr = e / DK, i = e % DK, t = r0 + rr;
        float x = which == 0u ? qf(t, i) : kf(t, i);
        if (GATE == 2u && t < rows_) x *= exp(min(sign * (gc(t, i) - gc(ref, i)), 0.0));
        if (which == 0u) sX[(sub * MM + rr) * KS + i] = MAT_T(x); else sY[(sub * MM + rr) * KS + i] = MAT_T(x);
    }
}

void sync_subgroup() {
    subgroupMemoryBarrierShared();
    subgroupBarrier();
}

// The fp32 tile in sT32 (rows a, columns c of an MM x MM block pair), masked by `keep`
// (rows, columns inside the chunk, c <= a or a <= c as the caller asks), times the per-head
// decay exp(gcum(row_t) - gcum(col_t)) when `decay`, scaled into sT16; returns the scale.
float finish_tile(uint row0, uint col0, bool lower, bool decay, bool live) {
    const uint sub = gl_SubgroupID;
    float m = 0.0;
    for (uint e = gl_SubgroupInvocationID; e < MM * MM; e += SG) {
        const uint rr = e / MM, cc = e % MM, a = row0 + rr, c = col0 + cc;
        float x = 0.0;
        if (live && a < rows_ && c < rows_ && (lower ? c <= a : a <= c)) {
            x = sT32[(sub * MM + rr) * AS + cc];
            if (decay && GATE == 1u) x *= lower ? exp(gc(a, 0u) - gc(c, 0u)) : exp(gc(c, 0u) - gc(a, 0u));
        }
        sT32[(sub * MM + rr) * AS + cc] = x;
        m = max(m, abs(x));
    }
    const float scale = tile_scale(m);
    for (uint e = gl_SubgroupInvocationID; e < MM * MM; e += SG) {
        const uint rr = e / MM, cc = e % MM;
        sT16[(sub * MM + rr) * PS + cc] = MAT_T(sT32[(sub * MM + rr) * AS + cc] * scale);
    }
    sync_subgroup();
    return scale;
}

// dA tile: dO rows r_rows (MM) against v rows r_cols, fp32 into sT32 (rows r_rows, cols r_cols).
void da_tile(uint r_rows, uint r_cols) {
    MAT_C acc = MAT_C(0.0);
    COOP_LOOP for (uint jq = 0u; jq < DV / MM; ++jq) {
        MAT_A oa;
        MAT_B vb;
        coopMatLoad(oa, sDO, r_rows * VS + jq * MM, VS, gl_CooperativeMatrixLayoutRowMajor);
        coopMatLoad(vb, sV, r_cols * VS + jq * MM, VS, gl_CooperativeMatrixLayoutColumnMajor);
        acc = coopMatMulAdd(oa, vb, acc);
    }
    coopMatStore(acc, sT32, gl_SubgroupID * MM * AS, AS, gl_CooperativeMatrixLayoutRowMajor);
    sync_subgroup();
}

// A tile: sX rows (q-like) against sY rows (k-like), fp32 into sT32.
void a_tile() {
    const uint sub = gl_SubgroupID;
    MAT_C acc = MAT_C(0.0);
    COOP_LOOP for (uint kq = 0u; kq < DK / MM; ++kq) {
        MAT_A xa;
        MAT_B yb;
        coopMatLoad(xa, sX, sub * MM * KS + kq * MM, KS, gl_CooperativeMatrixLayoutRowMajor);
        coopMatLoad(yb, sY, sub * MM * KS + kq * MM, KS, gl_CooperativeMatrixLayoutColumnMajor);
        acc = coopMatMulAdd(xa, yb, acc);
    }
    coopMatStore(acc, sT32, sub * MM * AS, AS, gl_CooperativeMatrixLayoutRowMajor);
    sync_subgroup();
}

// The 16-bit tile in sT16 as an A operand, as it is or transposed.
MAT_A tile_operand(bool transposed) {
    MAT_A a;
    if (transposed) {
        coopMatLoad(a, sT16, gl_SubgroupID * MM * PS, PS, gl_CooperativeMatrixLayoutColumnMajor);
    } else {
        coopMatLoad(a, sT16, gl_SubgroupID * MM * PS, PS, gl_CooperativeMatrixLayoutRowMajor);
    }
    return a;
}

// The tile in sF as an accumulator-shaped matrix (factors or addends).
MAT_C f_tile() {
    MAT_C f;
    coopMatLoad(f, sF, gl_SubgroupID * MM * AS, AS, gl_CooperativeMatrixLayoutRowMajor);
    return f;
}

void main() {
    const uint wg = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
    const uint c = wg % pc.NC;
    const uint bh = wg / pc.NC;
    if (bh >= pc.B * pc.H) return;  // uniform
    b_ = bh / pc.H;
    h_ = bh % pc.H;
    rows_ = chunk_len(c);
    t0_ = chunk_t0(c);
    last_ = rows_ - 1u;
    const uint sub = gl_SubgroupID, lane = gl_SubgroupInvocationID, lid = gl_LocalInvocationIndex;

    for (uint e = lid; e < CH * DV; e += WG) {
        const uint r = e / DV, j = e % DV;
        sV[r * VS + j] = r < rows_ ? v[vo_index(b_, t0_ + r, h_, j)] : MAT_T(0.0);
        sDO[r * VS + j] = r < rows_ ? dO[vo_index(b_, t0_ + r, h_, j)] : MAT_T(0.0);
    }
    // One power of two each for S and G (largest entry near 2^13).
    float s_local = 0.0, g_local = 0.0;
    for (uint e = lid; e < DK * DV; e += WG) {
        s_local = max(s_local, abs(states[state_index(b_, h_, chunk_slot(c), e / DV, e % DV)]));
        g_local = max(g_local, abs(dstates[state_index(b_, h_, chunk_slot(c), e / DV, e % DV)]));
    }
    s_local = subgroupMax(s_local);
    g_local = subgroupMax(g_local);
    if (lane == 0u) {
        sMax[sub] = s_local;
        sMax[NS + sub] = g_local;
    }
    barrier();
    float s_max = 0.0, g_max = 0.0;
    for (uint x = 0u; x < NS; ++x) {
        s_max = max(s_max, sMax[x]);
        g_max = max(g_max, sMax[NS + x]);
    }
    int ex;
    frexp(s_max, ex);
    const float s_scale = s_max > 0.0 && !isinf(s_max) ? exp2(float(clamp(14 - ex, -100, 100))) : 1.0;
    frexp(g_max, ex);
    const float g_scale = g_max > 0.0 && !isinf(g_max) ? exp2(float(clamp(14 - ex, -100, 100))) : 1.0;

    for (uint tb = 0u; tb < TB; ++tb) {
        const uint tblock = tb * NS + sub;
        const uint r0 = tblock * MM;
        const uint first = min(r0, last_), final_ = min(r0 + MM - 1u, last_);  // decay references
        MAT_C dq_acc[DK / MM];
        MAT_C dk_acc[DK / MM];
        MAT_C dv_acc[DV / MM];
        for (uint n = 0u; n < DK / MM; ++n) {
            dq_acc[n] = MAT_C(0.0);
            dk_acc[n] = MAT_C(0.0);
        }
        for (uint n = 0u; n < DV / MM; ++n) dv_acc[n] = MAT_C(0.0);

        // 1a. dq over blocks S before T (per-key) or up to T (otherwise): dA_TS (decayed,
        //     masked) times k_S (times exp(gcum_first - gcum_s) for per-key gates).
        const uint s_end = UNIFORM_MATRIX_OPS ? BLOCKS : (GATE == 2u ? tblock : tblock + 1u);
        for (uint sblock = 0u; sblock < s_end; ++sblock) {
            const bool live = GATE == 2u ? sblock < tblock : sblock <= tblock;
            da_tile(r0, sblock * MM);
            const float scale = finish_tile(r0, sblock * MM, true, true, live);
            stage_rows(1u, sblock * MM, first, -1.0);
            sync_subgroup();
            const MAT_A pa = tile_operand(false);
            const float unscale = 1.0 / scale;
            COOP_LOOP for (uint n = 0u; n < DK / MM; ++n) {
                MAT_B kb;
                coopMatLoad(kb, sY, sub * MM * KS + n * MM, KS, gl_CooperativeMatrixLayoutRowMajor);
                dq_acc[n] = dq_acc[n] + coopMatMulAdd(pa, kb, MAT_C(0.0)) * unscale;
            }
            sync_subgroup();
        }
        // 1b. dk and dv over blocks U after T (per-key) or from T (otherwise): dA_UT^T q_U, and
        //     A_UT^T dO_U with A_UT = q_U k_T^T (rows relative to the last row of T, per-key).
        const uint u_begin = UNIFORM_MATRIX_OPS ? 0u : (GATE == 2u ? tblock + 1u : tblock);
        for (uint ublock = u_begin; ublock < BLOCKS; ++ublock) {
            const bool live = GATE == 2u ? ublock > tblock : ublock >= tblock;
            stage_rows(0u, ublock * MM, final_, 1.0);
            // dA_UT^T q_U.
            da_tile(ublock * MM, r0);
            float scale = finish_tile(ublock * MM, r0, true, true, live);
            MAT_A pa = tile_operand(true);
            float unscale = 1.0 / scale;
            COOP_LOOP for (uint n = 0u; n < DK / MM; ++n) {
                MAT_B qb;
                coopMatLoad(qb, sX, sub * MM * KS + n * MM, KS, gl_CooperativeMatrixLayoutRowMajor);
                dk_acc[n] = dk_acc[n] + coopMatMulAdd(pa, qb, MAT_C(0.0)) * unscale;
            }
            sync_subgroup();
            // A_UT^T dO_U.
            stage_rows(1u, r0, final_, -1.0);
            sync_subgroup();
            a_tile();
            scale = finish_tile(ublock * MM, r0, true, true, live);
            pa = tile_operand(true);
            unscale = 1.0 / scale;
            COOP_LOOP for (uint n = 0u; n < DV / MM; ++n) {
                MAT_B ob;
                coopMatLoad(ob, sDO, ublock * MM * VS + n * MM, VS, gl_CooperativeMatrixLayoutRowMajor);
                dv_acc[n] = dv_acc[n] + coopMatMulAdd(pa, ob, MAT_C(0.0)) * unscale;
            }
            sync_subgroup();
        }

        if (GATE == 2u) {
            // 2. Per-key: the column-dependent parts of the off-diagonal decays, then the diagonal
            //    block by lanes (fp32), added through tiles.
            da_tile(r0, r0);  // sT32 = dA_TT for the diagonal sums below
            COOP_LOOP for (uint n = 0u; n < DK / MM; ++n) {
                for (uint e = lane; e < MM * MM; e += SG) {
                    const uint rr = e / MM, ii = e % MM, t = r0 + rr, i = n * MM + ii;
                    sF[(sub * MM + rr) * AS + ii] = t < rows_ ? exp(gc(t, i) - gc(first, i)) : 0.0;
                }
                sync_subgroup();
                dq_acc[n] = dq_acc[n] * f_tile();
                sync_subgroup();
                for (uint e = lane; e < MM * MM; e += SG) {
                    const uint rr = e / MM, ii = e % MM, t = r0 + rr, i = n * MM + ii;
                    sF[(sub * MM + rr) * AS + ii] = t < rows_ ? exp(gc(final_, i) - gc(t, i)) : 0.0;
                }
                sync_subgroup();
                dk_acc[n] = dk_acc[n] * f_tile();
                sync_subgroup();
                // Diagonal block: dq_t[i] += sum_{s <= t} dA[t][s] k_s[i] e(t, s)[i].
                for (uint e = lane; e < MM * MM; e += SG) {
                    const uint rr = e / MM, ii = e % MM, t = r0 + rr, i = n * MM + ii;
                    float x = 0.0;
                    for (uint cc = 0u; cc <= rr; ++cc) {
                        const uint s = r0 + cc;
                        if (t < rows_ && s < rows_) x += sT32[(sub * MM + rr) * AS + cc] * kf(s, i) * exp(gc(t, i) - gc(s, i));
                    }
                    sF[(sub * MM + rr) * AS + ii] = x;
                }
                sync_subgroup();
                dq_acc[n] = dq_acc[n] + f_tile();
                sync_subgroup();
                // dk_t[i] += sum_{u >= t} dA[u][t] q_u[i] e(u, t)[i]   (sT32 still holds dA_TT).
                for (uint e = lane; e < MM * MM; e += SG) {
                    const uint rr = e / MM, ii = e % MM, t = r0 + rr, i = n * MM + ii;
                    float x = 0.0;
                    for (uint cc = rr; cc < MM; ++cc) {
                        const uint u = r0 + cc;
                        if (t < rows_ && u < rows_) x += sT32[(sub * MM + cc) * AS + rr] * qf(u, i) * exp(gc(u, i) - gc(t, i));
                    }
                    sF[(sub * MM + rr) * AS + ii] = x;
                }
                sync_subgroup();
                dk_acc[n] = dk_acc[n] + f_tile();
                sync_subgroup();
            }
            // dv_t += sum_{u >= t} A[u][t] dO_u over the diagonal block: A_TT by lanes, then a product.
            for (uint e = lane; e < MM * MM; e += SG) {
                const uint rr = e / MM, cc = e % MM, u = r0 + rr, t = r0 + cc;
                float x = 0.0;
                if (u < rows_ && t <= u) {
                    for (uint i = 0u; i < DK; ++i) x += qf(u, i) * kf(t, i) * exp(gc(u, i) - gc(t, i));
                }
                sT32[(sub * MM + rr) * AS + cc] = x;
            }
            sync_subgroup();
            const float scale = finish_tile(r0, r0, true, false, true);
            const MAT_A pa = tile_operand(true);
            const float unscale = 1.0 / scale;
            COOP_LOOP for (uint n = 0u; n < DV / MM; ++n) {
                MAT_B ob;
                coopMatLoad(ob, sDO, r0 * VS + n * MM, VS, gl_CooperativeMatrixLayoutRowMajor);
                dv_acc[n] = dv_acc[n] + coopMatMulAdd(pa, ob, MAT_C(0.0)) * unscale;
            }
            sync_subgroup();
        }

        // 3. Inter-chunk terms, MM rows of S and G at a time.
        COOP_LOOP for (uint iq = 0u; iq < DK / MM; ++iq) {
            barrier();  // the previous slices are consumed
            for (uint e = lid; e < MM * DV; e += WG) {
                const uint ii = e / DV, j = e % DV;
                sSl[ii * VS + j] = MAT_T(states[state_index(b_, h_, chunk_slot(c), iq * MM + ii, j)] * s_scale);
                sGl[ii * VS + j] = MAT_T(dstates[state_index(b_, h_, chunk_slot(c), iq * MM + ii, j)] * g_scale);
            }
            barrier();
            // dq[:, iq] += exp(gcum_t) o (dO_T S^T);  dk[:, iq] += exp(gcum_last - gcum_t) o (v_T G^T).
            MAT_C tq = MAT_C(0.0), tk = MAT_C(0.0);
            COOP_LOOP for (uint jq = 0u; jq < DV / MM; ++jq) {
                MAT_A oa, va;
                MAT_B sb, gb;
                coopMatLoad(oa, sDO, r0 * VS + jq * MM, VS, gl_CooperativeMatrixLayoutRowMajor);
                coopMatLoad(va, sV, r0 * VS + jq * MM, VS, gl_CooperativeMatrixLayoutRowMajor);
                coopMatLoad(sb, sSl, jq * MM, VS, gl_CooperativeMatrixLayoutColumnMajor);
                coopMatLoad(gb, sGl, jq * MM, VS, gl_CooperativeMatrixLayoutColumnMajor);
                tq = coopMatMulAdd(oa, sb, tq);
                tk = coopMatMulAdd(va, gb, tk);
            }
            for (uint e = lane; e < MM * MM; e += SG) {
                const uint rr = e / MM, ii = e % MM, t = r0 + rr, i = iq * MM + ii;
                sF[(sub * MM + rr) * AS + ii] = GATE != 0u && t < rows_ ? exp(gc(t, i)) : 1.0;
            }
            sync_subgroup();
            dq_acc[iq] = dq_acc[iq] + tq * f_tile() * (1.0 / s_scale);
            sync_subgroup();
            // dv += (k_T o exp(gcum_last - gcum_t))[:, iq] G[iq, :]; the same decays are dk's factors.
            float k_max = 0.0;
            for (uint e = lane; e < MM * MM; e += SG) {
                const uint rr = e / MM, ii = e % MM, t = r0 + rr, i = iq * MM + ii;
                const float f = GATE != 0u && t < rows_ ? exp(gc(last_, i) - gc(t, i)) : 1.0;
                sF[(sub * MM + rr) * AS + ii] = f;
                const float x = kf(t, i) * f;
                sT32[(sub * MM + rr) * AS + ii] = x;
                k_max = max(k_max, abs(x));
            }
            sync_subgroup();
            dk_acc[iq] = dk_acc[iq] + tk * f_tile() * (1.0 / g_scale);
            const float k_scale = tile_scale(k_max);
            for (uint e = lane; e < MM * MM; e += SG) {
                const uint rr = e / MM, ii = e % MM;
                sT16[(sub * MM + rr) * PS + ii] = MAT_T(sT32[(sub * MM + rr) * AS + ii] * k_scale);
            }
            sync_subgroup();
            const MAT_A ka = tile_operand(false);
            const float unscale = 1.0 / (k_scale * g_scale);
            COOP_LOOP for (uint n = 0u; n < DV / MM; ++n) {
                MAT_B gb;
                coopMatLoad(gb, sGl, n * MM, VS, gl_CooperativeMatrixLayoutRowMajor);
                dv_acc[n] = dv_acc[n] + coopMatMulAdd(ka, gb, MAT_C(0.0)) * unscale;
            }
            sync_subgroup();
        }

        // 4. dq, dk, dv of rows T through the subgroup's fp32 tile.
        for (uint which = 0u; which < 3u; ++which) {
            const uint cols = which == 2u ? DV : DK;
            COOP_LOOP for (uint n = 0u; n < cols / MM; ++n) {
                coopMatStore(which == 0u ? dq_acc[n] : which == 1u ? dk_acc[n] : dv_acc[n], sT32, sub * MM * AS, AS,
                             gl_CooperativeMatrixLayoutRowMajor);
                sync_subgroup();
                for (uint e = lane; e < MM * MM; e += SG) {
                    const uint rr = e / MM, cc = e % MM, t = r0 + rr;
                    if (t < rows_) {
                        const float x = sT32[(sub * MM + rr) * AS + cc];
                        if (which == 0u) dq[qk_index(b_, t0_ + t, h_, n * MM + cc)] = STORE_OUT(x);
                        else if (which == 1u) dk[qk_index(b_, t0_ + t, h_, n * MM + cc)] = STORE_OUT(x);
                        else dv[vo_index(b_, t0_ + t, h_, n * MM + cc)] = STORE_OUT(x);
                    }
                }
                sync_subgroup();
            }
        }
    }
}
