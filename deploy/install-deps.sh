#!/usr/bin/env bash
# Installs every Debian package that perq's build, tests and programs need.
# Idempotent: packages already present are skipped, apt is not touched when nothing is missing.
set -euo pipefail

PACKAGES=(
  build-essential pkg-config ca-certificates
  libmicrohttpd-dev libjansson-dev libuv1-dev
  libopenblas-dev liblapacke-dev libsqlite3-dev
  libssl-dev libpcre2-dev libutf8proc-dev
  libcmocka-dev clang libclang-rt-14-dev libomp-14-dev
  curl jq python3
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
