// Shared by the delta rule's cooperative-matrix kernels: square MM x MM x MM fragments of MAT_T
// (f16) with fp32 accumulators, shared-memory row strides and the power-of-two tile scaling of
// fp32 intermediates rounded to 16 bits. Include after the specialization constants DK, DV, MM,
// SG and UNIFORM_MATRIX_OPS.
#ifndef VKATTN_DELTA_COOPMAT_GLSL
#define VKATTN_DELTA_COOPMAT_GLSL

// CPU devices emulate cooperative matrices: their variants (-DROLLED) keep the loops around
// matrix operations rolled, or compiling takes minutes (as attention/coopmat.glsl explains).
#ifdef ROLLED
#define COOP_LOOP [[dont_unroll]]
#else
#define COOP_LOOP
#endif

#define MAT_A coopmat<MAT_T, gl_ScopeSubgroup, MM, MM, gl_MatrixUseA>
#define MAT_B coopmat<MAT_T, gl_ScopeSubgroup, MM, MM, gl_MatrixUseB>
#define MAT_C coopmat<float, gl_ScopeSubgroup, MM, MM, gl_MatrixUseAccumulator>

const uint WG = gl_WorkGroupSize.x;
const uint NS = WG / SG;        // subgroups
const uint KS = DK + 8u;        // 16-bit row stride of [row][Dk] tiles (16 bytes of padding)
const uint VS = DV + 8u;        // 16-bit row stride of [row][Dv] tiles
const uint AS = MM + 4u;        // fp32 row stride of MM x MM tiles
const uint PS = MM + 8u;        // 16-bit row stride of MM x MM tiles

// A power of two bringing a largest magnitude `m` near 2^13 (f16's largest finite value is
// 65504): fp32 values are multiplied by it before rounding to f16, and products by its inverse
// after, both exactly. 1 for 0, infinities and NaN.
float pow2_scale(float m) {
    if (!(m > 0.0) || isinf(m)) return 1.0;
    int e;
    frexp(m, e);  // m = f 2^e, f in [0.5, 1)
    return exp2(float(clamp(14 - e, -100, 100)));
}

// pow2_scale of the largest `local_max` over the subgroup (uniform over it).
float tile_scale(float local_max) { return pow2_scale(subgroupMax(local_max)); }

#endif
