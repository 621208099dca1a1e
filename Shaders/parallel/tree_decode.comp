#version 450
// Tree attention's two local steps around its all-reduces (every rank holds a shard of the
// KV cache and its partial (O_r, LSE_r); M is the all-reduced max of LSE):
//   FINISH = false: W = [num | den] with num = exp(LSE_r - M) O_r, den = exp(LSE_r - M);
//   FINISH = true:  after W is all-reduced (sum), O = num / den, LSE = M + log(den).
// Rows no shard saw (LSE_r = -inf everywhere, so den = 0) get O = 0, LSE = -inf. Rows are
// (token, head) of O [tokens, H, D]; LSE and M in the attention LSE layout (dense
// [B, H, Sq], packed [H, tokens]). TPR lanes share a row.
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint D = 64;
layout(constant_id = 2) const uint TPR = 8;
layout(constant_id = 3) const bool VARLEN = false;
layout(constant_id = 4) const bool FINISH = false;

layout(std430, binding = 0) buffer OBuf { float o_buf[]; };
layout(std430, binding = 1) buffer LseBuf { float lse_buf[]; };
layout(std430, binding = 2) readonly buffer MaxBuf { float max_buf[]; };
layout(std430, binding = 3) buffer WBuf { float w_buf[]; };

layout(push_constant) uniform Push {
    uint tokens;
    uint heads;
    uint seq_q;   // dense: queries per sequence
} pc;

const float NEG_INF = -1.0 / 0.0;

void main() {
    const uint lane = gl_LocalInvocationID.x % TPR;
    const uint rows_per_group = gl_WorkGroupSize.x / TPR;
    const uint row = (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * rows_per_group
        + gl_LocalInvocationID.x / TPR;
    const uint rows = pc.tokens * pc.heads;
    if (row >= rows) return;
    const uint token = row / pc.heads, h = row % pc.heads;
    const uint li = VARLEN ? h * pc.tokens + token : ((token / pc.seq_q) * pc.heads + h) * pc.seq_q + token % pc.seq_q;
    const float m = max_buf[li];
    if (!FINISH) {
        const float l = lse_buf[li];
        const float w = (l == NEG_INF || m == NEG_INF) ? 0.0 : exp(l - m);
        for (uint d = lane; d < D; d += TPR) w_buf[row * D + d] = w * o_buf[row * D + d];
        if (lane == 0u) w_buf[rows * D + li] = w;
        return;
    }
    const float den = w_buf[rows * D + li];
    for (uint d = lane; d < D; d += TPR) o_buf[row * D + d] = den > 0.0 ? w_buf[row * D + d] / den : 0.0;
    if (lane == 0u) lse_buf[li] = den > 0.0 ? m + log(den) : NEG_INF;
}
