#version 450
//! variant f32 -DIN_T=float
//! variant f16 -DIN_T=float16_t -DUSE_16BIT
//! variant bf16 -DIN_T=uint16_t -DIN_BF16 -DUSE_16BIT
// Symmetric int8 quantization with one scale per block of 32 elements along the last
// dimension (common/int8.glsl has the layout), in two passes separated by a barrier:
//   PASS 0, one invocation per block: scale = max |x| / 127, correctly rounded (0 for a block
//     of zeros; a block holding NaN gets a NaN scale, else one holding an infinity +inf);
//   PASS 1, one invocation per 32-bit word of values: q = the integer nearest x / scale (the
//     exact quotient; ties away from zero), clamped to [-127, 127]; q = 0 where the scale is
//     0 or not finite. Four q per word, little-endian.
// Both are exact, whatever the device's division precision (2.5 ulp in Vulkan): a first guess
// by division is corrected with exact residuals. Products of a 12-bit half of the scale with
// an integer of at most 8 bits are exact, and the one difference of nearly equal numbers is
// exact by Sterbenz' lemma, so every comparison below is exact (`precise` forbids any
// contraction that could change that). This holds while the scale's low half is normal (scales
// above about 2^-102); devices that flush subnormals may differ below.
#ifdef USE_16BIT
#extension GL_EXT_shader_16bit_storage : require
#endif
#include "common/grid.glsl"
#include "common/dtype.glsl"
#include "common/int8.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint PASS = 0;

layout(std430, binding = 0) readonly buffer X { IN_T x[]; };
layout(std430, binding = 1) buffer Scales { float scales[]; };
layout(std430, binding = 2) writeonly buffer Values { uint values[]; };
layout(std430, binding = 3) writeonly buffer Tail { uint tail[]; };

// The float nearest m / 127 for a finite m > 0 (ties cannot occur: m / 127 is never halfway
// between two floats).
float div127(float m) {
    float s = m / 127.0;
    for (uint i = 0u; i < 8u; ++i) {
        const uint sb = floatBitsToUint(s);
        // r = m - 127 s exactly: s = hi + lo with hi its top 12 significant bits.
        const float hi = uintBitsToFloat(sb & 0xFFFFF000u);
        precise const float lo = s - hi;
        precise const float d = m - 127.0 * hi;
        precise const float r = d - 127.0 * lo;
        precise const float up = uintBitsToFloat(sb + 1u) - s;
        precise const float down = sb == 0u ? 0.0 : s - uintBitsToFloat(sb - 1u);
        // s is nearest when -down / 2 <= m / 127 - s <= up / 2, i.e. -127 down <= 2 r <= 127 up.
        if (2.0 * r > 127.0 * up) {
            s = uintBitsToFloat(sb + 1u);
        } else if (2.0 * r < -127.0 * down) {
            s = uintBitsToFloat(sb - 1u);
        } else {
            break;
        }
    }
    return s;
}

// Whether ax >= h * s exactly, with s = hi + lo split as in div127 and 2h an odd integer
// below 256.
bool at_least(float ax, float h, float hi, float lo) {
    precise const float d = ax - h * hi;
    precise const float p = h * lo;
    return d >= p;
}

// q for x under a finite, positive scale s: the integer nearest |x| / s (ties up), signed.
int quantize_one(float x, float s) {
    const uint sb = floatBitsToUint(s);
    if (sb == 0u || sb >= 0x7F800000u) return 0;  // a block of zeros, or one with NaN or inf
    const float ax = abs(x);
    const float hi = uintBitsToFloat(sb & 0xFFFFF000u);
    precise const float lo = s - hi;
    uint n = uint(min(ax / s, 127.0) + 0.5);  // within one of the answer
    for (uint i = 0u; i < 2u && n > 0u && !at_least(ax, float(n) - 0.5, hi, lo); ++i) --n;
    for (uint i = 0u; i < 2u && n < 127u && at_least(ax, float(n) + 0.5, hi, lo); ++i) ++n;
    return (floatBitsToUint(x) >> 31) != 0u ? -int(n) : int(n);
}

void main() {
    const uint id = ITEM_ID;
    if (id >= pc.items) return;
    if (PASS == 0u) {
        const uint row = id / pc.blocks_per_row;
        const uint first = (id - row * pc.blocks_per_row) * 32u;
        const uint len = min(32u, pc.width - first);
        const uint start = row * pc.width + first;
        // max |x| by bits: non-negative floats order as their bit patterns, infinity above
        // every finite value and NaN above infinity, with no NaN comparison involved.
        uint maxbits = 0u;
        for (uint j = 0u; j < len; ++j) {
            maxbits = max(maxbits, floatBitsToUint(LOAD_IN(x[start + j])) & 0x7FFFFFFFu);
        }
        scales[id] = maxbits == 0u ? 0.0
                   : maxbits >= 0x7F800000u ? uintBitsToFloat(maxbits)
                   : div127(uintBitsToFloat(maxbits));
        return;
    }
    uint word = 0u;
    for (uint j = 0u; j < 4u; ++j) {
        const uint e = id * 4u + j;
        if (e < pc.count) {
            const int q = quantize_one(LOAD_IN(x[e]), scales[block_of(e)]);
            word |= (uint(q) & 0xFFu) << (8u * j);
        }
    }
    if (id < pc.full_words) {
        values[id] = word;
    } else {
        tail[0] = word;
    }
}
