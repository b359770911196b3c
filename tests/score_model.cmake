sgm_mpi_test(test_score_model SOURCES test_score_model.c RANKS 1 2 4)
