// CVulkan: the Vulkan C API as Swift sees it.
//
// Two jobs: (1) declare, from the Vulkan specification, what older headers lack (Debian 12
// ships 1.3.239, which predates VK_KHR_cooperative_matrix); (2) wrap the few things Swift
// cannot import: function-like macros and constants that are macros.
#ifndef VKATTN_CVULKAN_SHIM_H
#define VKATTN_CVULKAN_SHIM_H

#include <vulkan/vulkan.h>
#include <stdint.h>

// ---- VK_KHR_cooperative_matrix (spec extension 507), absent before header 1.3.255 ----
#ifndef VK_KHR_cooperative_matrix
#define VK_KHR_cooperative_matrix 1
#define VK_KHR_COOPERATIVE_MATRIX_SPEC_VERSION 2
#define VK_KHR_COOPERATIVE_MATRIX_EXTENSION_NAME "VK_KHR_cooperative_matrix"

typedef enum VkComponentTypeKHR {
    VK_COMPONENT_TYPE_FLOAT16_KHR = 0,
    VK_COMPONENT_TYPE_FLOAT32_KHR = 1,
    VK_COMPONENT_TYPE_FLOAT64_KHR = 2,
    VK_COMPONENT_TYPE_SINT8_KHR = 3,
    VK_COMPONENT_TYPE_SINT16_KHR = 4,
    VK_COMPONENT_TYPE_SINT32_KHR = 5,
    VK_COMPONENT_TYPE_SINT64_KHR = 6,
    VK_COMPONENT_TYPE_UINT8_KHR = 7,
    VK_COMPONENT_TYPE_UINT16_KHR = 8,
    VK_COMPONENT_TYPE_UINT32_KHR = 9,
    VK_COMPONENT_TYPE_UINT64_KHR = 10,
    VK_COMPONENT_TYPE_MAX_ENUM_KHR = 0x7FFFFFFF
} VkComponentTypeKHR;

typedef enum VkScopeKHR {
    VK_SCOPE_DEVICE_KHR = 1,
    VK_SCOPE_WORKGROUP_KHR = 2,
    VK_SCOPE_SUBGROUP_KHR = 3,
    VK_SCOPE_QUEUE_FAMILY_KHR = 5,
    VK_SCOPE_MAX_ENUM_KHR = 0x7FFFFFFF
} VkScopeKHR;

typedef struct VkCooperativeMatrixPropertiesKHR {
    VkStructureType sType;
    void *pNext;
    uint32_t MSize;
    uint32_t NSize;
    uint32_t KSize;
    VkComponentTypeKHR AType;
    VkComponentTypeKHR BType;
    VkComponentTypeKHR CType;
    VkComponentTypeKHR ResultType;
    VkBool32 saturatingAccumulation;
    VkScopeKHR scope;
} VkCooperativeMatrixPropertiesKHR;

typedef struct VkPhysicalDeviceCooperativeMatrixFeaturesKHR {
    VkStructureType sType;
    void *pNext;
    VkBool32 cooperativeMatrix;
    VkBool32 cooperativeMatrixRobustBufferAccess;
} VkPhysicalDeviceCooperativeMatrixFeaturesKHR;

typedef struct VkPhysicalDeviceCooperativeMatrixPropertiesKHR {
    VkStructureType sType;
    void *pNext;
    VkShaderStageFlags cooperativeMatrixSupportedStages;
} VkPhysicalDeviceCooperativeMatrixPropertiesKHR;

typedef VkResult (VKAPI_PTR *PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR)(
    VkPhysicalDevice physicalDevice, uint32_t *pPropertyCount,
    VkCooperativeMatrixPropertiesKHR *pProperties);
#endif

// Structure types of VK_KHR_cooperative_matrix as plain integers (the enum values are not in
// old headers' VkStructureType).
static const uint32_t VKATTN_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_KHR = 1000506000u;
static const uint32_t VKATTN_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_KHR = 1000506001u;
static const uint32_t VKATTN_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_PROPERTIES_KHR = 1000506002u;

