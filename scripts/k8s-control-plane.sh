#!/usr/bin/env bash
# A real Kubernetes 1.20.2 control plane on loopback, for tests (issue 16; same idea as controller-runtime's envtest).
#
#   scripts/k8s-control-plane.sh build        build kube-apiserver, kube-controller-manager and kube-scheduler
#                                             once from Debian bookworm's source package into the cache folder
#   scripts/k8s-control-plane.sh start DIR    certificates, etcd, apiserver, controller-manager, scheduler and the
#                                             simulated kubelet (scripts/k8s/sim_kubelet.py) on 127.0.0.1;
#                                             writes DIR/kubeconfig, DIR/*.pid, DIR/*.log, DIR/env
#   scripts/k8s-control-plane.sh stop DIR     stops them by PID (TERM, then KILL after a timeout)
#   scripts/k8s-control-plane.sh status DIR   which components run; exit 1 when one is down
#   scripts/k8s-control-plane.sh env DIR      prints `export KUBECONFIG=...` lines for a shell
#
# Environment: MLOPS_K8S_CACHE (cache folder, default ~/.cache/mlops-core/k8s-1.20.2), MLOPS_K8S_PYTHON (the
# Python that runs the simulated kubelet; needs the `kubernetes` package; default .venv/bin/python, then python3),
# MLOPS_K8S_ALLOWED_REGISTRIES / MLOPS_K8S_IMAGE_REGISTRY_INSECURE (comma separated non-loopback registries the
# kubelet may contact over https / http; none by default), MLOPS_K8S_NODE_NAME (default sim-node-0),
# MLOPS_K8S_WATCH_PID (stop the control plane when this process dies), MLOPS_K8S_START_TIMEOUT (seconds per
# component, default 120), MLOPS_K8S_STOP_TIMEOUT (seconds before KILL, default 15), MLOPS_K8S_BUILD_JOBS
# (go build -p, default 2).
#
# No kubelet or kubemark is ever built or run from the Kubernetes tree: their in-tree cloud credential providers
# contact the cloud metadata address, which is not on loopback. The simulated kubelet runs no containers.
set -euo pipefail

K8S_VERSION=1.20.2
DEB_SOURCE=kubernetes
DEB_VERSION_PREFIX="1.20.5+really1.20.2"
DEB_MIRROR="${MLOPS_K8S_DEB_MIRROR:-http://deb.debian.org/debian}"
CACHE="${MLOPS_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mlops-core/k8s-$K8S_VERSION}"
BIN="$CACHE/bin"
# kubectl comes from the same tree so the tests' client matches the server (Debian's kubernetes-client is this very
# source; the package would clash with other kubectl packages on /usr/bin/kubectl).
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
# Bumped whenever the build steps change, so that a cache built the old way is rebuilt.
BUILD_RECIPE=2
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
BUILD_PACKAGES=(golang-go golang-github-modern-go-reflect2-dev dpkg-dev)
RUN_PACKAGES=(etcd-server openssl)

log() { echo "k8s-control-plane: $*" >&2; }
die() { echo "k8s-control-plane: error: $*" >&2; exit 1; }

ensure_packages() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    die "missing Debian packages: ${missing[*]}; hint: run 'sudo apt-get install ${missing[*]}' (or 'make system-deps' as root)"
  fi
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "${missing[@]}" >&2 \
    || { apt-get -o DPkg::Lock::Timeout=900 update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "${missing[@]}" >&2; }
}

built() {
  local b
  for b in "${BINARIES[@]}"; do [ -x "$BIN/$b" ] || return 1; done
  grep -qF "recipe $BUILD_RECIPE" "$BIN/VERSION" 2>/dev/null
}

