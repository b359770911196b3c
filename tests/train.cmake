# score module: K-nearest-neighbour windows, losses (finite-difference gradient checks), and the
# data-parallel `train` stage (rank-count invariance, restart identity).
sgm_mpi_test(test_windows SOURCES test_windows.c RANKS 1 2 4 TIMEOUT 60)
sgm_mpi_test(test_xg_score SOURCES test_xg_score.c RANKS 1 2 4 TIMEOUT 60)
sgm_mpi_test(test_losses SOURCES test_losses.c RANKS 1 TIMEOUT 60)
sgm_mpi_test(test_train SOURCES test_train.c train_util.c RANKS 1 2 4 TIMEOUT 120)
sgm_mpi_test(test_train_input SOURCES test_train_input.c RANKS 2 TIMEOUT 60)
add_test(NAME test_train_input_full_np2 COMMAND ${MPIEXEC_EXE} ${SGM_MPIEXEC_FLAGS} -n 2
         $<TARGET_FILE:test_train_input> full)
set_tests_properties(test_train_input_full_np2 PROPERTIES LABELS "mpi;long" TIMEOUT 1200
                     PROCESSORS 2 ENVIRONMENT "${SGM_TEST_ENV}")
# full-state kinds ([model] kind = "mlp", "transformer"): losses, provider, data-parallel train,
# restart (the trapped-AOUP check against the exact score: --trap short, --long the full input)
sgm_mpi_test(test_train_full SOURCES test_train_full.c train_util.c RANKS 1 2 4 TIMEOUT 300)
# one rank: the 4-particle open-trap engine is latency-bound (a step costs an MPI round trip on
# more ranks); the rank-count behaviour of train and epr is tested above
add_test(NAME test_train_full_trap_np1 COMMAND ${MPIEXEC_EXE} ${SGM_MPIEXEC_FLAGS} -n 1
         $<TARGET_FILE:test_train_full> --trap)
set_tests_properties(test_train_full_trap_np1 PROPERTIES LABELS "mpi" TIMEOUT 300
                     PROCESSORS 1 ENVIRONMENT "${SGM_TEST_ENV}")
add_test(NAME test_train_full_long_np1 COMMAND ${MPIEXEC_EXE} ${SGM_MPIEXEC_FLAGS} -n 1
         $<TARGET_FILE:test_train_full> --long)
set_tests_properties(test_train_full_long_np1 PROPERTIES LABELS "mpi;long" TIMEOUT 5400
                     PROCESSORS 1 ENVIRONMENT "${SGM_TEST_ENV}")
