/* Function multiversioning shared by the vectorised kernels (src/core/rng_batch.c,
 * src/systems/aoup_kernels.c, src/nn/).
 *
 * SGM_CLONES compiles a function for AVX-512, AVX2 and the baseline, picked at load time (a GCC
 * ifunc), when the build does not already target AVX2 (-march=native) and the toolchain supports
 * it (GCC, x86-64 Linux); elsewhere it is empty. The kernels are written without FMA contraction
 * (ISO C mode, or -ffp-contract=off), so every clone gives the same bits.
 */
#ifndef SGM_SIMD_H
#define SGM_SIMD_H

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) &&       \
    !defined(__AVX2__)
#define SGM_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SGM_CLONES
#endif

#endif
