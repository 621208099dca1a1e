// ATOMIC_MIN(mem, value): a buffer atomicMin visible to every workgroup of the dispatch.
// GLSL's plain atomicMin uses Device scope, which a device with the Vulkan memory model on but
// vulkanMemoryModelDeviceScope off must not use; the QUEUE_FAMILY_SCOPE variant (for devices
// with the memory model enabled) uses QueueFamily scope instead, which covers the dispatch.
#ifndef VKATTN_SPARSE_ATOMIC_MIN_GLSL
#define VKATTN_SPARSE_ATOMIC_MIN_GLSL

#ifdef QUEUE_FAMILY_SCOPE
#extension GL_KHR_memory_scope_semantics : require
#define ATOMIC_MIN(mem, value) atomicMin(mem, value, gl_ScopeQueueFamily, gl_StorageSemanticsNone, gl_SemanticsRelaxed)
#else
#define ATOMIC_MIN(mem, value) atomicMin(mem, value)
#endif

#endif
