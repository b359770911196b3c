/* The [system] and [simulate] tables of the AOUP engine (documented in docs/input.md through the
 * schema registry; the physics in docs/simulate.md). */
#include "sgm/simulate.h"

#include <math.h>

static const SgmKeySpec system_keys[] = {
    {"kind", SGM_KEY_STRING, "\"aoup\"", 0, -INFINITY, INFINITY, "aoup", "",
     "Particle model: active Ornstein-Uhlenbeck particles (paper 002, eq. 1)"},
    {"dim", SGM_KEY_INT, "2", 0, 1, 2, NULL, "", "Spatial dimension d"},
    {"n", SGM_KEY_INT, "4096", 0, 1, 4294967295.0, NULL, "", "Number of particles N"},
    {"L", SGM_KEY_REAL, NULL, 0, 0.0, INFINITY, NULL, "length",
     "Box edge; when unset, from phi: L = sqrt(N pi a^2 / phi) in 2D, L = 2 N a / phi in 1D "
     "(open boxes: edge of the placement square, centred at the origin)"},
    {"phi", SGM_KEY_REAL, "0.5", 0, 1e-9, 1.0, NULL, "", "Packing fraction, used when L is unset"},
    {"mu", SGM_KEY_REAL, "1.0", 0, 0.0, INFINITY, NULL, "1/(force time)", "Mobility mu"},
    {"v0", SGM_KEY_REAL, "0.025", 0, 0.0, INFINITY, NULL, "length/time",
     "Self-propulsion speed v0"},
    {"gamma", SGM_KEY_REAL, "1e-4", 0, 1e-300, INFINITY, NULL, "1/time",
     "Persistence rate gamma of the OU variable g"},
    {"eps", SGM_KEY_REAL, "0.0", 0, 0.0, INFINITY, NULL, "length^2/time",
     "Thermal noise scale epsilon (sqrt(2 eps) dW on x); 0 = athermal"},
    {"a", SGM_KEY_REAL, "1.0", 0, 1e-300, INFINITY, NULL, "length", "Particle radius a"},
    {"k", SGM_KEY_REAL, "1.0", 0, 0.0, INFINITY, NULL, "force/length",
     "Stiffness k of the pair repulsion"},
    {"potential", SGM_KEY_STRING, "\"harmonic\"", 0, -INFINITY, INFINITY, "harmonic|softplus", "",
     "Pair force: harmonic k(2a-r) (eq. 94) or softplus-smoothed k softplus_beta(2a-r) (eq. 95)"},
    {"beta", SGM_KEY_REAL, "7.5", 0, 1e-6, INFINITY, NULL, "1/length",
     "Sharpness beta of the softplus force"},
    {"softplus_cut", SGM_KEY_REAL, "16.0", 0, 1.0, INFINITY, NULL, "",
     "Softplus force truncated at r = 2a + softplus_cut/beta (force there ~ k e^-cut / beta)"},
    {"trap_A", SGM_KEY_REAL, "0.0", 0, 0.0, INFINITY, NULL, "force/length",
     "Harmonic trap strength A (eq. 27); needs boundary = \"open\"; 0 = no trap"},
    {"boundary", SGM_KEY_STRING, "\"periodic\"", 0, -INFINITY, INFINITY, "periodic|open", "",
     "Periodic box [0, L)^d (space decomposition) or open space (replicated mode, small N)"},
    {NULL, 0, NULL, 0, 0, 0, NULL, NULL, NULL},
};

