// Shared layout of the Mamba-2 SSD kernels around the chunked GLA ones (see MambaSSD.swift).
// Tokens t over B * L (packed or dense alike: every kernel here works per token); x, y
// [T, H, P]; dt [T, H]; B, C [T, G, N]; A, D, dt bias [H]. Head h reads group h / (H / G).
// The GLA problem: q = C (of the head's group), k = dt_eff * B, v = x, log-gate = dt_eff * A,
// with dt_eff = dt (+ bias) (softplus of it when flag 2).
#ifndef VKATTN_MAMBA_SSD_GLSL
#define VKATTN_MAMBA_SSD_GLSL

layout(push_constant) uniform Push {
    uint T;       // tokens (B * L)
    uint H, G, N, P;
    uint flags;   // bit 0: D given; 1: softplus on dt; 2: dt bias given; 3: dt bias gradient wanted
    uint rows;    // reduce: rows (tokens) per block
    uint blocks;  // reduce: blocks
} pc;

uint group_of(uint h) { return h / (pc.H / pc.G); }

// softplus(x) = log(1 + exp(x)), without overflow.
float softplus(float x) { return x > 20.0 ? x : (x < -15.0 ? exp(x) : log(1.0 + exp(x))); }
float sigmoid(float x) { return 1.0 / (1.0 + exp(-x)); }

#endif
