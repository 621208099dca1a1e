// Shared by memory/quantize.comp and memory/dequantize.comp: the int8 K/V cache layout
// (KVQuantization). A tensor of logical shape [..., D] is `values` (i8, same shape, read and
// written four to a 32-bit word so that no 8-bit storage feature is needed) and `scales` (f32,
// [..., ceil(D / 32)]): scale c of a row covers its elements [32c, min(32c + 32, D)).
// Elements are numbered row-major over the whole tensor, so a word may hold elements of two
// rows (D % 4 != 0): every element finds its own row and block.
#ifndef VKATTN_COMMON_INT8_GLSL
#define VKATTN_COMMON_INT8_GLSL

layout(push_constant) uniform Push {
    uint count;           // elements (values' element count)
    uint width;           // D, the last dimension (>= 1)
    uint blocks_per_row;  // ceil(D / 32)
    uint items;           // invocations with work: blocks (scales pass) or words
    uint full_words;      // count / 4: the words wholly inside `values`; word full_words (when
                          // count % 4 != 0) is the partial last word, in the one-word tail buffer
} pc;

// The invocation's item on a 2-D grid (rows of GRID_STRIDE invocations), one item each.
#define ITEM_ID (gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * GRID_STRIDE)

// The block (index into scales) of element e.
uint block_of(uint e) {
    const uint row = e / pc.width;
    return row * pc.blocks_per_row + (e - row * pc.width) / 32u;
}

#endif
