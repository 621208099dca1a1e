// Shared by the cooperative-matrix attention kernels: fragment types, shared-memory strides and
// the lanes-per-row layout of the coordinate work (softmax, masks) that KHR cooperative matrices
// cannot do in registers. Include after the specialization constants D, BC, SG, MM, NN, KK and
// the MAT_T define.
#ifndef VKATTN_ATTENTION_COOPMAT_GLSL
#define VKATTN_ATTENTION_COOPMAT_GLSL

#define MAT_A coopmat<MAT_T, gl_ScopeSubgroup, MM, KK, gl_MatrixUseA>
#define MAT_B coopmat<MAT_T, gl_ScopeSubgroup, KK, NN, gl_MatrixUseB>
#define MAT_C coopmat<float, gl_ScopeSubgroup, MM, NN, gl_MatrixUseAccumulator>

const uint WG = gl_WorkGroupSize.x;
const uint NS = WG / SG;                    // subgroups
const uint D8 = D / 8u;                     // 16-byte words per row of D 16-bit elements
const uint DW = D8 + 1u;                    // shared row stride in words (one word of padding)
const uint SS = BC + 4u;                    // fp32 scratch row stride (16 bytes of padding)
const uint PS = BC + 8u;                    // 16-bit P row stride (16 bytes of padding)
// Lanes of a subgroup split its MM rows: TPR lanes per row (SG >= MM), or RPL rows per lane.
const uint TPR = SG >= MM ? SG / MM : 1u;
const uint RPL = SG >= MM ? 1u : MM / SG;
const uint CPL = BC / TPR;                  // columns of a BC-wide row per lane

// Reductions over the TPR lanes of a row (adjacent lanes; TPR is a power of two).
float lanes_max(float x) {
    for (uint o = TPR >> 1; o > 0u; o >>= 1) x = max(x, subgroupShuffleXor(x, o));
    return x;
}

float lanes_sum(float x) {
    for (uint o = TPR >> 1; o > 0u; o >>= 1) x += subgroupShuffleXor(x, o);
    return x;
}

#endif
