# Optimisers, schedules, model.h5 (src/nn/optim.c, schedule.c, nn_io.c).
sgm_unit_test(test_nn_optim SOURCES test_nn_optim.c)
# The same checks on 2 and 4 ranks: model.h5 is read on rank 0 and broadcast, and a refused file
# must fail on every rank.
sgm_mpi_test(test_nn_optim_mpi SOURCES test_nn_optim.c RANKS 2 4)

# The nn benchmark (bench/nn/run.sh drives it next to the PyTorch anchor). Not a test.
add_executable(bench_nn ${CMAKE_SOURCE_DIR}/bench/nn/bench_nn.c)
target_link_libraries(bench_nn PRIVATE sgm)
# The model part of bench_nn needs the local transformer (include/sgm/nn_models.h); it is compiled
# in once a source under src/nn defines it (re-run cmake after it appears).
file(GLOB _sgm_nn_sources ${CMAKE_SOURCE_DIR}/src/nn/*.c)
foreach(_f ${_sgm_nn_sources})
  file(STRINGS ${_f} _def REGEX "^PetscErrorCode sgm_nn_transformer_create_local\\(")
  if(_def)
    target_compile_definitions(bench_nn PRIVATE SGM_BENCH_HAVE_TRANSFORMER=1)
  endif()
endforeach()
