#version 450
// Linear attention across ranks (ContextParallelLinearAttention): what a rank adds to the local
// chunked GLA to join the cross-rank affine scan. A rank's shard is [B, L, H, *] (L its local
// tokens), cut into chunks of C rows; G_t is the log-gate cumulated over the shard up to row t
// (inclusive), kept as a chunk-local sum (gcum) plus the chunk's offset (off) so every exp()
// is of a non-positive number. Values of the scan are rows (b, h, i) of [a, b_0 .. b_{Dv-1}].
//   MODE 0: gcum, the log gates cumulated within each chunk; one invocation per (b, h, gate, chunk).
//   MODE 1: off[b, h, gate, c] = G before chunk c, and column a of every value row = exp(G_{L-1})
//           (1 without gates); one invocation per (b, h, gate), serial over chunks.
//   MODE 2: the forward correction o_t += (q_t * exp(G_t)) S_in, S_in read from the b columns
//           of the scan result; one invocation per (b, t, h, j), serial over Dk.
//   MODE 3: partial[b, h, c, i, j] = sum over rows t of chunk c of q_t[i] exp(G_t[i]) dO_t[j]:
//           the gradient of the shard's initial state from its own outputs, per chunk.
//   MODE 4: the b columns of every value row = the sum of MODE 3's partials over chunks.
// Loops: at most C rows, NC chunks or Dk columns per invocation (the lavapipe loop cap).
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint GATE = 2;  // 0: none, 1: per head, 2: per key dimension
layout(constant_id = 2) const uint MODE = 0;
#include "common/scan_gla.glsl"

layout(std430, binding = 0) readonly buffer In0 { float in0[]; };  // gates (0), q (2, 3)
layout(std430, binding = 1) buffer GC { float gcum[]; };
layout(std430, binding = 2) buffer Off { float off[]; };
layout(std430, binding = 3) buffer Val { float val[]; };          // value / scan result rows; dO (3)
layout(std430, binding = 4) buffer Out { float out_[]; };          // o (2), partials (3, 4)

uint gates_per_head() { return GATE == 2u ? pc.Dk : 1u; }

// exp(G_t) of key dimension i at (b, t, h).
float decay(uint b, uint t, uint h, uint i) {
    if (GATE == 0u) return 1.0;
    const uint g = GATE == 2u ? i : 0u;
    const uint c = t / pc.C;
    return exp(off[((b * pc.H + h) * gates_per_head() + g) * pc.NC + c] + gcum[gate_index(b, t, h, i)]);
}

void main() {
    const uint id = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    const uint GH = gates_per_head();
    const uint W = pc.Dv + 1u;
    if (MODE == 0u) {
        const uint g = id % GH;
        const uint c = (id / GH) % pc.NC;
        const uint bh = id / (GH * pc.NC);
        if (bh >= pc.B * pc.H) return;
        const uint b = bh / pc.H, h = bh % pc.H;
        float acc = 0.0;
        for (uint r = 0u; r < chunk_rows(c); ++r) {
            const uint at = gate_index(b, c * pc.C + r, h, g);
            acc += in0[at];
            gcum[at] = acc;
        }
    } else if (MODE == 1u) {
        const uint g = id % GH;
        const uint bh = id / GH;
        if (bh >= pc.B * pc.H) return;
        const uint b = bh / pc.H, h = bh % pc.H;
        float acc = 0.0;
        if (GATE != 0u) {
            for (uint c = 0u; c < pc.NC; ++c) {
                off[(bh * GH + g) * pc.NC + c] = acc;
                acc += gcum[gate_index(b, c * pc.C + chunk_rows(c) - 1u, h, g)];
            }
        }
        const float a = exp(acc);
        if (GATE == 2u) {
            val[(bh * pc.Dk + g) * W] = a;
        } else {
            for (uint i = 0u; i < pc.Dk; ++i) val[(bh * pc.Dk + i) * W] = a;
        }
    } else if (MODE == 2u) {
        const uint j = id % pc.Dv;
        const uint h = (id / pc.Dv) % pc.H;
        const uint bt = id / (pc.Dv * pc.H);
        if (bt >= pc.B * pc.L) return;
        const uint b = bt / pc.L, t = bt % pc.L;
        float acc = 0.0;
        for (uint i = 0u; i < pc.Dk; ++i) {
            acc += in0[qk_index(b, t, h, i)] * decay(b, t, h, i) * val[((b * pc.H + h) * pc.Dk + i) * W + 1u + j];
        }
        out_[vo_index(b, t, h, j)] += acc;
    } else if (MODE == 3u) {
        const uint j = id % pc.Dv;
        const uint i = (id / pc.Dv) % pc.Dk;
        const uint c = (id / (pc.Dv * pc.Dk)) % pc.NC;
        const uint bh = id / (pc.Dv * pc.Dk * pc.NC);
        if (bh >= pc.B * pc.H) return;
        const uint b = bh / pc.H, h = bh % pc.H;
        float acc = 0.0;
        for (uint r = 0u; r < chunk_rows(c); ++r) {
            const uint t = c * pc.C + r;
            acc += in0[qk_index(b, t, h, i)] * decay(b, t, h, i) * val[vo_index(b, t, h, j)];
        }
        out_[((bh * pc.NC + c) * pc.Dk + i) * pc.Dv + j] = acc;
    } else {
        const uint j = id % pc.Dv;
        const uint i = (id / pc.Dv) % pc.Dk;
        const uint bh = id / (pc.Dv * pc.Dk);
        if (bh >= pc.B * pc.H) return;
        float acc = 0.0;
        for (uint c = 0u; c < pc.NC; ++c) acc += out_[((bh * pc.NC + c) * pc.Dk + i) * pc.Dv + j];
        val[(bh * pc.Dk + i) * W + 1u + j] = acc;
    }
}
