#!/usr/bin/env bash
# AOUP particle-engine throughput against the LAMMPS anchor, measured in the same invocation.
#
#   bench/aoup/run.sh [BUILD_DIR]          # default BUILD_DIR = build (relative to the repo root)
#   NS="4096 32768" NPS="1 2" REPS=3 bench/aoup/run.sh build-perf
#
# Builds nothing. For each (N, ranks): MIPS (input/aoup_mips_4096.toml with system.n = N: phi = 0.5,
# v0 = 0.025, gamma = 1e-4, eps = 0, dt = 0.1, harmonic k = 1), EQUIL steps then STEPS steps, one
# frame at each end (frame_every = STEPS; FRAME_EVERY=n: a frame every n steps instead, e.g. 200 as
# in the paper's input), observables on every frame (the input's [analysis] every = 1), no
# checkpoints; particle-steps/s from the stage's own throughput line (wall time of the step loop,
# frames included). Best of REPS; the repetitions alternate the rank counts (1, 2, 1, 2, ...).
# SETS="key=value ..." adds --set options (e.g. SETS="simulate.frames_per_write=1" for an A/B).
# Then the anchor /work/shared/anchors/lammps/run.sh (read-only: run from a temporary copy) with
# LMP_CONFIG (default morse-opt), LMP_T (default 0.1) and LMP_SKIN (default 1.0): the anchor's
# slow-particle variant, the fair comparison for slow MIPS particles (docs/performance.md).
# Prints one row per (N, ranks): sgm_hpc and LAMMPS particle-steps/s, their ratio, parallel
# efficiency P(2)/(2 P(1)), and "bg" = cores used by other processes during the sgm_hpc run (the
# anchor's definition); cpu_ps/s = particle-steps per CPU-second of one rank (user+sys of the whole
# process over np, initialisation included) and cpu_eff its 2-rank/1-rank ratio: on this shared
# box wall-clock 2-rank numbers are ruined by other jobs, CPU time much less so. steps_ps/s and
# eff_steps: the same runs without the time of their frames (observables, S(k), HDF5; the
# LAMMPS anchor writes and analyses nothing), best of REPS. Memory: peak RSS (VmHWM) of 1-rank runs; bytes/particle =
# (RSS(N2) - RSS(N1)) / (N2 - N1) between the two largest N, which removes the MPI/PETSc baseline.
# Last, the stage's own time split of the best run of each (N, ranks): microseconds per step in
# forces, integration, halo (ghost positions), allreduce, migration, ghost rebuild and lists, mean
# and max over ranks (halo and allreduce include waiting for the slowest rank), and the frames.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${1:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
EXE=$BUILD/sgm_hpc
[ -x "$EXE" ] || { echo "no $EXE (build first: cmake --build $BUILD)" >&2; exit 1; }
NS=${NS:-"4096 32768"}
NPS=${NPS:-"1 2"}
REPS=${REPS:-3}
EQUIL=${EQUIL:-200}
STEPS_SMALL=${STEPS_SMALL:-3000} # N <= 8192
STEPS_LARGE=${STEPS_LARGE:-1000}
LMP_CONFIG=${LMP_CONFIG:-morse-opt}
LMP_T=${LMP_T:-0.1}
LMP_SKIN=${LMP_SKIN:-1.0}
LAMMPS=${LAMMPS:-1}
ANCHOR=${ANCHOR:-/work/shared/anchors/lammps}
export OMP_NUM_THREADS=1
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
busy() { awk '/^cpu /{print ($2+$3+$4+$7+$8+$9)/100}' /proc/stat; }
cpu_self() { awk '{print ($14+$15+$16+$17)/100}' /proc/$$/stat; }