static const SgmKeySpec simulate_keys[] = {
    {"dt", SGM_KEY_REAL, "0.1", 0, 1e-300, INFINITY, NULL, "time", "Time step"},
    {"n_equil", SGM_KEY_INT, "0", 0, 0, 2.8e14, NULL, "steps",
     "Equilibration steps before the first frame"},
    {"n_steps", SGM_KEY_INT, "1000", 0, 0, 2.8e14, NULL, "steps",
     "Production steps after equilibration"},
    {"frame_every", SGM_KEY_INT, "100", 0, 1, 2.8e14, NULL, "steps",
     "A trajectory frame every this many production steps (the first at the end of equilibration)"},
    {"frames_per_write", SGM_KEY_INT, "0", 0, 0, 1e6, NULL, "frames",
     "Frames (with their observables) kept in memory and written to trajectory.h5 together, one "
     "file open and one write per dataset for all of them; 0 = automatic (as many as fit in 16 "
     "MiB per rank, at most 256), 1 = a write per frame; never more than the run's frames, and a "
     "buffer above 4 GiB per rank is an error. Pending frames are written before every "
     "checkpoint and at the end (also on a stop signal), so a checkpoint never refers to an "
     "unwritten frame. The file is the same for any value"},
    {"checkpoint_every", SGM_KEY_INT, "0", 0, 0, 2.8e14, NULL, "steps",
     "Write checkpoint.h5 every this many steps (0: only at the end and on SIGTERM/SIGUSR1)"},
    {"g_update", SGM_KEY_STRING, "\"euler\"", 0, -INFINITY, INFINITY, "euler|exact", "",
     "Update of g: Euler-Maruyama (as in the paper) or the exact OU step "
     "g <- e^{-gamma dt} g + sqrt(1 - e^{-2 gamma dt}) xi"},
    {"init", SGM_KEY_STRING, "\"random\"", 0, -INFINITY, INFINITY, "random|file", "",
     "Initial positions: uniform random plus overlap relaxation, or a frame of an H5MD file"},
    {"init_file", SGM_KEY_STRING, NULL, 0, -INFINITY, INFINITY, NULL, "path",
     "H5MD file for init = \"file\" (group [simulate] group, its last frame unless init_frame)"},
    {"init_frame", SGM_KEY_INT, "-1", 0, -2.8e14, 2.8e14, NULL, "",
     "Frame of init_file to start from (negative: counted from the end)"},
    {"relax_steps", SGM_KEY_INT, "100", 0, 0, 1e9, NULL, "steps",
     "Overlap-removal steps (overdamped descent on the pair energy) after random placement"},
    {"grid", SGM_KEY_INT_ARRAY, NULL, 0, 0, 65536, NULL, "",
     "Rank grid hint [px] or [px, py] (0 = decide); unset: PETSc decides"},
    {"skin", SGM_KEY_REAL, "0.5", 0, 0.0, INFINITY, NULL, "length",
     "Verlet skin: neighbour lists hold partners within range + skin and are rebuilt (with "
     "migration and ghosts) when a particle moved skin/2; 0 = rebuild every step. Results do not "
     "depend on it"},
    {"balance_every", SGM_KEY_INT, "10", 0, 0, 2.8e14, NULL, "list builds",
     "Load balancing (periodic box, several ranks): every this many neighbour-list builds the "
     "cuts between rank patches move to split the particle counts of the cell columns equally "
     "(a patch keeps at least half its uniform width); 0 = the uniform split throughout. Results "
     "do not depend on it"},
    {"cell_size", SGM_KEY_REAL, "0.0", 0, 0.0, INFINITY, NULL, "length",
     "Minimum width of the DMDA cells (0: the interaction range); sets the EPR field grid"},
    {"stop_after", SGM_KEY_INT, "0", 0, 0, 2.8e14, NULL, "steps",
     "Stop as on SIGTERM (checkpoint, return) after this many steps of this invocation; 0 = run "
     "to the end. For fixed-size job chunks and restart tests"},
    {"group", SGM_KEY_STRING, "\"all\"", 0, -INFINITY, INFINITY, NULL, "",
     "H5MD particle group name"},
    {NULL, 0, NULL, 0, 0, 0, NULL, NULL, NULL},
};

const SgmTableSpec sgm_table_system = {"system", "The particle system (AOUP, paper 002 eq. 1)",
                                       system_keys, 0};
const SgmTableSpec sgm_table_simulate = {
    "simulate", "Integration of the system's SDE: steps, frames, checkpoints, initial state",
    simulate_keys, 0};
