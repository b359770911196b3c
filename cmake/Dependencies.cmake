# Finds every dependency; a missing one stops configure with the Debian package to install.
# Everything is collected in the interface target SGM::deps.
find_package(PkgConfig)
if(NOT PKG_CONFIG_FOUND)
  message(FATAL_ERROR "pkg-config not found: install the Debian package 'pkg-config' (or run scripts/install-deps.sh)")
endif()

macro(sgm_require cond pkg what)
  if(NOT ${cond})
    message(FATAL_ERROR "${what} not found: install the Debian package '${pkg}' (or run scripts/install-deps.sh)")
  endif()
endmacro()

find_package(MPI COMPONENTS C)
sgm_require(MPI_C_FOUND "libopenmpi-dev" "MPI (C bindings)")

# Debian installs PETSc/SLEPc .pc files inside their prefixes; add them to the search path.
file(GLOB _petsc_pc_dirs /usr/lib/petscdir/*/*/lib/pkgconfig /usr/lib/slepcdir/*/*/lib/pkgconfig
     /usr/lib/petsc/lib/pkgconfig /usr/lib/slepc/lib/pkgconfig)
set(ENV{PKG_CONFIG_PATH} "$ENV{PKG_CONFIG_PATH}:${_petsc_pc_dirs}")
string(REPLACE ";" ":" _pcp "$ENV{PKG_CONFIG_PATH}")
set(ENV{PKG_CONFIG_PATH} "${_pcp}")
pkg_check_modules(PETSC IMPORTED_TARGET PETSc)
sgm_require(PETSC_FOUND "petsc-dev" "PETSc (pkg-config module PETSc)")
pkg_check_modules(SLEPC IMPORTED_TARGET slepc)
sgm_require(SLEPC_FOUND "slepc-dev" "SLEPc (pkg-config module slepc)")

# Parallel HDF5: the openmpi flavour. Serial HDF5 is refused, with the reason.
set(HDF5_PREFER_PARALLEL TRUE)
find_path(HDF5_PAR_INCLUDE hdf5.h PATHS /usr/include/hdf5/openmpi NO_DEFAULT_PATH)
find_library(HDF5_PAR_LIB NAMES hdf5_openmpi hdf5 PATHS /usr/lib/x86_64-linux-gnu/hdf5/openmpi /usr/lib/${CMAKE_LIBRARY_ARCHITECTURE}/hdf5/openmpi NO_DEFAULT_PATH)
sgm_require(HDF5_PAR_INCLUDE "libhdf5-openmpi-dev" "parallel HDF5 (openmpi flavour) headers")
sgm_require(HDF5_PAR_LIB "libhdf5-openmpi-dev" "parallel HDF5 (openmpi flavour) library")
file(STRINGS ${HDF5_PAR_INCLUDE}/H5pubconf.h _h5par REGEX "^#define H5_HAVE_PARALLEL 1")
if(NOT _h5par)
  message(FATAL_ERROR "HDF5 at ${HDF5_PAR_INCLUDE} is serial: sgm_hpc writes collectively and needs parallel HDF5. Install the Debian package 'libhdf5-openmpi-dev'.")
endif()

find_path(FFTW_INCLUDE fftw3-mpi.h)
find_library(FFTW_LIB fftw3)
find_library(FFTW_MPI_LIB fftw3_mpi)
sgm_require(FFTW_INCLUDE "libfftw3-mpi-dev" "FFTW3 MPI header fftw3-mpi.h")
sgm_require(FFTW_LIB "libfftw3-dev" "FFTW3 (double)")
sgm_require(FFTW_MPI_LIB "libfftw3-mpi-dev" "FFTW3 MPI library")

find_path(CBLAS_INCLUDE cblas.h PATH_SUFFIXES openblas-pthread openblas)
find_library(OPENBLAS_LIB openblas)
sgm_require(CBLAS_INCLUDE "libopenblas-dev" "CBLAS header (OpenBLAS)")
sgm_require(OPENBLAS_LIB "libopenblas-dev" "OpenBLAS")

pkg_check_modules(CHECK check)
sgm_require(CHECK_FOUND "check" "check (unit-test framework, pkg-config module check)")

add_library(sgm_deps INTERFACE)
add_library(SGM::deps ALIAS sgm_deps)
target_include_directories(sgm_deps INTERFACE ${HDF5_PAR_INCLUDE} ${FFTW_INCLUDE} ${CBLAS_INCLUDE})
target_link_libraries(sgm_deps INTERFACE PkgConfig::SLEPC PkgConfig::PETSC ${HDF5_PAR_LIB}
  ${FFTW_MPI_LIB} ${FFTW_LIB} ${OPENBLAS_LIB} MPI::MPI_C)
# PETSC_SUCCESS arrived in PETSc 3.19; Debian 12 ships 3.18, where success is plain 0.
if(PETSC_VERSION VERSION_LESS 3.19)
  target_compile_definitions(sgm_deps INTERFACE PETSC_SUCCESS=0)
endif()
# Versions reported by `sgm_hpc --version`.
set(SGM_PETSC_VERSION "${PETSC_VERSION}")
set(SGM_SLEPC_VERSION "${SLEPC_VERSION}")
message(STATUS "sgm_hpc: PETSc ${PETSC_VERSION}, SLEPc ${SLEPC_VERSION}, HDF5 ${HDF5_PAR_LIB}, FFTW ${FFTW_MPI_LIB}, OpenBLAS ${OPENBLAS_LIB}")
