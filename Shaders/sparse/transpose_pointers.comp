#version 450
// CSR transpose, pass 2: after the exclusive scan of counts (column-major over tiles), column
// c of the transpose starts at scanned[c * tiles]; the last pointer is the total, nnz.
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer Scanned { uint scanned[]; };
layout(std430, binding = 1) writeonly buffer Pointers { int pointers[]; };

layout(push_constant) uniform Push {
    uint rows;
    uint cols;
    uint nnz;
    uint tiles;
} pc;

void main() {
    for (uint c = gl_GlobalInvocationID.x; c <= pc.cols; c += gl_NumWorkGroups.x * gl_WorkGroupSize.x) {
        pointers[c] = c < pc.cols ? int(scanned[c * pc.tiles]) : int(pc.nnz);
    }
}
