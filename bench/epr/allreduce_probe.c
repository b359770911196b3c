/* The cost of the train stage's gradient allreduce alone: MPI_Allreduce(MPI_IN_PLACE, n floats,
 * MPI_SUM) as src/score/train.c calls it, each repetition after an MPI_Barrier, so the time is the
 * communication and not the wait for a slower rank (which the SgmTrainAllreduce event includes).
 * Built by bench/epr/run.sh with mpicc; not part of the project's build.
 *
 * usage: mpiexec -n P allreduce_probe NFLOATS [REPS]
 * prints: PROBE allreduce n=<n> ranks=<P> times=<t1>,<t2>,... (rank 0's times, seconds) */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  int rank, size;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (argc < 2) {
    if (rank == 0) fprintf(stderr, "usage: allreduce_probe NFLOATS [REPS]\n");
    MPI_Abort(MPI_COMM_WORLD, 2);
  }
  const long n = atol(argv[1]);
  const int reps = argc > 2 ? atoi(argv[2]) : 20;
  float *buf = malloc((size_t)n * sizeof *buf);
  double *t = malloc((size_t)(reps + 1) * sizeof *t);
  if (!buf || !t) MPI_Abort(MPI_COMM_WORLD, 1);
  for (long i = 0; i < n; i++) buf[i] = (float)(i % 7) * 1e-3f;
  for (int r = -2; r < reps; r++) { /* 2 warm-up calls */
    MPI_Barrier(MPI_COMM_WORLD);
    const double t0 = MPI_Wtime();
    MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    const double dt = MPI_Wtime() - t0;
    if (r >= 0) t[r] = dt;
  }
  if (rank == 0) {
    printf("PROBE allreduce n=%ld ranks=%d times=", n, size);
    for (int r = 0; r < reps; r++) printf("%s%.6f", r ? "," : "", t[r]);
    printf("\n");
  }
  free(buf);
  free(t);
  MPI_Finalize();
  return 0;
}
