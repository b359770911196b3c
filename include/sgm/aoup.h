/* Active Ornstein-Uhlenbeck particles (paper 002, eq. 1) on a decomposed box.
 *
 *   dx_i = [ mu sum_j f(x_i - x_j) - mu A x_i + v0 g_i ] dt + sqrt(2 eps) dW_x,
 *   dg_i = -gamma g_i dt + sqrt(2 gamma) dW_g,
 *
 * with f a repulsive pair force from the registry (harmonic, eq. 94 times k; softplus, eq. 95
 * times k), A the harmonic trap of eq. 27 (open boxes only). Note the sign: eq. (1) prints
 * "-mu sum f" but f of eq. (94) already points along x_i - x_j, and eq. (96) writes "+mu f"; the
 * physics (repulsion) needs "+", which is what is implemented.
 *
 * Owns: the particle state on each rank, the pair-force registry, forces and the integrator.
 * Periodic boxes use the space decomposition (domain.h, halo.h); open boxes (trap) use a
 * replicated mode: rank r owns the ids of block r and every rank sees every particle as a ghost
 * (one MPI_Allgatherv per step), meant for small N such as the 64-particle trap.
 *
 * Rank-count invariance: a particle's noise is a pure function of (seed, id, step); pair
 * displacements are minimum images of canonical positions; a particle's pair contributions are
 * sorted by the partner's global id before summation. Trajectories are therefore bitwise equal
 * on any number of ranks.
 */
#ifndef SGM_AOUP_H
#define SGM_AOUP_H

#include "sgm/halo.h"
#include "sgm/cells.h"

/// A pair force: magnitude along (x_i - x_j)/r (positive = repulsive) at distance r.
typedef double (*SgmPairForceFn)(double r, double a, double k, double beta);
typedef struct {
  const char *name;
  SgmPairForceFn force;
  const char *doc;
} SgmPairPotential;

/// Looks up a pair potential by name ("harmonic", "softplus"); NULL if unknown.
const SgmPairPotential *sgm_pair_potential_find(const char *name);
/// Registers a new pair potential (name, force, doc); not collective; at most 16.
PetscErrorCode sgm_pair_potential_register(const char *name, SgmPairForceFn fn, const char *doc);
/// Harmonic repulsion (eq. 94 with stiffness k): k (2a - r) for r < 2a, else 0.
double sgm_force_harmonic(double r, double a, double k, double beta);
/// Softplus-smoothed (eq. 95 with stiffness k): k log(1 + exp(beta (2a - r))) / beta.
double sgm_force_softplus(double r, double a, double k, double beta);

typedef struct {
  int dim;      /* 1 or 2 */
  int64_t n;    /* number of particles */
  int periodic; /* 1 periodic box [0, L)^d, 0 open (trap) */
  double L;     /* box edge (periodic) or placement edge (open, centred at 0) */
  double mu, v0, gamma, eps, a, k, beta, trap_A;
  char potential[32];  /* registry name */
  double softplus_cut; /* softplus cutoff at 2a + softplus_cut / beta */
  double dt;
  int g_exact; /* 1: exact OU update of g, 0: Euler-Maruyama */
  uint64_t seed;
  double cell_size; /* minimum DMDA cell width (0: the interaction range) */
  int grid[2];      /* rank-grid hint (0 = decide) */
  double skin;      /* Verlet skin: lists hold partners within rc + skin; rebuilt when a particle
                       moved more than skin/2 (0: rebuild every step) */
} SgmAoupParams;

