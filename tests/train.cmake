# score module: K-nearest-neighbour windows, losses (finite-difference gradient checks), and the
# data-parallel `train` stage (rank-count invariance, restart identity).
sgm_mpi_test(test_windows SOURCES test_windows.c RANKS 1 2 4 TIMEOUT 60)
sgm_mpi_test(test_losses SOURCES test_losses.c RANKS 1 TIMEOUT 60)
sgm_mpi_test(test_train SOURCES test_train.c RANKS 1 2 4 TIMEOUT 120)
