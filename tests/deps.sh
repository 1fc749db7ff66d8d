#!/bin/sh
# deps.sh: installs the Debian packages that building and testing pop3d
# need, when some are missing.  Shared by `make check`, `make demo` and
# .ci/run.  Does nothing unless run as root; never upgrades anything.
set -eu

PKGS="gcc make procmail libc6-dev libpam0g-dev libpam-modules libpam-runtime \
libcrypt-dev liblockfile-dev liblockfile-bin libmd-dev libxxhash-dev libpam-wrapper \
socat python3 curl openssl passwd login util-linux xinetd stunnel4 \
fetchmail mpop getmail6 mandoc systemd dpkg libevent-2.1-7 libbsd0 libwrap0 \
valgrind cppcheck clang-tidy haproxy nginx libnginx-mod-mail fail2ban \
debhelper dpkg-dev lintian blhc adduser \
libdb5.3 libgdbm6 libgnutls30 libgsasl18 libkyotocabinet16v5 libldap-2.5-0 \
libmariadb3 libnsl2 libpq5 libunistring2 libunwind8"

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
# Packages that are only downloaded, never installed; the suites run them
# from the unpacked .deb (their shared libraries are in PKGS above):
# - openbsd-inetd conflicts with xinetd (both provide inet-superserver):
#   tests/suites/deploy.py runs its inetd;
# - popa3d, mailutils-pop3d (with libmailutils9 and libmu-dbm9, which are
#   unpacked along) and dovecot-core + dovecot-pop3d: tests/suites/migrate.py
#   compares their UIDL listings with pop3d's.  Debian's POP3 servers
#   conflict with each other, and mailutils-pop3d owns /usr/sbin/pop3d,
#   which pop3d's own package installs.
fetch_dir=/var/cache/pop3d-tests
FETCH="openbsd-inetd popa3d mailutils-pop3d libmailutils9 libmu-dbm9 \
dovecot-core dovecot-pop3d"
fetch() {
	want=
	for p in $FETCH; do
		ls "$fetch_dir/${p}_"*.deb >/dev/null 2>&1 || want="$want $p"
	done
	[ -z "$want" ] && return 0
	mkdir -p "$fetch_dir" && chmod 0755 "$fetch_dir" || return 0
	# shellcheck disable=SC2086
	(cd "$fetch_dir" && apt-get download -qq $want 2>/dev/null) ||
	{ apt-get update -qq && (cd "$fetch_dir" &&
		apt-get download -qq $want 2>/dev/null); } ||
	echo "deps.sh: could not download:$want" >&2
}
if [ -z "$missing" ]; then
	fetch
	exit 0
fi

echo "deps.sh: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing
fetch
