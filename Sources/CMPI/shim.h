// Open MPI for Swift. MPI's predefined handles and constants are macros over addresses of
// library globals (MPI_COMM_WORLD, MPI_BYTE, MPI_SUM ...), which Swift cannot import; these
// inline functions return them. Only what VkAttnMPI uses.
#ifndef VKATTN_CMPI_SHIM_H
#define VKATTN_CMPI_SHIM_H
#include <mpi.h>

static inline MPI_Comm vkmpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Comm vkmpi_comm_null(void) { return MPI_COMM_NULL; }
static inline MPI_Group vkmpi_group_null(void) { return MPI_GROUP_NULL; }
static inline MPI_Datatype vkmpi_byte(void) { return MPI_BYTE; }
static inline MPI_Datatype vkmpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype vkmpi_datatype_null(void) { return MPI_DATATYPE_NULL; }
static inline MPI_Op vkmpi_op_sum(void) { return MPI_SUM; }
static inline MPI_Op vkmpi_op_max(void) { return MPI_MAX; }
static inline MPI_Op vkmpi_op_min(void) { return MPI_MIN; }
static inline MPI_Op vkmpi_op_null(void) { return MPI_OP_NULL; }
static inline MPI_Request vkmpi_request_null(void) { return MPI_REQUEST_NULL; }
static inline MPI_Status *vkmpi_status_ignore(void) { return MPI_STATUS_IGNORE; }
static inline MPI_Errhandler vkmpi_errors_return(void) { return MPI_ERRORS_RETURN; }
static inline void *vkmpi_in_place(void) { return MPI_IN_PLACE; }
static inline int vkmpi_any_source(void) { return MPI_ANY_SOURCE; }
static inline int vkmpi_any_tag(void) { return MPI_ANY_TAG; }
static inline int vkmpi_undefined(void) { return MPI_UNDEFINED; }
static inline int vkmpi_success(void) { return MPI_SUCCESS; }
static inline int vkmpi_max_error_string(void) { return MPI_MAX_ERROR_STRING; }
static inline int vkmpi_thread_single(void) { return MPI_THREAD_SINGLE; }
static inline int vkmpi_thread_funneled(void) { return MPI_THREAD_FUNNELED; }
static inline int vkmpi_thread_serialized(void) { return MPI_THREAD_SERIALIZED; }
static inline int vkmpi_thread_multiple(void) { return MPI_THREAD_MULTIPLE; }
static inline int vkmpi_tag_ub_key(void) { return MPI_TAG_UB; }
static inline int vkmpi_comm_type_shared(void) { return MPI_COMM_TYPE_SHARED; }
static inline MPI_Info vkmpi_info_null(void) { return MPI_INFO_NULL; }
static inline int vkmpi_status_source(const MPI_Status *s) { return s->MPI_SOURCE; }
static inline int vkmpi_status_tag(const MPI_Status *s) { return s->MPI_TAG; }

#endif