/// Wall-time split of sgm_aoup_step on one rank (seconds, MPI_Wtime), accumulated from
/// sgm_aoup_create or the last sgm_aoup_timers_reset. `halo` (ghost positions of a step without
/// rebuild) and `reduce` (the one allreduce of a step) include the time spent waiting for the
/// other ranks; the rest is this rank's own work.
typedef struct {
  double forces;                   /* pair-force kernel */
  double integrate;                /* noise and update */
  double halo;                     /* ghost position forwarding (steps without rebuild) */
  double reduce;                   /* the step's allreduce (Verlet displacement, non-finite flag) */
  double migrate;                  /* rebuilds: migration and cell-order sort */
  double exchange;                 /* rebuilds: ghost exchange */
  double lists;                    /* rebuilds: cell lists and neighbour lists */
  int64_t steps, builds, balances; /* balances: list builds that moved the cuts */
  int64_t nlocal_min, nlocal_max, nghost_max; /* at the rebuilds */
} SgmAoupTimers;

/// Range of the pair force of potential `pot` with the parameters p: 2a, or for the softplus force
/// its truncation 2a + softplus_cut / beta (the engine's cutoff, also used by the "fpe_pair"
/// score). Pure.
double sgm_aoup_interaction_range(const SgmAoupParams *p, const SgmPairPotential *pot);

typedef struct SgmAoup_ *SgmAoup;
struct SgmAoup_ {
  MPI_Comm comm;
  PetscMPIInt rank, size;
  SgmAoupParams p;
  const SgmPairPotential *pot;
  double rc;         /* interaction range */
  SgmDecomp decomp;  /* periodic only */
  SgmHalo halo;      /* periodic only */
  SgmParticles part; /* locals then ghosts */
  SgmCells cells;
  int64_t step; /* dynamics steps done */
  /* Verlet lists: partners of local i are nb_id[nl_start[i] .. nl_start[i+1]) (indices into
   * part, sorted by global id); xref holds the positions at the build. The same lists in sliced
   * ELLPACK order for the vectorised MIPS force kernel: locals in slices of SGM_AOUP_SLICE, slice
   * b of width sl_w[b] (its longest list) at sell[sl_start[b] + kk * SGM_AOUP_SLICE + c] = the
   * kk-th partner of local sl_perm[b * SGM_AOUP_SLICE + c], padded with the particle itself
   * (r = 0, a +0 term); sl_perm orders the locals by list length inside windows of
   * SGM_AOUP_SIGMA (SELL-C-sigma) */
  int64_t *nl_start, *sl_start;
  int32_t *nb_id, *sell, *sl_w, *sl_perm; /* sl_perm[b S + c]: the local in lane c of slice b */
  /* the slices whose lists hold locals only (sl_list[0 .. sl_nint)), then those with a ghost: the
   * first are computed while the ghost positions are in flight */
  int32_t *sl_list;
  int64_t sl_nint;
  double *xref;
  size_t nb_cap, xref_cap, nl_cap, sell_cap, sl_cap;
  /* list-build scratch: positions and ids in cell order (cx[2q], cid[q] of part index
   * cells.order[q]), the ids of the list being built */
  double *cx;
  int64_t *cid, *lid;
  size_t cx_cap, lid_cap;
  /* cell-order sort of the locals at each rebuild (periodic): key, permutation, scratch */
  int64_t *sort_key, *sort_perm, *sort_cnt;
  void *sort_tmp;
  size_t sort_cap, sort_cnt_cap;
  int list_valid;
  int64_t nbuilds;
  /* load balancing (sgm_aoup_set_balance): every bal_every list builds; the cuts and the cell ->
   * coordinate tables that s->decomp points to once they moved */
  int64_t bal_every, nbalances; /* nbalances: builds that moved the cuts since creation */
  int64_t *bal_cut[2];
  int32_t *bal_coord[2];
  int64_t *bal_scratch;
  /* lagged mode (sgm_aoup_set_lagged): the step's reduction pending until the next forward */
  int lagged, red_pending;
  double red_in[2], red_out[2];
  int64_t red_step;
  int *rcounts, *rdispls; /* open mode allgather */
  double *gbuf;
  size_t gcap;
  SgmAoupTimers tm; /* where sgm_aoup_step's wall time goes on this rank */
};

