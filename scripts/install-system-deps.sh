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
# Another run (a second checkout, a build) may hold the dpkg lock: wait for it instead of failing.
lock=(-o DPkg::Lock::Timeout=900)
apt-get "${lock[@]}" update -qq
apt-get "${lock[@]}" install -y -qq --no-install-recommends "${missing[@]}"
