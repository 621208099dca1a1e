// Chained look-back of the recurrence kernels: a chunk's end state is published as 16-bit
// halves, two status words per float, each word with bit 31 set once written. A reader takes
// a float only when both of its words are set, so no ordering between the stores is needed
// and 32-bit atomics suffice. Include after the `status` buffer and the SCOPE macro.
#ifndef VKATTN_SCAN_CHAIN_GLSL
#define VKATTN_SCAN_CHAIN_GLSL

uint chain_half(float x, uint part) {
    const uint w = floatBitsToUint(x);
    return (part == 0u ? (w & 0xFFFFu) : (w >> 16)) | 0x80000000u;
}

void chain_publish(uint f, float x) {
    atomicStore(status[2u * f], chain_half(x, 0u), SCOPE, gl_StorageSemanticsNone, gl_SemanticsRelaxed);
    atomicStore(status[2u * f + 1u], chain_half(x, 1u), SCOPE, gl_StorageSemanticsNone, gl_SemanticsRelaxed);
}

// False while float f is unpublished.
bool chain_read(uint f, out float x) {
    const uint w0 = atomicLoad(status[2u * f], SCOPE, gl_StorageSemanticsNone, gl_SemanticsRelaxed);
    const uint w1 = atomicLoad(status[2u * f + 1u], SCOPE, gl_StorageSemanticsNone, gl_SemanticsRelaxed);
    x = uintBitsToFloat((w0 & 0xFFFFu) | (w1 << 16));
    return (w0 & w1 & 0x80000000u) != 0u;
}

#endif