echo "# $(date -u +%FT%TZ) $(uname -n) $(getconf _NPROCESSORS_ONLN) cpus; load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# sgm_hpc: $EXE ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null))"
declare -A PS PSS BG RSS CPS
declare -A BEST
for N in $NS; do
  if [ "$N" -le 8192 ]; then S=$STEPS_SMALL; else S=$STEPS_LARGE; fi
  # repetitions outermost: the rank counts alternate (1, 2, 1, 2, ...), so a slow phase of the
  # host hits both alike instead of all repetitions of one rank count
  for rep in $(seq 1 "$REPS"); do
    for np in $NPS; do
      best=${BEST[$N.$np]:-0}
      out=$TMP/o.$N.$np.$rep
      args=(--set "run.output=\"$out\"" --set run.overwrite=true --set "system.n=$N"
        --set "simulate.n_equil=$EQUIL" --set "simulate.n_steps=$S" --set "simulate.frame_every=${FRAME_EVERY:-$S}"
        --set simulate.checkpoint_every=0)
      for kv in ${SETS:-}; do args+=(--set "$kv"); done
      args+=("$ROOT/input/aoup_mips_4096.toml")
      b0=$(busy); w0=$(date +%s.%N)
      if [ "$np" = 1 ]; then
        # singleton MPI (no mpiexec): GNU time's %M is this process's peak RSS
        /usr/bin/time -f "%M %U %S" -o "$TMP/rss" "$EXE" "${args[@]}" >"$TMP/log" 2>&1
      else
        /usr/bin/time -f "%M %U %S" -o "$TMP/rss" mpiexec --bind-to core -n "$np" "$EXE" "${args[@]}" >"$TMP/log" 2>&1
      fi
      w1=$(date +%s.%N); b1=$(busy)
      ps=$(awk '/particle-steps\/s;/{for(i=1;i<=NF;i++) if($i=="particle-steps/s;") print $(i-1)}' "$TMP/log")
      # the step loop without its frames: "frames (+analysis) X s of the Y s loop"
      pss=$(awk -v N=$N -v s=$((EQUIL + S)) '/frames \(\+analysis\)/{print N*s/($8-$4)}' "$TMP/log")
      [ -n "$ps" ] || { echo "sgm_hpc failed (N=$N np=$np):" >&2; tail -5 "$TMP/log" >&2; exit 1; }
      # other processes' cores: total busy minus ours (np cores at most while running)
      cpu=$(awk -v a="$b0" -v b="$b1" -v w="$(awk -v a=$w0 -v b=$w1 'BEGIN{print b-a}')" -v np=$np \
        'BEGIN{x=(b-a)/w-np; if(x<0)x=0; printf "%.2f", x}')
      # CPU-time rate: particle-steps over the CPU seconds per rank of the whole process (init and
      # relaxation included, so it underestimates); robust to other processes taking the cores
      read -r rss ut st <"$TMP/rss"
      cps=$(awk -v N=$N -v s=$((EQUIL + S)) -v u=$ut -v t=$st -v np=$np 'BEGIN{printf "%.4g", N*s/((u+t)/np)}')
      if awk -v a="$pss" -v b="${PSS[$N.$np]:-0}" 'BEGIN{exit !(a>b)}'; then PSS[$N.$np]=$pss; fi
      if awk -v a="$ps" -v b="$best" 'BEGIN{exit !(a>b)}'; then
        best=$ps
        BG[$N.$np]=$cpu
        cp "$TMP/log" "$TMP/best.$N.$np"
      fi
      if awk -v a="$cps" -v b="${CPS[$N.$np]:-0}" 'BEGIN{exit !(a>b)}'; then CPS[$N.$np]=$cps; fi
      [ "$np" = 1 ] && RSS[$N]=$rss
      rm -rf "$out"
      BEST[$N.$np]=$best
    done
  done
  for np in $NPS; do
    PS[$N.$np]=${BEST[$N.$np]}
    echo "# sgm_hpc N=$N np=$np steps=$((EQUIL + S)) best-of-$REPS: ${PS[$N.$np]} particle-steps/s (bg ${BG[$N.$np]}); per CPU-second of a rank ${CPS[$N.$np]}"
  done
done

declare -A LP
if [ "$LAMMPS" = 1 ]; then
  cp -r "$ANCHOR" "$TMP/lammps" && chmod -R u+w "$TMP/lammps"
  echo "# LAMMPS anchor: CONFIGS=$LMP_CONFIG T=$LMP_T SKIN=$LMP_SKIN REPS=$REPS NS=\"$NS\" NPS=\"$NPS\""
  (cd "$TMP/lammps" && CONFIGS=$LMP_CONFIG T=$LMP_T SKIN=$LMP_SKIN NS="$NS" NPS="$NPS" REPS=$REPS \
    MAXWAIT=${MAXWAIT:-10} ./run.sh) | tee "$TMP/lmp.txt" | sed 's/^/# /'
  while read -r c n p _ _ _ ps _; do
    [ "$c" = "$LMP_CONFIG" ] && LP[$n.$p]=$ps
  done <"$TMP/lmp.txt"
fi

printf "\n%6s %2s %12s %12s %7s %6s %5s | %12s %8s | %12s %9s\n" N np sgm_ps/s lammps_ps/s ratio eff bg cpu_ps/s cpu_eff steps_ps/s eff_steps
for N in $NS; do
  for np in $NPS; do
    l=${LP[$N.$np]:-nan}
    r=$(awk -v a="${PS[$N.$np]}" -v b="$l" 'BEGIN{if(b+0>0) printf "%.2f", a/b; else print "-"}')
    e=$(awk -v a="${PS[$N.$np]}" -v b="${PS[$N.1]:-0}" -v p=$np 'BEGIN{if(b>0) printf "%.2f", a/(p*b); else print "-"}')
    ce=$(awk -v a="${CPS[$N.$np]}" -v b="${CPS[$N.1]:-0}" 'BEGIN{if(b>0) printf "%.2f", a/b; else print "-"}')
    es=$(awk -v a="${PSS[$N.$np]:-0}" -v b="${PSS[$N.1]:-0}" -v p=$np 'BEGIN{if(b>0) printf "%.2f", a/(p*b); else print "-"}')
    printf "%6d %2d %12.4g %12s %7s %6s %5s | %12s %8s | %12.4g %9s\n" "$N" "$np" "${PS[$N.$np]}" "$l" "$r" "$e" "${BG[$N.$np]}" "${CPS[$N.$np]}" "$ce" "${PSS[$N.$np]:-0}" "$es"
  done
done
set -- $NS
if [ $# -ge 2 ]; then
  n1=${@: -2:1}; n2=${@: -1}
  if [ -n "${RSS[$n1]:-}" ] && [ -n "${RSS[$n2]:-}" ]; then
    echo
    echo "peak RSS, 1 rank: N=$n1 ${RSS[$n1]} KiB, N=$n2 ${RSS[$n2]} KiB; marginal memory:" \
      "$(awk -v a="${RSS[$n1]}" -v b="${RSS[$n2]}" -v n="$n1" -v m="$n2" 'BEGIN{printf "%.0f", (b-a)*1024/(m-n)}') bytes/particle"
  fi
fi

echo
echo "time split of the best run (simulate's own timers; microseconds per step, mean / max over ranks):"
for N in $NS; do
  for np in $NPS; do
    [ -f "$TMP/best.$N.$np" ] || continue
    echo "# N=$N np=$np"
    sed -n 's/^simulate:   /    /p' "$TMP/best.$N.$np"
  done
done
