#!/usr/bin/env bash
# The deploy files work with the programs: perqd reads deploy/perqd.example.json
# (the command line overriding listen and data_dir, as the container does), the
# systemd unit passes `systemd-analyze verify` where systemd is installed, and
# the Containerfile builds the way the README says (install-deps, make, install).
. "$(dirname "$0")/lib.sh"
D=$PERQ_ROOT/deploy

step "perqd --config deploy/perqd.example.json"
jq -e '(.listen | type == "string") and (.data_dir | type == "string") and (.workers | type == "number")
       and (.max_body | type == "number") and (.kill_grace | type == "number")' "$D/perqd.example.json" >/dev/null \
  || fail "perqd.example.json lacks listen, data_dir, workers, max_body or kill_grace"
start_perqd --config "$D/perqd.example.json"
get /readyz; assert_status 200
upload_model "$STORIES"
stop_perqd

step "perqd.service"
grep -q '^ExecStart=/usr/local/bin/perqd --config /etc/perq/perqd.json' "$D/perqd.service" || fail "unit does not start perqd with its config"
grep -q '^StateDirectory=perq' "$D/perqd.service" || fail "unit has no StateDirectory"
jq -e '.data_dir == "/var/lib/perq"' "$D/perqd.example.json" >/dev/null || fail "example config's data_dir is not the unit's StateDirectory"
if command -v systemd-analyze >/dev/null; then
  sed 's|^ExecStart=/usr/local/bin/perqd|ExecStart=/bin/true|' "$D/perqd.service" >"$TMP/perqd.service"
  systemd-analyze verify "$TMP/perqd.service" >"$TMP/verify.log" 2>&1 || { cat "$TMP/verify.log" >&2; fail "systemd-analyze verify"; }
  [ ! -s "$TMP/verify.log" ] || { cat "$TMP/verify.log" >&2; fail "systemd-analyze verify has warnings"; }
else
  echo "  (no systemd-analyze here: unit syntax not verified)"
fi

step "Containerfile"
grep -q '^FROM docker.io/library/debian:12' "$D/Containerfile" || fail "Containerfile is not based on Debian 12"
grep -q 'deploy/install-deps.sh' "$D/Containerfile" && grep -q 'make install' "$D/Containerfile" \
  || fail "Containerfile does not run install-deps.sh and make install"
echo "deploy_files: ok"
