/* The [analysis] table: settings of the per-frame observables (include/sgm/observables.h; file
 * layout in docs/formats.md). Registered in sgm_register_all (src/app/register.c). */
#include "sgm/observables.h"

#include <math.h>

static const SgmKeySpec analysis_keys[] = {
    {"r_local", SGM_KEY_REAL, "5.0", 0, 1e-9, INFINITY, NULL, "a",
     "Radius of the local-density disk in units of the particle radius a: n_i counts the other "
     "particles closer than r_local * a (minimum image); phi_i = n_i (a / (r_local a))^d. "
     "r_local * a must stay below L/2 and the narrowest rank patch"},
    {"density_bins", SGM_KEY_INT, "64", 0, 2, 1e7, NULL, "",
     "Bins of the local-density histogram: bin b counts particles with n_i = b, the last bin "
     "those with n_i >= density_bins - 1"},
    {"contact_tol", SGM_KEY_REAL, "0.1", 0, 0.0, 10.0, NULL, "",
     "Two particles are in contact (same cluster) when r < 2a (1 + contact_tol)"},
    {"sk_grid", SGM_KEY_INT, "0", 0, -1, 16384, NULL, "",
     "Grid nodes per dimension M of the nearest-grid-point density for S(k); 0 = automatic (the "
     "smallest even M with no prime factor above 5 and spacing L/M <= a/2, at most 2048 in 2D), "
     "-1 = no S(k)"},
    {"every", SGM_KEY_INT, "0", 0, 0, 2.8e14, NULL, "frames",
     "Compute the observables on every this many trajectory frames during simulate (0 = never; "
     "periodic boxes only)"},
    {"per_particle", SGM_KEY_BOOL, "false", 0, -INFINITY, INFINITY, NULL, "",
     "Also store n_i and the cluster label of every particle ([T][N] datasets in id order, as "
     "large as a position frame's x component)"},
    {NULL, 0, NULL, 0, 0, 0, NULL, NULL, NULL},
};

const SgmTableSpec sgm_table_analysis = {
    "analysis", "Observables of particle frames: local density, contact clusters, S(k)",
    analysis_keys, 0};
