# epr stage: exact trap score (Lyapunov, FD), per-particle EPR formulas, drift divergence, files and
# end-to-end statistics against the analytic EPR at 1, 2 and 4 ranks.
sgm_unit_test(test_epr SOURCES test_epr.c TIMEOUT 60)
sgm_mpi_test(test_epr_stage SOURCES test_epr_stage.c RANKS 1 2 4 TIMEOUT 300)
sgm_mpi_test(test_epr_long SOURCES test_epr_stage.c RANKS 2 ARGS --long LABELS long TIMEOUT 900)
# interface / dilute / dense classes of the epr stage on a constructed configuration, and the
# release of a provider whose create fails
sgm_mpi_test(test_epr_classes SOURCES test_epr_classes.c epr_util.c RANKS 1 2 4 TIMEOUT 120)
# attention maps of the transformer (direct double forward), rollout (eq. 93) against the matrix
# product, and attention.h5 of the epr stage (K nearest neighbours, recomputed rollout)
sgm_mpi_test(test_epr_attention SOURCES test_epr_attention.c RANKS 1 2 4 TIMEOUT 120)
# probability-flow trajectories (eq. 7, PETSc TSRK): trap flow vs the matrix exponential and the
# preserved stationary covariance; periodic interacting flow (exact g(t), short-time v_x)
sgm_mpi_test(test_epr_flow SOURCES test_epr_flow.c epr_util.c RANKS 1 2 4 TIMEOUT 120)
# [epr] weights: raw / EMA / auto loading of model.h5, the error without an EMA
sgm_mpi_test(test_epr_weights SOURCES test_epr_weights.c RANKS 1 2 4 TIMEOUT 120)
# jobscripts/run_chunked.slurm in chunks (stand-in srun/scontrol, SIGUSR1 in simulate and in train,
# requeue, bitwise equal to an uninterrupted run) and --check of the MIPS EPR example inputs
add_test(NAME e2e_mips_epr_jobscript COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/e2e_mips_epr_jobscript.sh
  $<TARGET_FILE:sgm_hpc> ${CMAKE_SOURCE_DIR} ${MPIEXEC_EXE} ${SGM_MPIEXEC_FLAGS})
set_tests_properties(e2e_mips_epr_jobscript PROPERTIES LABELS "e2e" TIMEOUT 300 PROCESSORS 2)
# equilibrium (v0 = 0, 8 interacting AOUPs in a trap): the Boltzmann-informed MLP trained online
# drives the EPR below 1/3 of the untrained network's (1 and 2 ranks: ~13 s + 8 s; 4 ranks on 2
# cores take 20-45 s; the rank-count behaviour of train and epr is tested by test_train_full and
# test_epr_stage)
sgm_mpi_test(test_epr_equilibrium SOURCES test_epr_equilibrium.c train_util.c RANKS 1 2 TIMEOUT 120)
# postprocess/swimmers_linear_sm.py against the exact per-particle divergences of free swimmers
if(SGM_PYTHON)
  add_test(NAME e2e_swimmers_linear_sm COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/e2e_swimmers_linear_sm.sh
    $<TARGET_FILE:sgm_hpc> ${SGM_PYTHON} ${CMAKE_SOURCE_DIR} ${MPIEXEC_EXE} ${SGM_MPIEXEC_FLAGS})
  set_tests_properties(e2e_swimmers_linear_sm PROPERTIES LABELS "e2e" TIMEOUT 300)
endif()
# the "fpe_pair" score (two AOUPs in d = 1 from their stationary FPE on a grid): the free pair
# against exact_trap, the pointwise FPE of interacting pairs (ring, 64-swimmer trap), exchange
# symmetry, the gather over ranks, refusals and the input check, the epr stage on a ring
sgm_mpi_test(test_score_fpe SOURCES test_score_fpe.c epr_util.c RANKS 1 2 4 TIMEOUT 300)
# the d = 2 pair (score_fpe2.c)
sgm_mpi_test(test_score_fpe2 SOURCES test_score_fpe2.c epr_util.c RANKS 1 2 4 TIMEOUT 300)
# postprocess/epr_split.py with the "fpe_pair" score on two grids (grid error, self-comparison,
# refusal of different frames)
if(SGM_PYTHON)
  add_test(NAME e2e_epr_split COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/e2e_epr_split.sh
    $<TARGET_FILE:sgm_hpc> ${SGM_PYTHON} ${CMAKE_SOURCE_DIR} ${MPIEXEC_EXE} ${SGM_MPIEXEC_FLAGS})
  set_tests_properties(e2e_epr_split PROPERTIES LABELS "e2e" TIMEOUT 300 PROCESSORS 2)
endif()
# postprocess/epr_regions.py --bound: the exact score's class-wise lower bound is tight for the
# exact pair score on a ring and far below it for another system's score
if(SGM_PYTHON)
  add_test(NAME e2e_epr_bound COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/e2e_epr_bound.sh
    $<TARGET_FILE:sgm_hpc> ${SGM_PYTHON} ${CMAKE_SOURCE_DIR} ${MPIEXEC_EXE} ${SGM_MPIEXEC_FLAGS})
  set_tests_properties(e2e_epr_bound PROPERTIES LABELS "e2e" TIMEOUT 300 PROCESSORS 2)
endif()
# every postprocess/ script: --help, a usage error, and a missing run directory (exit 2, one
# error line, no traceback)
if(SGM_PYTHON)
  add_test(NAME e2e_postprocess_cli COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/e2e_postprocess_cli.sh
    ${SGM_PYTHON} ${CMAKE_SOURCE_DIR})
  set_tests_properties(e2e_postprocess_cli PROPERTIES LABELS "e2e" TIMEOUT 300)
endif()
# learned scores of two interacting AOUPs (the ring input; the 64-swimmer pair in a 1D trap)
# against the exact "fpe_pair" score (label long, ~8 min on 2 cores)
if(SGM_PYTHON)
  add_test(NAME long_pair_exact COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/long_pair_exact.sh
    $<TARGET_FILE:sgm_hpc> ${SGM_PYTHON} ${CMAKE_SOURCE_DIR} ${MPIEXEC_EXE} ${SGM_MPIEXEC_FLAGS})
  set_tests_properties(long_pair_exact PROPERTIES LABELS "e2e;long" TIMEOUT 1800 PROCESSORS 2)
  # the same in d = 2: the exact per-particle split of the 64-swimmer pair and the 64-swimmer
  # transformer against it (label long, ~12 min on 2 cores, 5 GB for the FPE solve)
  add_test(NAME long_pair2d_exact COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/long_pair2d_exact.sh
    $<TARGET_FILE:sgm_hpc> ${SGM_PYTHON} ${CMAKE_SOURCE_DIR} ${MPIEXEC_EXE} ${SGM_MPIEXEC_FLAGS})
  set_tests_properties(long_pair2d_exact PROPERTIES LABELS "e2e;long" TIMEOUT 2400 PROCESSORS 2)
endif()
