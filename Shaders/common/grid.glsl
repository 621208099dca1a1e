// Grid helpers shared by the 1-D streaming kernels.
#ifndef VKATTN_GRID_GLSL
#define VKATTN_GRID_GLSL

// Invocations in the whole dispatch along x: the step of a grid-stride loop. A macro, not a
// function: gl_WorkGroupSize inside a function defined before the shader's
// `layout(local_size_x_id = ...) in;` is the default (1, 1, 1), not the specialized size.
#define GRID_STRIDE (gl_NumWorkGroups.x * gl_WorkGroupSize.x)

#endif
