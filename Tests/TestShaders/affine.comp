#version 450
// Test kernel for the device layer: y[i] = x[i] * SCALE + bias + i * STEP, exercising
// specialization constants (workgroup size, SCALE, STEP) and push constants (n, bias).
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const float SCALE = 1.0;
layout(constant_id = 2) const uint STEP = 0u;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint n;
    float bias;
} pc;

void main() {
    const uint i = gl_GlobalInvocationID.x;
    if (i < pc.n) {
        y[i] = x[i] * SCALE + pc.bias + float(i * STEP);
    }
}
