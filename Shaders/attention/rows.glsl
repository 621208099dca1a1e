// Row access of the scalar attention kernels for any head dim. Row r of a [*, H, W] tensor
// holds elements r*W ... r*W + W - 1 (W = DK for Q, K, dQ, dK; DV for V, O, dO, dV); the kernels
// work on quads (vec4) of a padded width (DKP, DVP: multiples of 4 x QL) and see zeros past W.
// Include after common/dtype.glsl.
#ifndef VKATTN_ATTENTION_ROWS_GLSL
#define VKATTN_ATTENTION_ROWS_GLSL

// Defines `vec4 NAME(uint row, uint dq, uint width)`: elements 4 dq ... 4 dq + 3 of row `row`
// of BUF, converted by LOAD, zero past `width` (never read there).
#define DEFINE_QUAD_LOAD(NAME, BUF, LOAD)                                                            \
    vec4 NAME(uint row, uint dq, uint width) {                                                       \
        const uint d0 = dq * 4u, base = row * width;                                                 \
        if (d0 + 3u < width) {                                                                       \
            return vec4(LOAD(BUF[base + d0]), LOAD(BUF[base + d0 + 1u]),                             \
                        LOAD(BUF[base + d0 + 2u]), LOAD(BUF[base + d0 + 3u]));                       \
        }                                                                                            \
        vec4 value = vec4(0.0);                                                                      \
        for (uint c = 0u; c < 4u; ++c) {                                                             \
            if (d0 + c < width) value[c] = LOAD(BUF[base + d0 + c]);                                 \
        }                                                                                            \
        return value;                                                                                \
    }

// Defines the same for an int8-quantized tensor (KVQuantization's layout): its i8 values read
// four to a uint word from WORDS, each block of 32 elements of a row scaled by its f32 entry of
// SCALES ([*, H, ceil(W / 32)]). A quad never straddles a block (32 is a multiple of 4).
#define DEFINE_QUAD_LOAD_I8(NAME, WORDS, SCALES)                                                     \
    vec4 NAME(uint row, uint dq, uint width) {                                                       \
        const uint d0 = dq * 4u;                                                                     \
        if (d0 >= width) return vec4(0.0);                                                           \
        const float scale = SCALES[row * ((width + 31u) / 32u) + d0 / 32u];                          \
        const uint e0 = row * width + d0;                                                            \
        vec4 value = vec4(0.0);                                                                      \
        if ((e0 & 3u) == 0u && d0 + 3u < width) {                                                    \
            const int w = int(WORDS[e0 >> 2u]);                                                      \
            value = vec4(bitfieldExtract(w, 0, 8), bitfieldExtract(w, 8, 8),                         \
                         bitfieldExtract(w, 16, 8), bitfieldExtract(w, 24, 8));                      \
        } else {                                                                                     \
            for (uint c = 0u; c < 4u; ++c) {                                                         \
                const uint e = e0 + c;                                                               \
                if (d0 + c < width) value[c] = float(bitfieldExtract(int(WORDS[e >> 2u]), int(8u * (e & 3u)), 8)); \
            }                                                                                        \
        }                                                                                            \
        return value * scale;                                                                        \
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
