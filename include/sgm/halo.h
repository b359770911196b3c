/* Particles (structure of arrays, ghosts after locals) and the one halo engine that moves them.
 *
 * Owns: SgmParticles storage, migration of particles to their owner ranks and the ghost
 * exchange. Both go through the same face-by-face machinery: x faces, then y faces (corner ghosts
 * arrive in 4 messages in 2D), a local copy when the neighbour is this rank, persistent send and
 * receive buffers that grow. Migration forwards particles hop by hop until none is misplaced, so
 * a particle may cross any number of patches in one step. The ghost exchange records its pattern
 * so that any per-particle field (orientations, scores...) can be forwarded along it later
 * (sgm_halo_forward) without repacking positions.
 *
 * Ghost positions: x holds canonical (wrapped) coordinates for every particle so that pair
 * displacements are computed identically on every decomposition (minimum image of canonical
 * doubles); xb holds the unwrapped image position used for binning and for picking the right
 * periodic copy.
 */
#ifndef SGM_HALO_H
#define SGM_HALO_H

#include "sgm/domain.h"

typedef struct {
  int dim;
  int64_t nlocal, nghost, cap;
  int64_t *id; /* [cap] global ids */
  double *x;   /* [cap*dim] canonical positions */
  double *g;   /* [cap*dim] orientations (locals; ghosts after sgm_halo_forward) */
  double *xb;  /* [cap*dim] image positions (binning) */
  double *f;   /* [cap*dim] forces (locals) */
} SgmParticles;

/// Makes room for n particles in total (locals + ghosts), keeping contents. Not collective.
PetscErrorCode sgm_particles_reserve(SgmParticles *p, int64_t n);
/// Frees the arrays.
void sgm_particles_free(SgmParticles *p);

typedef struct SgmHalo_ *SgmHalo;

/// Collective: halo engine for decomposition d with ghost width w (>= interaction range).
PetscErrorCode sgm_halo_create(MPI_Comm comm, const SgmDecomp *d, double w, SgmHalo *h);
/// Frees; accepts NULL. Not collective.
PetscErrorCode sgm_halo_destroy(SgmHalo *h);
/// Collective: drops ghosts and moves every local particle (id, x, g) to its owner rank.
PetscErrorCode sgm_halo_migrate(SgmHalo h, SgmParticles *p);
/// Collective: rebuilds the ghosts (id, x, xb) of p from the current locals.
PetscErrorCode sgm_halo_exchange(SgmHalo h, SgmParticles *p);
/// Collective: forwards field[(nlocal+nghost)*ncomp] (locals filled) into the ghost slots along
/// the pattern of the last exchange.
PetscErrorCode sgm_halo_forward(SgmHalo h, SgmParticles *p, double *field, int ncomp);
/// Collective on the neighbours: starts sgm_halo_forward (field must stay untouched until
/// sgm_halo_forward_end; its ghost rows are written by then). Copies for dimensions with one rank
/// are done at once; the first dimension with several ranks has its receives and sends posted
/// (no count messages: the pattern fixes them), so the caller can work on locals meanwhile.
PetscErrorCode sgm_halo_forward_begin(SgmHalo h, double *field, int ncomp);
/// Completes the forward started by sgm_halo_forward_begin (a no-op if none is in flight).
PetscErrorCode sgm_halo_forward_end(SgmHalo h);
/// Not collective: takes a changed assignment of cells to ranks (same rank grid, new
/// SgmDecomp cuts): patch bounds updated, the recorded pattern dropped (migrate and exchange
/// next).
PetscErrorCode sgm_halo_set_decomp(SgmHalo h, const SgmDecomp *d);
/// Whether every rank is a neighbour (at most 3 ranks along each dimension), so that a value
/// carried by a forward reaches every rank. Pure.
int sgm_halo_reduce_covers_all(SgmHalo h);
/// Not collective: the next forward also carries in[2], combined with MPI_MAX: each message
/// round sends the running max (16 bytes beside the field) to both neighbours along its
/// dimension, so after sgm_halo_forward_end every rank holds the max over its neighbourhood,
/// which is every rank (requires sgm_halo_reduce_covers_all). Costs no extra synchronisation:
/// the values travel with the positions the step waits for anyway.
PetscErrorCode sgm_halo_forward_reduce(SgmHalo h, const double in[2]);
/// Not collective: the reduced pair of the completed forward started after
/// sgm_halo_forward_reduce.
PetscErrorCode sgm_halo_forward_reduced(SgmHalo h, double out[2]);
/// Messages and bytes sent so far (statistics).
void sgm_halo_stats(SgmHalo h, int64_t *nmsg, int64_t *nbytes);

#endif