// ---- VK_KHR_shader_bfloat16 (spec extension 142), absent before header 1.4.311 ----
// Declared under VkAttn's own name, so that it never collides with newer headers' definition.
typedef struct VkattnPhysicalDeviceShaderBfloat16Features {
    VkStructureType sType;
    void *pNext;
    VkBool32 shaderBFloat16Type;
    VkBool32 shaderBFloat16DotProduct;
    VkBool32 shaderBFloat16CooperativeMatrix;
} VkattnPhysicalDeviceShaderBfloat16Features;
static const uint32_t VKATTN_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_BFLOAT16_FEATURES_KHR = 1000141000u;

// ---- What Swift cannot import: function-like macros ----
static inline uint32_t vkattn_make_api_version(uint32_t variant, uint32_t major, uint32_t minor, uint32_t patch) {
    return VK_MAKE_API_VERSION(variant, major, minor, patch);
}
static inline uint32_t vkattn_api_version_major(uint32_t v) { return VK_API_VERSION_MAJOR(v); }
static inline uint32_t vkattn_api_version_minor(uint32_t v) { return VK_API_VERSION_MINOR(v); }
static inline uint32_t vkattn_api_version_patch(uint32_t v) { return VK_API_VERSION_PATCH(v); }
static inline uint64_t vkattn_whole_size(void) { return VK_WHOLE_SIZE; }
static inline uint32_t vkattn_queue_family_ignored(void) { return VK_QUEUE_FAMILY_IGNORED; }

// Loads an instance-level entry point (extension functions are not exported by the loader).
static inline PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR
vkattn_load_cooperative_matrix_khr(VkInstance instance) {
    return (PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR)
        vkGetInstanceProcAddr(instance, "vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR");
}
static inline PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV
vkattn_load_cooperative_matrix_nv(VkInstance instance) {
    return (PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV)
        vkGetInstanceProcAddr(instance, "vkGetPhysicalDeviceCooperativeMatrixPropertiesNV");
}
static inline PFN_vkCreateDebugUtilsMessengerEXT vkattn_load_create_debug_messenger(VkInstance instance) {
    return (PFN_vkCreateDebugUtilsMessengerEXT)vkGetInstanceProcAddr(instance, "vkCreateDebugUtilsMessengerEXT");
}
static inline PFN_vkSetDebugUtilsObjectNameEXT vkattn_load_set_object_name(VkInstance instance) {
    return (PFN_vkSetDebugUtilsObjectNameEXT)vkGetInstanceProcAddr(instance, "vkSetDebugUtilsObjectNameEXT");
}
static inline PFN_vkDestroyDebugUtilsMessengerEXT vkattn_load_destroy_debug_messenger(VkInstance instance) {
    return (PFN_vkDestroyDebugUtilsMessengerEXT)vkGetInstanceProcAddr(instance, "vkDestroyDebugUtilsMessengerEXT");
}

// VK_EXT_calibrated_timestamps: maps GPU timestamps to a host clock (parallel timelines).
static inline PFN_vkGetPhysicalDeviceCalibrateableTimeDomainsEXT
vkattn_load_calibrateable_time_domains(VkInstance instance) {
    return (PFN_vkGetPhysicalDeviceCalibrateableTimeDomainsEXT)
        vkGetInstanceProcAddr(instance, "vkGetPhysicalDeviceCalibrateableTimeDomainsEXT");
}
static inline PFN_vkGetCalibratedTimestampsEXT vkattn_load_calibrated_timestamps(VkDevice device) {
    return (PFN_vkGetCalibratedTimestampsEXT)vkGetDeviceProcAddr(device, "vkGetCalibratedTimestampsEXT");
}

// VK_EXT_external_memory_host: one host allocation imported into several devices (the
// in-process communicator's imported-host path).
static inline PFN_vkGetMemoryHostPointerPropertiesEXT vkattn_load_host_pointer_properties(VkDevice device) {
    return (PFN_vkGetMemoryHostPointerPropertiesEXT)vkGetDeviceProcAddr(device, "vkGetMemoryHostPointerPropertiesEXT");
}

#endif
