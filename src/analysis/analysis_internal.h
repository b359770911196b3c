/* Functions shared by the files of src/analysis (not part of the public API). */
#ifndef SGM_ANALYSIS_INTERNAL_H
#define SGM_ANALYSIS_INTERNAL_H

#include "sgm/observables.h"

/// Collective on s->comm: S(k) of the owned particles of s on an M^d grid into o->sk_* (see
/// structure_factor.c).
PetscErrorCode sgm_observables_sk(SgmAoup s, int M, SgmObservables *o);
/// Collective: makes the S(k) plan, buffers and shell geometry of an M-node grid in o->sk_cache
/// (2D; a no-op in 1D or if they exist), so the first sgm_observables_sk call does not.
PetscErrorCode sgm_observables_sk_prepare(SgmAoup s, int M, SgmObservables *o);
/// Releases the S(k) plan and buffers cached in o->sk_cache (collective: frees an MPI plan).
void sgm_observables_sk_free(SgmObservables *o);

#endif
