#!/usr/bin/env bash
# Installs the Debian packages the real-component tests use, when run as root and missing.
# Without root the tests that need them skip with a reason saying what to install.
set -euo pipefail
want=($(grep -v "^#" "$(dirname "$0")/system-packages.txt" | tr "\n" " " || true))
missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "not root: cannot install ${missing[*]}; tests that need them will skip" >&2; exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# On a shared machine another apt/dpkg may be running (another checkout's `make test`, an admin):
# wait for its locks (up to 15 min) instead of failing at once with "Could not get lock".
wait_locks=(-o DPkg::Lock::Timeout=900)
apt-get "${wait_locks[@]}" update -qq
apt-get "${wait_locks[@]}" install -y -qq --no-install-recommends "${missing[@]}"