# Fetches the Debian source package with apt-get, using an apt lists folder of our own (a deb-src line is all
# it needs) so the machine's apt configuration is left alone.
fetch_source() {
  local dest="$1" apt="$CACHE/apt"
  mkdir -p "$apt/lists/partial" "$CACHE/src"
  printf 'deb-src %s bookworm main\n' "$DEB_MIRROR" >"$apt/sources.list"
  local opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
              -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o "APT::Sandbox::User=$(id -un)")
  if ! ls "$CACHE/src/${DEB_SOURCE}_${DEB_VERSION_PREFIX}"*.dsc >/dev/null 2>&1; then
    log "fetching Debian source package $DEB_SOURCE $DEB_VERSION_PREFIX"
    apt-get "${opts[@]}" update -qq >&2
    local ver
    ver="$(apt-cache "${opts[@]}" showsrc "$DEB_SOURCE" | awk '/^Version:/{print $2}' | grep -F "$DEB_VERSION_PREFIX" | sort -V | tail -1)"
    [ -n "$ver" ] || die "Debian has no source package $DEB_SOURCE $DEB_VERSION_PREFIX*; hint: check $DEB_MIRROR"
    (cd "$CACHE/src" && apt-get "${opts[@]}" source --download-only "$DEB_SOURCE=$ver" >&2)
  fi
  local dsc
  dsc="$(ls "$CACHE/src/${DEB_SOURCE}_${DEB_VERSION_PREFIX}"*.dsc | sort -V | tail -1)"
  dpkg-source -x --skip-debianization "$dsc" "$dest" >/dev/null
}

cmd_build() {
  mkdir -p "$CACHE"
  exec 9>"$CACHE/build.lock"
  if ! flock -n 9; then log "another build holds $CACHE/build.lock; waiting for it"; flock 9; fi
  if built; then exec 9>&-; return 0; fi
  ensure_packages "${BUILD_PACKAGES[@]}"
  local t0=$SECONDS work
  # A fixed work path (we hold the lock) keeps the go build cache's keys stable from one build to the next.
  work="$CACHE/build"
  rm -rf "$work"; mkdir -p "$work"
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" EXIT
  fetch_source "$work/src"
  # GOPATH mode, as the tree's own hack/lib/init.sh: the tree must live at $GOPATH/src/k8s.io/kubernetes.
  mkdir -p "$work/gopath/src/k8s.io" "$work/out"
  ln -s "$work/src" "$work/gopath/src/k8s.io/kubernetes"
  local tree="$work/gopath/src/k8s.io/kubernetes"
  # The vendored modern-go/reflect2 1.0.1 breaks on Go >= 1.18 (it relies on runtime internals); 1.0.2 fixes it.
  rm -rf "$work/src/vendor/github.com/modern-go/reflect2"
  cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "$work/src/vendor/github.com/modern-go/reflect2"
  export GOPATH="$work/gopath" GO111MODULE=off CGO_ENABLED=0 GOPROXY=off GOFLAGS= GOTOOLCHAIN=local
  export GOCACHE="$CACHE/go-build" GOTMPDIR="$work" GOGC="${GOGC:-50}"
  local jobs="${MLOPS_K8S_BUILD_JOBS:-2}"
  cd "$tree"
  log "building openapi-gen"
  go build -p "$jobs" -o "$work/out/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
  # The same input set as Makefile.generated_files' KUBE_OPENAPI_TAG_FILES: every package tagged
  # +k8s:openapi-gen= except code-generator's and sample-apiserver's.
  local dirs
  dirs="$(grep -rlR --include='*.go' '^// *+k8s:openapi-gen=' pkg cmd plugin vendor 2>/dev/null \
    | grep -v -e '/testdata/' -e '/_' -e '^vendor/k8s.io/code-generator/' -e '^vendor/k8s.io/sample-apiserver/' \
    | xargs -n1 dirname | LC_ALL=C sort -u | sed 's|^|k8s.io/kubernetes/|' | paste -sd, -)"
  [ -n "$dirs" ] || die "found no +k8s:openapi-gen= packages in the source tree"
  log "generating pkg/generated/openapi/zz_generated.openapi.go ($(tr ',' '\n' <<<"$dirs" | wc -l) packages)"
  "$work/out/openapi-gen" --logtostderr -v 0 -i "$dirs" -p k8s.io/kubernetes/pkg/generated/openapi \
    -O zz_generated.openapi -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt \
    -r "$work/api_violations.report" -o "$GOPATH/src" >&2
  [ -s pkg/generated/openapi/zz_generated.openapi.go ] || die "openapi-gen wrote no pkg/generated/openapi/zz_generated.openapi.go"
  # Both version packages, as hack/lib/version.sh does: --version reads component-base's, the apiserver's
  # /version endpoint client-go's. gitCommit is 1.20.2's tag commit, which the source tarball records.
  local ldflags="-s -w" pkg
  for pkg in component-base/version client-go/pkg/version; do
    ldflags+=" -X k8s.io/kubernetes/vendor/k8s.io/$pkg.gitVersion=v$K8S_VERSION -X k8s.io/kubernetes/vendor/k8s.io/$pkg.gitMajor=1"
    ldflags+=" -X k8s.io/kubernetes/vendor/k8s.io/$pkg.gitMinor=20 -X k8s.io/kubernetes/vendor/k8s.io/$pkg.gitTreeState=archive"
    ldflags+=" -X k8s.io/kubernetes/vendor/k8s.io/$pkg.gitCommit=faecb196815e248d3ecfb03c680a4507229c2a56"
    ldflags+=" -X k8s.io/kubernetes/vendor/k8s.io/$pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  done
  local b t
  for b in "${BINARIES[@]}"; do
    t=$SECONDS
    log "building $b"
    go build -p "$jobs" -trimpath -ldflags "$ldflags" -o "$work/out/$b" "./cmd/$b"
    log "built $b in $((SECONDS - t)) s"
  done
  "$work/out/kube-apiserver" --version | grep -qF "v$K8S_VERSION" || die "built kube-apiserver does not report v$K8S_VERSION"
  cd /
  # Atomic install: a complete bin folder is renamed into place.
  mkdir -p "$work/bin"
  for b in "${BINARIES[@]}"; do mv "$work/out/$b" "$work/bin/$b"; done
  echo "v$K8S_VERSION (Debian $DEB_SOURCE $DEB_VERSION_PREFIX, recipe $BUILD_RECIPE, built $(date -u +%FT%TZ) in $((SECONDS - t0)) s)" >"$work/bin/VERSION"
  rm -rf "$BIN.old"; [ -e "$BIN" ] && mv "$BIN" "$BIN.old"
  mv "$work/bin" "$BIN"
  rm -rf "$BIN.old"
  log "built ${BINARIES[*]} into $BIN in $((SECONDS - t0)) s"
  # The source tree is only needed for the build; the go build cache stays for a faster rebuild.
  rm -rf "$work"; trap - EXIT
  exec 9>&-  # release the lock: the components started next must not inherit it
}

