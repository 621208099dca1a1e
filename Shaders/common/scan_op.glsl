// The associative operator of a prefix scan, chosen by the including shader's variant:
// -DOP_ADD or -DOP_MAX, with -DT=float|int|uint and -DT_F32|T_I32|T_U32. Values travel through buffers as 32-bit words
// (T_BITS / T_FROM), so one set of bindings serves every element type.
#ifndef VKATTN_SCAN_OP_GLSL
#define VKATTN_SCAN_OP_GLSL

#if defined(OP_ADD)
#define SCAN_OP(a, b) ((a) + (b))
#define SCAN_IDENTITY T(0)
#elif defined(OP_MAX)
// NaN propagates (as PyTorch's cummax and NumPy's maximum.accumulate do): GLSL's max and the
// subgroup max operations leave NaN undefined, so the max scan orders floats through keys
// (max_key) in which NaN sorts above +inf.
#define SCAN_OP(a, b) nan_max((a), (b))
// -inf: max(-inf, x) == x for every x, so padding and empty prefixes change nothing.
#define SCAN_IDENTITY uintBitsToFloat(0xFF800000u)
float nan_max(float a, float b) { return isnan(a) || isnan(b) ? uintBitsToFloat(0x7FC00000u) : max(a, b); }
// A uint that orders like the float, NaN (any) above everything.
uint max_key(float x) {
    const uint u = floatBitsToUint(x);
    return isnan(x) ? 0xFFFFFFFFu : ((u & 0x80000000u) != 0u ? ~u : u | 0x80000000u);
}
// The float of a key; keys below -inf's (umax's identity 0, an empty exclusive prefix) are -inf.
float key_value(uint k) {
    if (k == 0xFFFFFFFFu) return uintBitsToFloat(0x7FC00000u);
    if (k < 0x007FFFFFu) return uintBitsToFloat(0xFF800000u);
    return uintBitsToFloat((k & 0x80000000u) != 0u ? k & 0x7FFFFFFFu : ~k);
}
#else
#error "define OP_ADD or OP_MAX"
#endif

// T <-> 32-bit word.
float t_from_bits_f(uint w) { return uintBitsToFloat(w); }
int t_from_bits_i(uint w) { return int(w); }
uint t_from_bits_u(uint w) { return w; }
uint t_bits(float v) { return floatBitsToUint(v); }
uint t_bits(int v) { return uint(v); }
uint t_bits(uint v) { return v; }
#if defined(T_F32)
#define T_FROM(w) t_from_bits_f(w)
#elif defined(T_I32)
#define T_FROM(w) t_from_bits_i(w)
#else
#define T_FROM(w) t_from_bits_u(w)
#endif

#endif
