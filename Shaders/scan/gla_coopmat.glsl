// Shared by the cooperative-matrix GLA kernels: square MM x MM x MM fragments of MAT_T with fp32
// accumulators, the lane layout and the 16-bit tile scaling. Include after the specialization
// constants DK, DV, MM and SG.
#ifndef VKATTN_SCAN_GLA_COOPMAT_GLSL
#define VKATTN_SCAN_GLA_COOPMAT_GLSL

// CPU devices emulate cooperative matrices: their variants (-DROLLED) keep the loops around
// matrix operations rolled, or compiling takes minutes (see attention/coopmat.glsl).
#ifdef ROLLED
#define COOP_LOOP [[dont_unroll]]
#else
#define COOP_LOOP
#endif
// Mesa 26.2's lavapipe loses the later work of a subgroup that runs more cooperative-matrix
// operations than the other subgroups of its workgroup (a triangular loop whose trip count
// depends on gl_SubgroupID: the longer subgroup's final stores never happen). With
// UNIFORM_MATRIX_OPS (specialization constant 8, set on CPU devices) every subgroup walks every
// block pair, the unneeded ones masked to zero.
layout(constant_id = 8) const bool UNIFORM_MATRIX_OPS = false;

#define MAT_A coopmat<MAT_T, gl_ScopeSubgroup, MM, MM, gl_MatrixUseA>
#define MAT_B coopmat<MAT_T, gl_ScopeSubgroup, MM, MM, gl_MatrixUseB>
#define MAT_C coopmat<float, gl_ScopeSubgroup, MM, MM, gl_MatrixUseAccumulator>

const uint WG = gl_WorkGroupSize.x;
const uint NS = WG / SG;        // subgroups
const uint KS = DK + 8u;        // 16-bit row stride of [row][Dk] tiles (16 bytes of padding)
const uint VS = DV + 8u;        // 16-bit row stride of [row][Dv] tiles
const uint AS = MM + 4u;        // fp32 row stride of MM x MM tiles
const uint PS = MM + 8u;        // 16-bit row stride of MM x MM tiles

// A power of two bringing a subgroup's tile (largest magnitude `local_max` over this lane's
// elements) near 2^13 before it is rounded to 16 bits; products are multiplied back exactly.
float tile_scale(float local_max) {
    const float m = subgroupMax(local_max);
    if (!(m > 0.0) || isinf(m)) return 1.0;
    int e;
    frexp(m, e);
    return exp2(float(clamp(14 - e, -100, 100)));
}

#endif
