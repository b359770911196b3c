sgm_mpi_test(test_observables SOURCES test_observables.c RANKS 1 2 4 TIMEOUT 60)
