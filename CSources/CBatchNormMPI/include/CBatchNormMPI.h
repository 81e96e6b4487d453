/*
 * CBatchNormMPI: a small shim over Open MPI for synchronized batch norm.
 *
 * Compiled against mpi.h only where the package found Open MPI (it defines
 * CBN_WITH_MPI then); elsewhere every function reports that MPI is missing,
 * so the package builds without it. Every symbol is prefixed `cbn_mpi_`; the
 * header does not include mpi.h, so Swift needs no MPI headers to import it.
 * Functions return 0 or an MPI error code (CBN_MPI_UNAVAILABLE without MPI).
 */
#ifndef CBATCHNORM_MPI_H
#define CBATCHNORM_MPI_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CBN_MPI_UNAVAILABLE (-1)
/// A count too large for MPI's int counts.
#define CBN_MPI_TOO_LARGE (-2)
/// MPI runs at a thread level below MPI_THREAD_FUNNELED.
#define CBN_MPI_THREAD_LEVEL (-3)

/// An MPI communicator, opaque.
typedef struct cbn_mpi_communicator cbn_mpi_communicator;

/// 1 when the package was built with Open MPI, else 0.
int cbn_mpi_available(void);

/// Initializes MPI (MPI_Init_thread, MPI_THREAD_FUNNELED: only the thread
/// that called it makes MPI calls) unless the program already has;
/// `*initialized_here` tells which. Returns CBN_MPI_THREAD_LEVEL when MPI
/// runs at a thread level below MPI_THREAD_FUNNELED.
int cbn_mpi_initialize(int *initialized_here);

/// A duplicate of MPI_COMM_WORLD, with errors returned rather than fatal, so
/// that the package's collectives never match the program's own; its rank
/// and size.
int cbn_mpi_communicator_create(cbn_mpi_communicator **out, int *rank, int *size);

/// MPI_Comm_split of MPI_COMM_WORLD (collective over it): the ranks that pass
/// the same `color` (≥ 0) get one communicator, ordered by `key`, then by
/// their world rank; errors are returned as above. Its rank and size.
int cbn_mpi_communicator_split(int color, int key, cbn_mpi_communicator **out, int *rank, int *size);

/// MPI_Sendrecv of `count` doubles with rank `partner` of the communicator:
/// sends `send`, receives the partner's into `receive`.
int cbn_mpi_sendrecv(cbn_mpi_communicator *communicator, const double *send, int64_t count, int partner,
                     double *receive);

/// MPI_Allgather of `count` doubles from every rank into `all` (size·count),
/// in rank order.
int cbn_mpi_allgather(cbn_mpi_communicator *communicator, const double *local, int64_t count, double *all);

/// Frees the communicator (collective, as MPI_Comm_free is).
void cbn_mpi_communicator_free(cbn_mpi_communicator *communicator);

/// MPI_Finalize, when this package initialized MPI and it is not yet
/// finalized; a program that initialized MPI itself finalizes it.
int cbn_mpi_finalize(void);

/// MPI's message for an error code, into `buffer` (NUL-terminated).
void cbn_mpi_error_string(int code, char *buffer, int length);

#ifdef __cplusplus
}
#endif

#endif /* CBATCHNORM_MPI_H */
