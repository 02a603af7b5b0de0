#!/usr/bin/env bash
# Installs everything perq's build, tests and programs need: Debian packages,
# then the npm packages of the test client that loads exported GGUF files.
# Idempotent: what is present is skipped; apt is not touched when nothing is missing.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PACKAGES=(
  build-essential pkg-config ca-certificates
  libmicrohttpd-dev libjansson-dev libuv1-dev
  libopenblas-dev liblapacke-dev libsqlite3-dev
  libssl-dev libpcre2-dev libutf8proc-dev
  libcmocka-dev clang libclang-rt-14-dev libomp-14-dev
  curl jq python3 chromium
)
# node-llama-cpp needs Node.js 20 or later: machines that have it (from any
# source) keep theirs; others get Debian's nodejs and npm.
command -v node >/dev/null && command -v npm >/dev/null || PACKAGES+=(nodejs npm)

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

install_debian_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all ${#PACKAGES[@]} Debian packages present"
    return
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# The GGUF test client: node-llama-cpp with its prebuilt CPU build of llama.cpp,
# pinned in tests/gguf-client/package-lock.json. Its install scripts are not run,
# so nothing is downloaded or built behind npm's back.
install_gguf_client() {
  local client="$ROOT/tests/gguf-client"
  [ -d "$client/node_modules/node-llama-cpp" ] && { echo "install-deps: gguf client present"; return; }
  echo "install-deps: installing the gguf test client (npm)"
  (cd "$client" && { npm ci --omit=optional --ignore-scripts --no-audit --no-fund ||
     npm install --omit=optional --ignore-scripts --no-save --no-audit --no-fund; })
}

install_debian_packages
install_gguf_client
