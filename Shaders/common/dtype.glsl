// Storage types of the scalar kernels, chosen per -D variant. bfloat16 has no GLSL type that
// every glslc and device accept: it is stored as uint16_t words (the upper half of an IEEE
// float32, which is what bf16 is), widened exactly by a shift and narrowed with
// round-to-nearest-even. f16 and f32 convert with float() and their constructors. Shaders that
// use 16-bit words enable GL_EXT_shader_16bit_storage themselves (USE_16BIT variants).
//   IN_BF16   IN_T is bf16        LOAD_IN(x)    float from an IN_T element
//   OUT_BF16  OUT_T is bf16       STORE_OUT(x)  an OUT_T element from a float
//   DO_BF16   DO_T is bf16        LOAD_DO(x)    (the backward's dO)
//   O_BF16    O_T is bf16         LOAD_O(x)     (the backward's O)
#ifndef VKATTN_COMMON_DTYPE_GLSL
#define VKATTN_COMMON_DTYPE_GLSL

float bf16_to_float(uint bits) { return uintBitsToFloat(bits << 16); }

// Round to nearest, ties to even; infinities stay infinite, NaN stays NaN (quiet).
uint float_to_bf16(float x) {
    const uint u = floatBitsToUint(x);
    if (isnan(x)) return (u >> 16) | 0x40u;
    return (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
}

#ifdef IN_BF16
#define LOAD_IN(x) bf16_to_float(uint(x))
#else
#define LOAD_IN(x) float(x)
#endif
#ifdef OUT_BF16
#define STORE_OUT(x) uint16_t(float_to_bf16(x))
#else
#define STORE_OUT(x) OUT_T(x)
#endif
#ifdef DO_BF16
#define LOAD_DO(x) bf16_to_float(uint(x))
#else
#define LOAD_DO(x) float(x)
#endif
#ifdef O_BF16
#define LOAD_O(x) bf16_to_float(uint(x))
#else
#define LOAD_O(x) float(x)
#endif

#endif
