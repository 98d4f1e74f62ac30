#!/usr/bin/env bash
# Installs the Debian packages named on the command line that are not installed yet,
# unattended, as root; used by test.sh, quickstart.sh and benches/e2e.sh.
#
#   scripts/install-packages.sh PACKAGE...
#
# Waits (up to $APT_LOCK_TIMEOUT seconds, default 900) for another apt or dpkg
# process to release its locks instead of failing, as happens on a fresh machine
# that runs its own updates at boot. Postfix's package would otherwise configure and
# start a system MTA on every interface: "No configuration" is chosen, and package
# scripts are kept from starting any service while we install (policy-rc.d, removed
# afterwards, also on failure).
set -euo pipefail

missing=()
for pkg in "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -gt 0 ] || exit 0
if [ "$(id -u)" != 0 ]; then
  echo "missing Debian packages: ${missing[*]} (install them, or run as root)" >&2
  exit 1
fi
echo "== installing ${missing[*]}"
timeout="${APT_LOCK_TIMEOUT:-900}"
lock=(-o "DPkg::Lock::Timeout=$timeout")

# apt-get update takes the lists lock, which DPkg::Lock::Timeout does not cover:
# it is tried again until the same deadline.
update() {
  local deadline=$((SECONDS + timeout))
  until apt-get "${lock[@]}" update -q; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "apt-get update still failing after ${timeout}s" >&2
      return 1
    fi
    echo "apt-get update failed (another apt process holds its lock?); trying again in 5 s" >&2
    sleep 5
  done
}

echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
update
DEBIAN_FRONTEND=noninteractive apt-get "${lock[@]}" install -y -q --no-install-recommends "${missing[@]}"