free_ports() {  # N distinct free loopback ports, one a line
  python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

# Certificates: one CA signs the apiserver's serving cert and every client cert (admin, controller-manager,
# scheduler, the simulated node); a separate key pair signs service account tokens (ES256). ECDSA P-256 keys
# throughout: RSA key generation alone took over 10 s on a loaded 2-core machine.
make_certs() {
  local d="$1/pki"
  mkdir -p "$d"
  (
    cd "$d"
    umask 077
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=mlops-test-ca" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl ecparam -name prime256v1 -genkey -noout -out sa.key 2>/dev/null
    openssl ec -in sa.key -pubout -out sa.pub 2>/dev/null
    sign() {  # name subject extensions
      openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
      printf '%s\n' "$3" >"$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days 3650 \
        -extfile "$1.ext" 2>/dev/null
      rm -f "$1.csr" "$1.ext"
    }
    sign apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    local client="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
    sign admin "/O=system:masters/CN=mlops-admin" "$client"
    sign controller-manager "/CN=system:kube-controller-manager" "$client"
    sign scheduler "/CN=system:kube-scheduler" "$client"
    sign node "/O=system:nodes/CN=system:node:$NODE_NAME" "$client"
    sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client"
    sign front-proxy-client "/CN=front-proxy-client" "$client"
  )
}

kubeconfig() {  # file user
  local pki="$DIR/pki"
  cat >"$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: mlops-test
  cluster:
    server: $SERVER
    certificate-authority: $pki/ca.crt
users:
- name: $2
  user:
    client-certificate: $pki/$2.crt
    client-key: $pki/$2.key
contexts:
- name: mlops-test
  context:
    cluster: mlops-test
    user: $2
    namespace: default
current-context: mlops-test
KC
  chmod 600 "$1"
}

# Runs one component in its own session, stdin closed and output in DIR/NAME.log, so the caller's pipes are
# never held open; its PID goes into DIR/NAME.pid.
spawn() {
  local name="$1"; shift
  setsid "$@" </dev/null >"$DIR/$name.log" 2>&1 9>&- &
  echo $! >"$DIR/$name.pid"
}

alive() { local pid; pid="$(cat "$DIR/$1.pid" 2>/dev/null)" && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

fail_start() {
  local name="$1" why="$2"
  echo "k8s-control-plane: error: $name $why; last lines of $DIR/$name.log:" >&2
  tail -n 40 "$DIR/$name.log" >&2 || true
  cmd_stop "$DIR" || true
  exit 1
}

wait_for() {  # name timeout command...
  local name="$1" timeout="$2"; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    alive "$name" || fail_start "$name" "exited during start-up"
    [ $SECONDS -lt $deadline ] || fail_start "$name" "was not ready after ${timeout} s"
    sleep 0.2
  done
}

api_get() {  # path, with the admin client cert
  curl -fsS --max-time 5 --cacert "$DIR/pki/ca.crt" --cert "$DIR/pki/admin.crt" --key "$DIR/pki/admin.key" "$SERVER$1"
}

node_ready() {
  api_get "/api/v1/nodes/$NODE_NAME" | python3 -c '
import json, sys
node = json.load(sys.stdin)
ready = any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", []))
# The node lifecycle controller lifts the not-ready taint a few seconds after Ready; pods schedule from then on.
sys.exit(0 if ready and not node["spec"].get("taints") else 1)'
}

default_token_ready() {
  api_get /api/v1/namespaces/default/serviceaccounts/default | grep -q '"secrets"'
}

kubelet_python() {
  local py
  for py in "${MLOPS_K8S_PYTHON:-}" "$REPO/.venv/bin/python" python3; do
    [ -n "$py" ] || continue
    if "$py" -c "import kubernetes" 2>/dev/null; then echo "$py"; return 0; fi
  done
  die "no Python with the 'kubernetes' package for the simulated kubelet; hint: 'make venv' or set MLOPS_K8S_PYTHON"
}

cmd_start() {
  DIR="$(mkdir -p "$1" && cd "$1" && pwd)"
  NODE_NAME="${MLOPS_K8S_NODE_NAME:-sim-node-0}"
  local timeout="${MLOPS_K8S_START_TIMEOUT:-120}" t0=$SECONDS py
  ensure_packages "${RUN_PACKAGES[@]}"
  py="$(kubelet_python)"
  if [ -f "$DIR/apiserver.pid" ] && alive apiserver; then die "a control plane already runs in $DIR; hint: '$0 stop $DIR' first"; fi
  local etcd_port etcd_peer api_port cm_port sched_port
  { read -r etcd_port; read -r etcd_peer; read -r api_port; read -r cm_port; read -r sched_port; } < <(free_ports 5)
  SERVER="https://127.0.0.1:$api_port"
  rm -rf "$DIR/pki" "$DIR/etcd"
  make_certs "$DIR"
  kubeconfig "$DIR/kubeconfig" admin
  kubeconfig "$DIR/controller-manager.kubeconfig" controller-manager
  kubeconfig "$DIR/scheduler.kubeconfig" scheduler
  kubeconfig "$DIR/node.kubeconfig" node
  local pki="$DIR/pki"

  spawn etcd etcd --name mlops-test --data-dir "$DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "mlops-test=http://127.0.0.1:$etcd_peer" --initial-cluster-state new \
    --quota-backend-bytes $((512 * 1024 * 1024)) --snapshot-count 10000 --log-level warn
  wait_for etcd "$timeout" curl -fsS --max-time 2 "http://127.0.0.1:$etcd_port/health"
  log "etcd ready after $((SECONDS - t0)) s"

  spawn apiserver "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" --insecure-port 0 \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" --client-ca-file "$pki/ca.crt" \
    --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$pki/ca.crt" --kubelet-preferred-address-types InternalIP \
    --requestheader-client-ca-file "$pki/ca.crt" --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$pki/front-proxy-client.crt" --proxy-client-key-file "$pki/front-proxy-client.key" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --api-audiences https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range 10.0.0.0/24 --service-node-port-range 30000-32767 \
    --allow-privileged=true --profiling=false --event-ttl 1h --endpoint-reconciler-type lease \
    --cert-dir "$pki"
  wait_for apiserver "$timeout" api_get /readyz
  log "kube-apiserver ready after $((SECONDS - t0)) s"

  spawn controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig "$DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$DIR/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$cm_port" --port 0 --cert-dir "$DIR/pki/cm" \
    --leader-elect=false --use-service-account-credentials \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
    --service-cluster-ip-range 10.0.0.0/24 --profiling=false \
    --node-monitor-grace-period 40s --pod-eviction-timeout 5m
  spawn scheduler "$BIN/kube-scheduler" \
    --kubeconfig "$DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig "$DIR/scheduler.kubeconfig" \
    --authorization-kubeconfig "$DIR/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$sched_port" --port 0 --cert-dir "$DIR/pki/sched" \
    --leader-elect=false --profiling=false
  spawn kubelet "$py" "$HERE/k8s/sim_kubelet.py" --kubeconfig "$DIR/node.kubeconfig" --node-name "$NODE_NAME"
  wait_for kubelet "$timeout" node_ready
  log "node $NODE_NAME ready after $((SECONDS - t0)) s"
  local c
  for c in controller-manager scheduler; do alive "$c" || fail_start "$c" "exited during start-up"; done
  # The controller-manager's token controller must have made the default service account's token, or the
  # ServiceAccount admission plugin rejects the first pods.
  wait_for controller-manager "$timeout" default_token_ready
  cat >"$DIR/env" <<ENV
KUBECONFIG=$DIR/kubeconfig
MLOPS_K8S_SERVER=$SERVER
MLOPS_K8S_NODE_NAME=$NODE_NAME
MLOPS_K8S_ETCD=http://127.0.0.1:$etcd_port
MLOPS_K8S_KUBECTL=$BIN/kubectl
ENV
  # A watchdog stops everything when the process named by MLOPS_K8S_WATCH_PID dies (a killed test run).
  if [ -n "${MLOPS_K8S_WATCH_PID:-}" ]; then
    spawn watchdog bash -c "while kill -0 $MLOPS_K8S_WATCH_PID 2>/dev/null; do sleep 2; done; exec bash '$HERE/k8s-control-plane.sh' stop '$DIR'"
  fi
  log "control plane v$K8S_VERSION up at $SERVER in $((SECONDS - t0)) s; kubeconfig $DIR/kubeconfig"
}

COMPONENTS=(kubelet scheduler controller-manager apiserver etcd)

stop_group() {  # components stopped together: TERM, then KILL after MLOPS_K8S_STOP_TIMEOUT seconds
  local c pid pids=() deadline=$((SECONDS + ${MLOPS_K8S_STOP_TIMEOUT:-15}))
  for c in "$@"; do
    pid="$(cat "$DIR/$c.pid" 2>/dev/null)" || continue
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
  done
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null; do
      if [ $SECONDS -ge $deadline ]; then kill -KILL "$pid" 2>/dev/null || true; sleep 0.1; break; fi
      sleep 0.05
    done
  done
  for c in "$@"; do rm -f "$DIR/$c.pid"; done
}

cmd_stop() {
  DIR="$(cd "$1" 2>/dev/null && pwd)" || return 0
  local pid
  # The clients first, then the apiserver, then its storage.
  stop_group kubelet scheduler controller-manager
  stop_group apiserver
  stop_group etcd
  # The watchdog last: it may be the caller of this very stop.
  pid="$(cat "$DIR/watchdog.pid" 2>/dev/null)" || pid=""
  rm -f "$DIR/watchdog.pid"
  if [ -n "$pid" ] && [ "$pid" != "$PPID" ] && [ "$pid" != "$$" ]; then kill -TERM "$pid" 2>/dev/null || true; fi
  return 0
}

cmd_status() {
  DIR="$(cd "$1" && pwd)"
  local c down=0 pid
  for c in "${COMPONENTS[@]}"; do
    pid="$(cat "$DIR/$c.pid" 2>/dev/null || true)"
    if alive "$c"; then echo "$c running (pid $pid)"; else echo "$c stopped"; down=1; fi
  done
  [ -f "$DIR/env" ] && sed -n 's/^MLOPS_K8S_SERVER=/server /p' "$DIR/env"
  return $down
}

cmd_env() {
  DIR="$(cd "$1" && pwd)"
  [ -f "$DIR/env" ] || die "no control plane was started in $DIR; hint: '$0 start $DIR'"
  sed 's/^/export /' "$DIR/env"
}

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

main() {
  [ $# -ge 1 ] || usage
  local cmd="$1"; shift
  case "$cmd" in
    build) cmd_build ;;
    start) [ $# -eq 1 ] || usage; cmd_build; cmd_start "$1" ;;
    stop) [ $# -eq 1 ] || usage; cmd_stop "$1" ;;
    status) [ $# -eq 1 ] || usage; cmd_status "$1" ;;
    env) [ $# -eq 1 ] || usage; cmd_env "$1" ;;
    *) usage ;;
  esac
}

main "$@"