/// Collective: creates the engine (decomposition for periodic boxes). No particles yet.
PetscErrorCode sgm_aoup_create(MPI_Comm comm, const SgmAoupParams *p, SgmAoup *s);
/// Frees; accepts NULL. Collective.
PetscErrorCode sgm_aoup_destroy(SgmAoup *s);
/// Collective: the state from full arrays given identically on every rank (id[n], x[n*dim],
/// g[n*dim]); each rank keeps the particles it owns. Sets the step counter.
PetscErrorCode sgm_aoup_set_state(SgmAoup s, int64_t n, const int64_t *id, const double *x,
                                  const double *g, int64_t step);
/// Collective: random placement (SGM_RNG_PLACEMENT), `relax_steps` of overdamped descent on the
/// harmonic overlap energy to remove overlaps, g from its stationary law N(0, 1) (SGM_RNG_INIT_G).
PetscErrorCode sgm_aoup_init_random(SgmAoup s, int relax_steps);
/// Collective: computes forces on the current state (ghosts, cells, pair sums, trap).
PetscErrorCode sgm_aoup_forces(SgmAoup s);
/// Not collective: forget the neighbour lists (call after moving particles by hand).
PetscErrorCode sgm_aoup_invalidate(SgmAoup s);
/// Collective: one Euler-Maruyama step (forces, integrate; migration with each list rebuild);
/// step++.
PetscErrorCode sgm_aoup_step(SgmAoup s);
/// Collective: sgm_aoup_gather_block into caller arrays x, g of count*dim values each (count of
/// the id block of this rank, sgm_decomp_split of n over size).
PetscErrorCode sgm_aoup_gather_block_into(SgmAoup s, double *x, double *g);
/// Collective: the particles of id block `rank` (split of n over size) in id order:
/// *start, *count and x[count*dim], g[count*dim] (caller frees with PetscFree). Checks exactly
/// that every id appears once (conservation).
PetscErrorCode sgm_aoup_gather_block(SgmAoup s, int64_t *start, int64_t *count, double **x,
                                     double **g);
/// Collective: load balancing for a periodic box on several ranks. Every `every` list builds
/// (0 = never; the first build included) the cuts between rank patches along each dimension
/// with several ranks move to split the particle counts of the cell columns into equal parts,
/// each patch keeping at least half the uniform width and at least min_width (a halo width the
/// caller needs, e.g. the observables'). The trajectory is the same bits with or without it.
PetscErrorCode sgm_aoup_set_balance(SgmAoup s, int64_t every, double min_width);
/// Collective: in lagged mode each step's reduction (Verlet displacement, non-finite check) is
/// not an allreduce at the end of sgm_aoup_step: its two values travel with the next step's
/// ghost-position messages (sgm_halo_forward_reduce), which every rank waits for anyway, and
/// are applied by the next sgm_aoup_forces after the interior slices of the MIPS kernel (the
/// slices are recomputed if the lists turn out stale); or by sgm_aoup_sync (an allreduce). Same
/// rebuild steps, same bits, same error (naming the step it refers to). Only with a periodic
/// box whose halo reaches every rank (at most 3 ranks per dimension); elsewhere, and off (the
/// default), the step ends with its allreduce. The collective functions below complete a
/// pending reduction first; code that reads the state between steps calls sgm_aoup_sync.
PetscErrorCode sgm_aoup_set_lagged(SgmAoup s, PetscBool on);
/// Collective: completes a pending lagged reduction (no-op otherwise); raises the non-finite
/// error it carries.
PetscErrorCode sgm_aoup_sync(SgmAoup s);
/// Not collective: zeroes the timers (SgmAoupTimers).
void sgm_aoup_timers_reset(SgmAoup s);
/// Collective: one log line per phase of s->tm on rank 0: per step, mean and max over ranks, and
/// the spread of the ranks' own work (imbalance), with the local counts at the rebuilds.
PetscErrorCode sgm_aoup_timers_log(SgmAoup s, const char *stage);
/// Collective: total count and id checksum; error if particles were lost or duplicated.
PetscErrorCode sgm_aoup_check(SgmAoup s);

#endif
