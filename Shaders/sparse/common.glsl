// Shared by the sparse kernels: value types and vector widths chosen by -D variants.
//   VALUE_F16: values are float16_t (16-bit storage: loads and conversions only), else float.
//   VALUE_BF16: values are bf16 words (uint16_t), widened exactly by LOAD_VALUE.
//   DENSE_BF16: the dense operand's DENSE_T words are bf16, widened by LOAD_DENSE.
//   VEC: 4 (vec4 views of the dense operands) or 1 (scalar views).
#ifndef VKATTN_SPARSE_COMMON_GLSL
#define VKATTN_SPARSE_COMMON_GLSL

#if defined(VALUE_F16) || defined(VALUE_BF16)
#extension GL_EXT_shader_16bit_storage : require
#endif
#ifdef VALUE_F16
#define VALUE_T float16_t
#elif defined(VALUE_BF16)
#define VALUE_T uint16_t
#else
#define VALUE_T float
#endif
#ifdef VALUE_BF16
#define LOAD_VALUE(x) uintBitsToFloat(uint(x) << 16)
#else
#define LOAD_VALUE(x) float(x)
#endif
#ifdef DENSE_BF16
#define LOAD_DENSE(x) uintBitsToFloat(uint(x) << 16)
#else
#define LOAD_DENSE(x) float(x)
#endif

#if VEC == 4
#define ACC_T vec4
#else
#define ACC_T float
#endif

// Row offsets read as a clamped range, so that malformed offsets (validation skipped or data
// changed after it) can never send a kernel outside the nonzero arrays.
#define ROW_RANGE(offsets, row, nnz, start, end) \
    start = uint(clamp(offsets[row], 0, int(nnz))); \
    end = uint(clamp(offsets[(row) + 1u], int(start), int(nnz)))

// A column index clamped into [0, limit).
#define CLAMP_INDEX(c, limit) uint(clamp(c, 0, int(limit) - 1))

#endif
