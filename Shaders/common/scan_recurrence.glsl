// Values of a diagonal linear recurrence h = a * h_prev + b: real (-DREAL) or complex (-DCOMPLEX,
// (re, im) pairs). Every value is a vec2; real values keep .y == 0.
#ifndef VKATTN_SCAN_RECURRENCE_GLSL
#define VKATTN_SCAN_RECURRENCE_GLSL

#if defined(COMPLEX)
#define CW 2u   // floats per value
vec2 cmul(vec2 a, vec2 b) { return vec2(a.x * b.x - a.y * b.y, a.x * b.y + a.y * b.x); }
vec2 cconj(vec2 a) { return vec2(a.x, -a.y); }
#else
#define CW 1u
vec2 cmul(vec2 a, vec2 b) { return vec2(a.x * b.x, 0.0); }
vec2 cconj(vec2 a) { return a; }
#endif

const vec2 C_ONE = vec2(1.0, 0.0);
const vec2 C_ZERO = vec2(0.0);

// Value j of a 4-float vector (j < 4 / CW).
vec2 value_of(vec4 v, uint j) {
#if defined(COMPLEX)
    return j == 0u ? v.xy : v.zw;
#else
    return vec2(v[j], 0.0);
#endif
}

// Sets value j of a 4-float vector.
void set_value(inout vec4 v, uint j, vec2 x) {
#if defined(COMPLEX)
    if (j == 0u) v.xy = x; else v.zw = x;
#else
    v[j] = x.x;
#endif
}

#endif
