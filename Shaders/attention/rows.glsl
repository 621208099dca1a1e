// Row access of the scalar attention kernels for any head dim. Rows of a [*, H, W] tensor are
// W elements wide (W = DK for Q, K, dQ, dK; DV for V, O, dO, dV); the kernels work on quads
// (vec4) of a padded width (DKP, DVP: multiples of 4 x QL) and see zeros past W. Include after
// common/dtype.glsl.
#ifndef VKATTN_ATTENTION_ROWS_GLSL
#define VKATTN_ATTENTION_ROWS_GLSL

// Defines `vec4 NAME(uint base, uint dq, uint width)`: elements 4 dq ... 4 dq + 3 of the row
// starting at element `base` of BUF, zero past `width` (never read there).
#define DEFINE_QUAD_LOAD(NAME, BUF)                                                                  \
    vec4 NAME(uint base, uint dq, uint width) {                                                      \
        const uint d0 = dq * 4u;                                                                     \
        if (d0 + 3u < width) {                                                                       \
            return vec4(LOAD_IN(BUF[base + d0]), LOAD_IN(BUF[base + d0 + 1u]),                       \
                        LOAD_IN(BUF[base + d0 + 2u]), LOAD_IN(BUF[base + d0 + 3u]));                 \
        }                                                                                            \
        vec4 value = vec4(0.0);                                                                      \
        for (uint c = 0u; c < 4u; ++c) {                                                             \
            if (d0 + c < width) value[c] = LOAD_IN(BUF[base + d0 + c]);                              \
        }                                                                                            \
        return value;                                                                                \
    }

// Stores quad `dq` of VALUE into the row at element `base` of BUF, skipping elements past `width`.
#define STORE_QUAD(BUF, base, dq, width, VALUE)                                                      \
    {                                                                                                \
        const uint d0_ = (dq) * 4u;                                                                  \
        const vec4 v_ = (VALUE);                                                                     \
        for (uint c_ = 0u; c_ < 4u; ++c_) {                                                          \
            if (d0_ + c_ < (width)) BUF[(base) + d0_ + c_] = STORE_OUT(v_[c_]);                      \
        }                                                                                            \
    }

#endif
