// Shared by the Mamba-1 selective-scan kernels (Shaders/mamba/selective_*.comp): the push
// constants (SelectiveScanPush in SelectiveScanPlan.swift), flags and the discretisation.
// Rows are the flat time rows of all sequences (b * L + t dense, or packed); the chunk table
// holds per chunk (start row, rows, sequence, 0), then each sequence's first chunk
// (nSeq + 1 entries). Chunk states and maps are [nChunks][Dch][N] planes.
#ifndef VKATTN_COMMON_MAMBA_SELECTIVE_GLSL
#define VKATTN_COMMON_MAMBA_SELECTIVE_GLSL

layout(push_constant) uniform Push {
    uint T;        // rows
    uint Dch;      // channels
    uint N;        // state size
    uint nChunks;
    uint nSeq;
    uint flags;
    uint plane;    // nChunks * Dch * N: floats between the planes of maps and states
    uint nGroups;  // channel groups per chunk (workgroups per chunk)
    uint partB;    // float offset of dB's partials in the partials buffer
    uint partC;    // float offset of dC's partials
} pc;

const uint HAS_D = 1u;
const uint HAS_Z = 2u;
const uint HAS_BIAS = 4u;
const uint SOFTPLUS = 8u;
const uint HAS_INIT = 16u;
const uint HAS_FINAL = 32u;
const uint WRITE_Y = 64u;    // pass 3 writes y before the gate (backward's workspace)
const uint WRITE_DZ = 128u;
const uint WRITE_DD = 256u;  // backward: dy * x per element into the y workspace (dD's rows)

bool has(uint f) { return (pc.flags & f) != 0u; }

// softplus(v) = log(1 + exp(v)), v itself past 20 (as torch and mamba_ssm); log1p through
// log(w) * u / (w - 1), accurate where 1 + u rounds.
float softplus_(float v) {
    if (v > 20.0) return v;
    const float u = exp(v);
    const float w = 1.0 + u;
    return w == 1.0 ? u : log(w) * (u / (w - 1.0));
}
float sigmoid_(float v) { return 1.0 / (1.0 + exp(-v)); }
float dsoftplus_(float v) { return v > 20.0 ? 1.0 : sigmoid_(v); }
float silu_(float v) { return v * sigmoid_(v); }
float dsilu_(float v) { const float s = sigmoid_(v); return s * (1.0 + v * (1.0 - s)); }

// The step delta of a raw delta (plus its bias): softplus'd when asked.
float step_of(float raw) { return has(SOFTPLUS) ? softplus_(raw) : raw; }

#endif
