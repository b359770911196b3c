# TOML reader: corpus + unit tests, corpus replay through the fuzz target's checks, and (clang
# only, not built by default) the libFuzzer target. Fuzzing commands: docs/fuzzing.md.
sgm_unit_test(test_toml SOURCES test_toml.c)

# The fuzz target's invariant checks over the committed corpus, with a plain main() instead of
# libFuzzer: runs in every build (and under ASan when SGM_SANITIZE=ON). toml.c is compiled in
# directly, which also proves it needs nothing but libc.
add_executable(fuzz_toml_replay fuzz_toml.c ${CMAKE_SOURCE_DIR}/src/core/toml.c)
target_compile_definitions(fuzz_toml_replay PRIVATE SGM_FUZZ_REPLAY)
target_include_directories(fuzz_toml_replay PRIVATE ${CMAKE_SOURCE_DIR}/include)
add_test(NAME fuzz_toml_replay
  COMMAND fuzz_toml_replay ${SGM_TEST_DATA}/toml/valid ${SGM_TEST_DATA}/toml/invalid)
set_tests_properties(fuzz_toml_replay PROPERTIES LABELS "unit" TIMEOUT 120)

# libFuzzer needs clang: `cmake --build <dir> --target fuzz_toml`, then run as in docs/fuzzing.md.
if(CMAKE_C_COMPILER_ID MATCHES "Clang")
  add_executable(fuzz_toml EXCLUDE_FROM_ALL fuzz_toml.c ${CMAKE_SOURCE_DIR}/src/core/toml.c)
  target_include_directories(fuzz_toml PRIVATE ${CMAKE_SOURCE_DIR}/include)
  target_compile_options(fuzz_toml PRIVATE -g -O1 -fsanitize=fuzzer,address,undefined)
  target_link_options(fuzz_toml PRIVATE -fsanitize=fuzzer,address,undefined)
endif()
