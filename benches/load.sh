#!/usr/bin/env bash
# Load benchmark: runs the shared harness (../shared/bench: a fake Jira plus nginx,
# HAProxy, Caddy and Apache peers, driven by wrk) with the proxy added as extra rows.
# The harness is copied under target/ so nothing is written beside its source.
#   benches/load.sh                          # everything (~10 min)
#   ONLY='nginx-plain|proxy' benches/load.sh # the proxy against a plain nginx hop only
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
src=${BENCH_HARNESS:-$root/../shared/bench}
work=$root/target/bench-harness
# PROXY_BIN set: that binary (benches/pgo.sh's, say) is measured as it is, nothing built.
if [[ -z ${PROXY_BIN:-} ]]; then
  (cd "$root" && cargo build --release) # in the checkout: its .cargo/config.toml applies
  # A relative CARGO_TARGET_DIR is the checkout's, where cargo ran.
  PROXY_BIN=$(cd "$root" && cd "${CARGO_TARGET_DIR:-target}" && pwd)/release/jira-auth-proxy
fi
# PROXY_BIN_BASE (a second build, rows `base-…`): made absolute, as run.sh runs elsewhere.
if [[ -n ${PROXY_BIN_BASE:-} ]]; then
  PROXY_BIN_BASE=$(realpath "$PROXY_BIN_BASE")
  [[ -x $PROXY_BIN_BASE ]] || { echo "load.sh: PROXY_BIN_BASE=$PROXY_BIN_BASE is not an executable" >&2; exit 2; }
  export PROXY_BIN_BASE
fi
mkdir -p "$work"
cp -r "$src"/. "$work"/
if [[ ! -x $work/.venv/bin/python ]] || ! command -v wrk >/dev/null; then
  (cd "$work" && bash setup.sh)
fi
export PROXY_BIN
# The harness's awk programs use a variable named `load`, a builtin in gawk 5: prefer mawk.
if awk --version 2>/dev/null | grep -q "GNU Awk" && command -v mawk >/dev/null; then
  mkdir -p "$work/.awk-shim" && ln -sf "$(command -v mawk)" "$work/.awk-shim/awk"
  export PATH="$work/.awk-shim:$PATH"
fi
cd "$work"
BENCH_EXTRA=$root/benches/bench-extra.conf exec ./run.sh "$@"
