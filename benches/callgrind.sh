#!/usr/bin/env bash
# Instructions per request, by callgrind: repeatable for one binary (the count does not
# depend on what else the machine is doing; timed work, such as the audit log's flush
# each second, adds a little with the runs' length), so a change to the request path can
# be weighed without a load run.
#   benches/callgrind.sh [BIN]               # the API-key row (an imported key, Bearer);
#                                            # without BIN, `cargo build --release`'s
#   HEADER='Authorization: Basic YWxpY2U6czNjcmV0' benches/callgrind.sh BIN
#   HEADER=session benches/callgrind.sh BIN  # a memory-store session cookie, from the
#                                            # proxy's login endpoint before each run
#   CLOSE=1 benches/callgrind.sh BIN         # a new connection per request
#                                            # (`Connection: close`), as the harness's
#                                            # keep-alive-off rounds
# The proxy (one listener thread, the load rows' chain and audit settings) runs under
# callgrind behind a one-worker nginx answering as Jira does in benches/load.sh; a client
# sends FEW and then MANY sequential keep-alive requests on one connection (CLOSE=1: each
# on a connection of its own), and the
# difference of the two totals over MANY - FEW is what one request costs, start-up and
# shutdown cancelled out. OUT (default target/callgrind) keeps the two profiles, for
# callgrind_annotate.
set -euo pipefail
shopt -s inherit_errexit
root=$(cd "$(dirname "$0")/.." && pwd)
harness=${BENCH_HARNESS:-$root/../shared/bench}
out=${OUT:-$root/target/callgrind}
few=${FEW:-2000}
many=${MANY:-20000}
p_up=${P_UP:-19901}
p_proxy=${P_PROXY:-19900}
key=benchtokenbenchtokenbenchtoken12
header=${HEADER:-Authorization: Bearer $key}
for tool in valgrind nginx python3 curl; do
  command -v "$tool" >/dev/null || {
    echo "callgrind.sh needs $tool (Debian: apt-get install valgrind nginx python3 curl)" >&2
    exit 2
  }
done
conf=$harness/conf/upstream-nginx.conf
[[ -f $conf ]] || {
  echo "callgrind.sh needs the bench harness's $conf (set BENCH_HARNESS)" >&2
  exit 2
}
if [[ $# -ge 1 ]]; then
  bin=$1
else
  (cd "$root" && cargo build --release) # in the checkout: its .cargo/config.toml applies
  # A relative CARGO_TARGET_DIR is the checkout's, where cargo ran.
  bin=$(cd "$root" && cd "${CARGO_TARGET_DIR:-target}" && pwd)/release/jira-auth-proxy
fi
[[ -x $bin ]] || {
  echo "callgrind.sh: no binary at $bin" >&2
  exit 2
}
mkdir -p "$out/up/tmp"
out=$(CDPATH= cd -- "$out" && pwd) # the proxy and nginx run from elsewhere
sed -e 's/@UP_WORKERS@/1/' -e "s|@WORK@|$out/up|g" -e "s/@P_UP@/$p_up/" "$conf" > "$out/up/nginx.conf"
nginx -p "$out/up/" -c "$out/up/nginx.conf" &
up=$!
trap 'kill $up 2>/dev/null || true' EXIT
alice_hash=$(printf 's3cret' | "$bin" hash-password)
imported=$(printf '%s' "$key" | "$bin" keys import --user carol --name bench)
cat > "$out/proxy.toml" <<TOML
version = 1
[server]
listen = "127.0.0.1:$p_proxy"
workers = 1
[upstream]
url = "http://127.0.0.1:$p_up"
[audit]
to = "$out/audit.log"
flush = "1s"
[[auth.chain]]
type = "api_key"
[[auth.chain]]
type = "session"
[[auth.chain]]
type = "basic"
cache_ttl = "5m"
[[users]]
name = "alice"
password_hash = "$alice_hash"
$imported
[[access.rules]]
name = "authenticated"
authenticated = true
effect = "allow"
TOML

# One connection, N requests one after another, each answer read whole before the next
# (CLOSE=1: a connection per request, each read to its end).
client() {
  python3 - "$p_proxy" "$1" "$header" "${CLOSE:-0}" <<'PY'
import socket, sys
port, n, header, close = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
if close:
    req = ("GET /rest/api/2/myself HTTP/1.1\r\nHost: jira.example\r\n" + header + "\r\nConnection: close\r\n\r\n").encode()
    for _ in range(n):
        # A proxy that kept the connection open would fail the run, not hang it.
        s = socket.create_connection(("127.0.0.1", port), timeout=120)
        s.sendall(req)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
        s.close()
        if not got.startswith(b"HTTP/1.1 200"):
            sys.exit("not 200: " + got[:40].decode("latin-1"))
    sys.exit(0)
req = ("GET /rest/api/2/myself HTTP/1.1\r\nHost: jira.example\r\n" + header + "\r\n\r\n").encode()
s = socket.create_connection(("127.0.0.1", port))
buf = b""
for _ in range(n):
    s.sendall(req)
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head = buf[:end].decode("latin-1").lower()
            if not head.startswith("http/1.1 200"):
                sys.exit("not 200: " + head.splitlines()[0])
            length = int(head.split("content-length:")[1].split("\r\n")[0])
            if len(buf) >= end + 4 + length:
                buf = buf[end + 4 + length:]
                break
        chunk = s.recv(65536)
        if not chunk:
            sys.exit("connection closed")
        buf += chunk
s.close()
PY
}

# Total instructions of the proxy serving N requests.
run() {
  local n=$1 file=$out/callgrind.$1.out
  valgrind --tool=callgrind --callgrind-out-file="$file" "$bin" serve --config "$out/proxy.toml" \
    > /dev/null 2> "$out/valgrind.$n.log" &
  local pid=$!
  # `run` is a subshell of its own: stopping it stops the proxy too.
  trap "kill $pid 2>/dev/null || true" EXIT
  for _ in $(seq 1200); do
    (exec 3<>/dev/tcp/127.0.0.1/$p_proxy) 2>/dev/null && break
    sleep 0.1
  done
  if [[ $header == session ]]; then
    local cookie
    cookie=$(curl -s --max-time 60 -H 'Content-Type: application/json' -d '{"username":"alice","password":"s3cret"}' \
      "http://127.0.0.1:$p_proxy/rest/auth/1/session" |
      python3 -c 'import json, sys; s = json.load(sys.stdin)["session"]; print(s["name"] + "=" + s["value"])') || exit 1
    header="Cookie: $cookie"
  fi
  client 1 || exit 1 # warms a cached credential, as under load
  client "$n" || exit 1
  kill -INT $pid
  wait $pid || true
  awk '/^summary:/ {print $2}' "$file"
}

a=$(run "$few")
b=$(run "$many")
[[ $a =~ ^[0-9]+$ && $b =~ ^[0-9]+$ ]] || {
  echo "callgrind.sh: no totals (see $out/valgrind.*.log)" >&2
  exit 1
}
echo "instructions per request: $(((b - a) / (many - few)))  (profiles: $out/callgrind.{$few,$many}.out)"
