#!/usr/bin/env bash
# Step cost of two revisions back to back: bash benchmarks/ab_step_cost.sh REV_A REV_B [ROUNDS] [-- asp-bench args]
#
# Each revision is checked out in a temporary git worktree and timed by its own
# benchmarks.bench (--measure step-cost) with this checkout's .venv, alternating A, B, A, B ...
# so that drifts of a shared machine hit both. Prints each run's table; the JSON goes to
# results/ab-step-cost/<rev>-<round>/. Default arguments: MNIST, ASP and EWC against vanilla, 1 thread.
set -euo pipefail
cd "$(dirname "$0")/.."
a=$1 b=$2 rounds=${3:-2}
shift $(( $# < 3 ? $# : 3 ))
[[ ${1:-} == -- ]] && shift
args=("$@")
if (( ${#args[@]} == 0 )); then
  args=(--dataset mnist --strategies asp,ewc --set asp.lam=1 --set ewc.lam=30 --repeats 60)
fi
py=$PWD/.venv/bin/python
data=${ASP_DATA_DIR:-$PWD/../shared/data}
tmp=$(mktemp -d)
trap 'for w in "$tmp"/*/; do git worktree remove --force "$w" >/dev/null 2>&1 || true; done; rm -rf "$tmp"' EXIT
for rev in "$a" "$b"; do
  git worktree add --detach -q "$tmp/$rev" "$rev"
done
for ((i = 1; i <= rounds; i++)); do
  for rev in "$a" "$b"; do
    echo "== $rev, round $i"
    (cd "$tmp/$rev" && PYTHONPATH=$PWD $py -m benchmarks.bench --data-dir "$data" --threads 1 --no-progress \
       --measure step-cost "${args[@]}" --out "$OLDPWD/results/ab-step-cost/$rev-$i") | grep -v '^$\|^wrote\|^elapsed'
  done
done
