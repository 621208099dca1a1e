// Grid helpers shared by the 1-D streaming kernels.
#ifndef VKATTN_GRID_GLSL
#define VKATTN_GRID_GLSL

// Invocations in the whole dispatch along x: the step of a grid-stride loop.
uint grid_stride() {
    return gl_NumWorkGroups.x * gl_WorkGroupSize.x;
}

#endif
