#!/bin/sh
# deps.sh: installs the Debian packages that building and testing pop3d
# need, when some are missing.  Shared by `make check`, `make demo` and
# .ci/run.  Does nothing unless run as root; never upgrades anything.
set -eu

PKGS="gcc make procmail libc6-dev libpam0g-dev libpam-modules libpam-runtime \
libcrypt-dev liblockfile-dev liblockfile-bin libmd-dev libxxhash-dev libpam-wrapper \
socat python3 curl passwd login util-linux xinetd \
fetchmail mpop getmail6 mandoc systemd dpkg libevent-2.1-7 libbsd0 libwrap0 \
valgrind cppcheck clang-tidy"

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
# openbsd-inetd conflicts with xinetd (both provide inet-superserver): it
# is only downloaded, and tests/suites/deploy.py runs its inetd from the
# unpacked package (its libraries are in PKGS above).
inetd_dir=/var/cache/pop3d-tests
fetch_inetd() {
	ls "$inetd_dir"/openbsd-inetd_*.deb >/dev/null 2>&1 && return 0
	mkdir -p "$inetd_dir" && chmod 0755 "$inetd_dir" &&
	(cd "$inetd_dir" && apt-get download -qq openbsd-inetd 2>/dev/null) ||
	{ apt-get update -qq && (cd "$inetd_dir" &&
		apt-get download -qq openbsd-inetd 2>/dev/null); } ||
	echo "deps.sh: could not download openbsd-inetd" >&2
}
if [ -z "$missing" ]; then
	fetch_inetd
	exit 0
fi

echo "deps.sh: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing
fetch_inetd
