# Optimisers, schedules, model.h5 (src/nn/optim.c, schedule.c, nn_io.c).
sgm_unit_test(test_nn_optim SOURCES test_nn_optim.c)

# The nn benchmark (bench/nn/run.sh drives it next to the PyTorch anchor). Not a test.
add_executable(bench_nn ${CMAKE_SOURCE_DIR}/bench/nn/bench_nn.c)
target_link_libraries(bench_nn PRIVATE sgm)
