# Core: RNG, configuration, driver services.
sgm_unit_test(test_rng SOURCES test_rng.c rng_util.c)
sgm_mpi_test(test_config SOURCES test_config.c RANKS 1 2 4)
sgm_mpi_test(test_run_services SOURCES test_run_services.c RANKS 1 2)
add_test(NAME e2e_invalid_inputs COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/e2e_invalid.sh
  $<TARGET_FILE:sgm_hpc> ${MPIEXEC_EXE} ${SGM_MPIEXEC_FLAGS})
set_tests_properties(e2e_invalid_inputs PROPERTIES LABELS "e2e" TIMEOUT 300 PROCESSORS 2)
add_test(NAME e2e_cli COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/e2e_cli.sh
  $<TARGET_FILE:sgm_hpc> ${MPIEXEC_EXE} ${SGM_MPIEXEC_FLAGS})
set_tests_properties(e2e_cli PROPERTIES LABELS "e2e" TIMEOUT 300 PROCESSORS 2)
# docs/input.md is the program's own --input-doc output: they cannot diverge.
add_test(NAME docs_input_current COMMAND sh -c "$<TARGET_FILE:sgm_hpc> --input-doc | diff -u ${CMAKE_SOURCE_DIR}/docs/input.md -")
set_tests_properties(docs_input_current PROPERTIES LABELS "e2e")
add_test(NAME e2e_configure_serial_hdf5 COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/e2e_configure_serial_hdf5.sh ${CMAKE_SOURCE_DIR})
set_tests_properties(e2e_configure_serial_hdf5 PROPERTIES LABELS "e2e" TIMEOUT 300)
