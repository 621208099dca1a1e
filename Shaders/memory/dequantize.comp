#version 450
//! variant f32 -DOUT_T=float
//! variant f16 -DOUT_T=float16_t -DUSE_16BIT
//! variant bf16 -DOUT_T=uint16_t -DOUT_BF16 -DUSE_16BIT
// out = float(q) * scale of q's block (common/int8.glsl has the layout), one invocation per
// 32-bit word of values (four elements, which may belong to two rows). The product is one
// correctly rounded multiplication, then the output type's rounding (f16 by the device's
// conversion, bf16 to nearest even). A NaN or infinite scale makes its whole block NaN.
#ifdef USE_16BIT
#extension GL_EXT_shader_16bit_storage : require
#endif
#include "common/grid.glsl"
#include "common/dtype.glsl"
#include "common/int8.glsl"

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer Values { uint values[]; };
layout(std430, binding = 1) readonly buffer Tail { uint tail[]; };
layout(std430, binding = 2) readonly buffer Scales { float scales[]; };
layout(std430, binding = 3) writeonly buffer Out { OUT_T o[]; };

void main() {
    const uint id = ITEM_ID;
    if (id >= pc.items) return;
    const uint word = id < pc.full_words ? values[id] : tail[0];
    for (uint j = 0u; j < 4u; ++j) {
        const uint e = id * 4u + j;
        if (e < pc.count) {
            const int q = bitfieldExtract(int(word), int(8u * j), 8);
            o[e] = STORE_OUT(float(q) * scales[block_of(e)]);
        }
    }
}
