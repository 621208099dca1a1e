// Shared by the cooperative-matrix attention kernels: fragment types, shared-memory strides and
// the lanes-per-row layout of the coordinate work (softmax, masks) that KHR cooperative matrices
// cannot do in registers. Include after the specialization constants DK, DV (row widths of Q/K
// and V/O), DKP, DVP (the widths padded to multiples of 8, KK and NN), BR, BC, SG, MM, NN, KK
// and the MAT_T define; STREAM (default BC) is the width of the score tiles: the keys of a tile
// (forward, dQ) or the query rows of one (dK/dV).
#ifndef VKATTN_ATTENTION_COOPMAT_GLSL
#define VKATTN_ATTENTION_COOPMAT_GLSL

// Loops around cooperative-matrix operations. CPU devices (lavapipe) emulate each operation
// with dozens of lane instructions; fully unrolled, a backward kernel takes minutes to compile
// there, so their variants (-DROLLED) keep these loops rolled. GPUs get them unrolled, which
// keeps the fragment arrays in registers.
#ifdef ROLLED
#define COOP_LOOP [[dont_unroll]]
#else
#define COOP_LOOP
#endif

#define MAT_A coopmat<MAT_T, gl_ScopeSubgroup, MM, KK, gl_MatrixUseA>
#define MAT_B coopmat<MAT_T, gl_ScopeSubgroup, KK, NN, gl_MatrixUseB>
#define MAT_C coopmat<float, gl_ScopeSubgroup, MM, NN, gl_MatrixUseAccumulator>

const uint WG = gl_WorkGroupSize.x;
const uint NS = WG / SG;                    // subgroups
const uint K8 = DKP / 8u;                   // 16-byte words per padded Q or K row
const uint V8 = DVP / 8u;                   // 16-byte words per padded V or dO row
const uint DWK = K8 + 1u;                   // shared row strides in words (one word of padding)
const uint DWV = V8 + 1u;
#ifndef STREAM
#define STREAM BC
#endif
const uint SS = STREAM + 4u;                // fp32 score row stride (16 bytes of padding)
const uint PS = STREAM + 8u;                // 16-bit P (dS) row stride (16 bytes of padding)
// Lanes of a subgroup split its MM rows: TPR lanes per row (SG >= MM), or RPL rows per lane.
const uint TPR = SG >= MM ? SG / MM : 1u;
const uint RPL = SG >= MM ? 1u : MM / SG;
const uint CPL = STREAM / TPR;              // columns of a score row per lane

// Defines `uvec4 NAME(uint row, uint c, uint width)`: word c (16-bit elements 8c ... 8c + 7) of
// row `row` of a [rows, width] tensor, zeros past `width`. Rows whose width is a multiple of 8
// are read as words (WORDS, the uvec4 view of the binding); others element by element (HALVES,
// a uint16_t view of the same binding).
#define DEFINE_WORD_LOAD(NAME, WORDS, HALVES)                                                        \
    uvec4 NAME(uint row, uint c, uint width) {                                                       \
        if (width % 8u == 0u) return c < width / 8u ? WORDS[row * (width / 8u) + c] : uvec4(0u);     \
        uvec4 word = uvec4(0u);                                                                      \
        for (uint e = 0u; e < 8u; ++e) {                                                             \
            const uint d = c * 8u + e;                                                               \
            if (d < width) word[e >> 1u] |= uint(HALVES[row * width + d]) << (16u * (e & 1u));       \
        }                                                                                            \
        return word;                                                                                 \
    }

// Reductions over the TPR lanes of a row (adjacent lanes; TPR is a power of two).
float lanes_max(float x) {
    for (uint o = TPR >> 1; o > 0u; o >>= 1) x = max(x, subgroupShuffleXor(x, o));
    return x;
}

float lanes_sum(float x) {
    for (uint o = TPR >> 1; o > 0u; o >>= 1) x += subgroupShuffleXor(x, o);
    return x;
}

// A power of two that brings a subgroup's tile of 16-bit operands (largest magnitude
// `local_max` over this lane's elements) near 2^13: P and dS of the backward scale like 1 / keys
// and would otherwise sink into f16's subnormals. Products are multiplied back by the inverse,
// exactly. Uniform over the subgroup.
float tile_scale(float local_max) {
    const float m = subgroupMax(local_max);
    if (!(m > 0.0) || isinf(m)) return 1.0;
    int e;
    frexp(m, e);  // m = f * 2^e, f in [0.5, 1)
    return exp2(float(clamp(14 - e, -100, 100)));
}

#endif
