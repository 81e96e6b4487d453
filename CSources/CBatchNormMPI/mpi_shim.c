/*
 * The MPI shim (see CBatchNormMPI.h). With CBN_WITH_MPI it wraps Open MPI;
 * without it, it is a stub that reports MPI missing.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "CBatchNormMPI.h"

#if defined(CBN_WITH_MPI) && __has_include(<mpi/mpi.h>)
#include <mpi/mpi.h>

struct cbn_mpi_communicator {
    MPI_Comm comm;
};

int cbn_mpi_available(void) { return 1; }

/* Whether this package called MPI_Init_thread (and so may finalize MPI). */
static int package_initialized_mpi = 0;

int cbn_mpi_initialize(int *initialized_here) {
    int initialized = 0, provided = 0;
    *initialized_here = 0;
    MPI_Initialized(&initialized);
    if (initialized) {
        MPI_Query_thread(&provided);
    } else {
        const int status = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
        if (status != MPI_SUCCESS) return status;
        *initialized_here = 1;
        package_initialized_mpi = 1;
    }
    /* The kernels' threads exist beside the one that calls MPI: FUNNELED at least. */
    return provided >= MPI_THREAD_FUNNELED ? 0 : CBN_MPI_THREAD_LEVEL;
}

/* Wraps the communicator that MPI_Comm_dup or MPI_Comm_split made (or returns their failure). */
static int wrap_communicator(int status, MPI_Comm comm, cbn_mpi_communicator **out, int *rank, int *size) {
    *out = NULL;
    if (status != MPI_SUCCESS) return status;
    cbn_mpi_communicator *c = malloc(sizeof *c);
    if (!c) {
        MPI_Comm_free(&comm);
        return MPI_ERR_NO_MEM;
    }
    c->comm = comm;
    MPI_Comm_set_errhandler(c->comm, MPI_ERRORS_RETURN);
    if ((status = MPI_Comm_rank(c->comm, rank)) != MPI_SUCCESS ||
        (status = MPI_Comm_size(c->comm, size)) != MPI_SUCCESS) {
        MPI_Comm_free(&c->comm);
        free(c);
        return status;
    }
    *out = c;
    return 0;
}

int cbn_mpi_communicator_create(cbn_mpi_communicator **out, int *rank, int *size) {
    MPI_Comm comm = MPI_COMM_NULL;
    const int status = MPI_Comm_dup(MPI_COMM_WORLD, &comm);
    return wrap_communicator(status, comm, out, rank, size);
}

int cbn_mpi_communicator_split(int color, int key, cbn_mpi_communicator **out, int *rank, int *size) {
    MPI_Comm comm = MPI_COMM_NULL;
    const int status = MPI_Comm_split(MPI_COMM_WORLD, color, key, &comm);
    return wrap_communicator(status, comm, out, rank, size);
}

/* Point-to-point messages of the package's tree, on its own communicator. */
enum { CBN_MPI_TAG = 0x6b6e };

int cbn_mpi_sendrecv(cbn_mpi_communicator *c, const double *send, int64_t count, int partner, double *receive) {
    if (count < 0 || count > INT_MAX) return CBN_MPI_TOO_LARGE;
    return MPI_Sendrecv(send, (int)count, MPI_DOUBLE, partner, CBN_MPI_TAG, receive, (int)count, MPI_DOUBLE,
                        partner, CBN_MPI_TAG, c->comm, MPI_STATUS_IGNORE);
}

int cbn_mpi_allgather(cbn_mpi_communicator *c, const double *local, int64_t count, double *all) {
    if (count < 0 || count > INT_MAX) return CBN_MPI_TOO_LARGE;
    return MPI_Allgather(local, (int)count, MPI_DOUBLE, all, (int)count, MPI_DOUBLE, c->comm);
}

void cbn_mpi_communicator_free(cbn_mpi_communicator *c) {
    if (!c) return;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&c->comm);
    free(c);
}

int cbn_mpi_finalize(void) {
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    return package_initialized_mpi && initialized && !finalized ? MPI_Finalize() : 0;
}

void cbn_mpi_error_string(int code, char *buffer, int length) {
    if (length <= 0) return;
    if (code == CBN_MPI_TOO_LARGE) {
        snprintf(buffer, (size_t)length, "a count above MPI's int limit");
        return;
    }
    if (code == CBN_MPI_THREAD_LEVEL) {
        snprintf(buffer, (size_t)length,
                 "MPI runs at a thread level below MPI_THREAD_FUNNELED (initialize it with MPI_Init_thread)");
        return;
    }
    char message[MPI_MAX_ERROR_STRING];
    int written = 0;
    if (MPI_Error_string(code, message, &written) != MPI_SUCCESS) snprintf(message, sizeof message, "MPI error %d", code);
    snprintf(buffer, (size_t)length, "%s", message);
}

#else /* no MPI */

struct cbn_mpi_communicator {
    int unused;
};

int cbn_mpi_available(void) { return 0; }

int cbn_mpi_initialize(int *initialized_here) {
    *initialized_here = 0;
    return CBN_MPI_UNAVAILABLE;
}

int cbn_mpi_communicator_create(cbn_mpi_communicator **out, int *rank, int *size) {
    *out = NULL;
    *rank = 0;
    *size = 0;
    return CBN_MPI_UNAVAILABLE;
}

int cbn_mpi_allgather(cbn_mpi_communicator *c, const double *local, int64_t count, double *all) {
    (void)c; (void)local; (void)count; (void)all;
    return CBN_MPI_UNAVAILABLE;
}

int cbn_mpi_communicator_split(int color, int key, cbn_mpi_communicator **out, int *rank, int *size) {
    (void)color; (void)key;
    *out = NULL;
    *rank = 0;
    *size = 0;
    return CBN_MPI_UNAVAILABLE;
}

int cbn_mpi_sendrecv(cbn_mpi_communicator *c, const double *send, int64_t count, int partner, double *receive) {
    (void)c; (void)send; (void)count; (void)partner; (void)receive;
    return CBN_MPI_UNAVAILABLE;
}

void cbn_mpi_communicator_free(cbn_mpi_communicator *c) { (void)c; }

int cbn_mpi_finalize(void) { return 0; }

void cbn_mpi_error_string(int code, char *buffer, int length) {
    if (length <= 0) return;
    snprintf(buffer, (size_t)length, "%s",
             code == CBN_MPI_UNAVAILABLE ? "the package was built without Open MPI (libopenmpi-dev)" : "MPI error");
}

#endif
