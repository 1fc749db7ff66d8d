#!/bin/sh
# deps.sh: installs the Debian packages that building and testing pop3d
# need, when some are missing.  Shared by `make check`, `make demo` and
# .ci/run.  Does nothing unless run as root; never upgrades anything.
set -eu

PKGS="gcc make libc6-dev libpam0g-dev libpam-modules libpam-runtime \
libcrypt-dev liblockfile-dev liblockfile-bin libmd-dev libpam-wrapper \
socat python3 curl passwd login util-linux xinetd"

if [ "$(id -u)" != 0 ]; then
	exit 0
fi
missing=
for p in $PKGS; do
	if ! dpkg -s "$p" >/dev/null 2>&1; then
		missing="$missing $p"
	fi
done
# /usr/bin/python3 runs the tests: it must be Debian's, not a pyenv shim.
if [ ! -x /usr/bin/python3 ]; then
	missing="$missing python3"
fi
[ -z "$missing" ] && exit 0

echo "deps.sh: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing
