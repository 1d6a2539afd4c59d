#!/usr/bin/env bash
# A profile-guided (PGO) release build: builds the proxy instrumented, runs the load
# harness's proxy rows against it (every auth method, kept and new connections) to record
# which branches and calls the request path takes, then builds again with that profile.
# The binary it prints is the one to install; `cargo build --release` stays the plain one.
#   benches/pgo.sh                                   # ~10 min; prints the binary's path
#   PROXY_BIN=$(benches/pgo.sh | tail -1) benches/load.sh   # measure it beside the peers
# Needs what benches/load.sh needs, and llvm-profdata of rustc's LLVM major version
# (Debian: apt-get install llvm-NN, NN from `rustc -vV`).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${PGO_DIR:-$root/target/pgo}
mkdir -p "$out"
out=$(cd "$out" && pwd) # the builds run in the checkout (below)
llvm=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
host=$(rustc -vV | sed -n 's/^host: //p')
profdata=${LLVM_PROFDATA:-}
if [[ -z $profdata ]]; then
  for c in "llvm-profdata-$llvm" llvm-profdata; do
    if command -v "$c" >/dev/null && "$c" --version | grep -q "LLVM version $llvm\."; then
      profdata=$c
      break
    fi
  done
fi
if [[ -z $profdata ]]; then
  echo "pgo.sh: needs llvm-profdata of LLVM $llvm (Debian: apt-get install llvm-$llvm)" >&2
  exit 1
fi
rm -rf "$out/profiles"
mkdir -p "$out/profiles"
# --target: RUSTFLAGS then reach the proxy and its libraries, not build scripts and macros.
# Built from the checkout, so that its .cargo/config.toml applies (cargo reads it from the
# working directory up, wherever the manifest is).
(cd "$root" && RUSTFLAGS="-Cprofile-generate=$out/profiles" \
  cargo build --release --target "$host" --target-dir "$out/gen" >&2)
# Each proxy process writes its counts when it exits (the harness stops it with SIGTERM).
LLVM_PROFILE_FILE="$out/profiles/proxy-%p-%m.profraw" PROXY_BIN="$out/gen/$host/release/jira-auth-proxy" \
  ONLY=${PGO_ONLY:-^proxy-} ROUNDS=1 DURATION=${PGO_DURATION:-3} WARMUP=1 CLOSE_ROUNDS=1 \
  "$root/benches/load.sh" >&2
"$profdata" merge -o "$out/proxy.profdata" "$out/profiles"
(cd "$root" && RUSTFLAGS="-Cprofile-use=$out/proxy.profdata" \
  cargo build --release --target "$host" --target-dir "$out/use" >&2)
bin=$out/use/$host/release/jira-auth-proxy
# The binary to install must have aws-lc without its CPU-jitter entropy source
# (.cargo/config.toml; SECURITY.md, "Randomness"), as its symbols show.
[[ -x $bin ]] || {
  echo "pgo.sh: no binary at $bin" >&2
  exit 1
}
grep -qa RAND_bytes "$bin" || {
  echo "pgo.sh: $bin has no symbols to check aws-lc's entropy source by" >&2
  exit 1
}
if grep -qa jent_read_entropy "$bin"; then
  echo "pgo.sh: $bin has aws-lc's CPU-jitter entropy source: .cargo/config.toml was not applied" >&2
  exit 1
fi
echo "$bin"
