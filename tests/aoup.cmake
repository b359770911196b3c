# AOUP engine: decomposition maths, cells, halo/migration, rank invariance, physics, simulate stage.
sgm_unit_test(test_aoup_domain SOURCES test_domain.c TIMEOUT 60)
sgm_mpi_test(test_aoup_engine SOURCES test_aoup_engine.c RANKS 1 2 4 TIMEOUT 120)
sgm_mpi_test(test_aoup_simulate SOURCES test_aoup_simulate.c RANKS 1 2 4 TIMEOUT 120)
sgm_unit_test(test_aoup_physics SOURCES test_aoup_physics.c TIMEOUT 60)
# Long physics checks (ctest -L long; named without "aoup" so that `ctest -R aoup` stays quick):
# MIPS cluster growth, rank invariance at N = 4096.
sgm_mpi_test(test_mips_long SOURCES test_aoup_long.c RANKS 1 4 LABELS long TIMEOUT 1200)
# Short MIPS check of the default suite: N = 1024 at the paper's parameters to t = 0.3/gamma forms a
# dense phase and a spanning cluster, a Pe = 0.025 control does not ([analysis] observables).
# 2 ranks only (trajectories are rank-count invariant; 23-33 s on the shared 2-core box).
sgm_mpi_test(test_mips_short SOURCES test_mips_short.c RANKS 2 TIMEOUT 300)
# sgm_rng_normal2 (one Philox block per pair of normals): statistics and layout.
sgm_unit_test(test_rng_normal2 SOURCES test_rng_normal2.c rng_util.c TIMEOUT 120)
# Restart under a real signal: SIGUSR1 to mpiexec -n 2, --restart, bitwise equal trajectory.
add_test(NAME e2e_aoup_signal_restart COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/e2e_signal_restart.sh
  $<TARGET_FILE:sgm_hpc> ${CMAKE_SOURCE_DIR} ${MPIEXEC_EXE} ${SGM_MPIEXEC_FLAGS})
set_tests_properties(e2e_aoup_signal_restart PROPERTIES LABELS "e2e" TIMEOUT 600 PROCESSORS 2)
# sgm_rng_normal2_batch (vectorised noise of the engine): bitwise = scalar reference, accuracy,
# octant edges, statistics.
sgm_unit_test(test_rng_batch SOURCES test_rng_batch.c rng_util.c TIMEOUT 120)
