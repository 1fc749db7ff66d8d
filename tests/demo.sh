#!/bin/sh
# demo.sh: serves the seed's three messages for the password-file user
# `safeer` (password `fake_Password`) on 127.0.0.1:1110 through socat,
# one pop3d per connection, until interrupted.  `make demo` runs it.
#
# As root it runs pop3d in root mode, as a real installation does:
# privilege separation with the `pop3d` user and /var/lib/pop3d/empty
# (created when missing), the virtual user running as the system user
# `pop3demo` (created when missing), which owns the demo's mailbox copy.
# As any other user it runs pop3d in user mode, as that user.
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
port=${PORT:-1110}
[ -x "$top/pop3d" ] || { echo "demo: build pop3d first (make)" >&2; exit 1; }

dir=$(mktemp -d /tmp/pop3d-demo.XXXXXX)
chmod 0755 "$dir"
cleanup() { rm -rf "$dir"; }
trap cleanup EXIT
trap 'exit 0' INT TERM

mkdir "$dir/mail" "$dir/state"
cp "$top/tests/fixtures/seed.mbox" "$dir/mail/safeer"
hash=$(/usr/bin/python3 -W ignore -c \
	'import crypt; print(crypt.crypt("fake_Password", crypt.METHOD_SHA512))' \
	2>/dev/null || openssl passwd -6 fake_Password)
printf '# pop3d demo\nsafeer:%s\n' "$hash" > "$dir/passwd"
chmod 0600 "$dir/passwd"
cp "$top/pop3d" "$dir/pop3d"
chmod 0755 "$dir/pop3d"

set -- "$dir/pop3d" --passwd-file "$dir/passwd" --mailbox "$dir/mail/%u" \
	--state-dir "$dir/state"
if [ "$(id -u)" = 0 ]; then
	mode="root mode: privilege separation, virtual user runs as pop3demo"
	for u in pop3d pop3demo; do
		getent passwd $u >/dev/null || useradd --system --no-create-home \
			--home-dir /nonexistent --shell /usr/sbin/nologin $u
	done
	install -d -o root -g root -m 0755 /var/lib/pop3d
	install -d -o root -g root -m 0555 /var/lib/pop3d/empty
	chown pop3demo: "$dir/mail/safeer"
	chown pop3demo: "$dir/mail"
	chmod 0700 "$dir/mail"
	set -- "$@" --virtual-user pop3demo
else
	mode="user mode: runs as $(id -un)"
	chmod 0700 "$dir/mail" "$dir/state"
fi
exec_cmd="$*"

cat <<MSG
pop3d demo ($mode)
  maildrop: a copy of tests/fixtures/seed.mbox in $dir/mail/safeer
  connect:  telnet 127.0.0.1 $port      (or: nc -C 127.0.0.1 $port)
  then type the seed session:
    USER safeer
    PASS fake_Password
    STAT
    LIST
    RETR 1
    DELE 1
    LIST
    RSET
    LIST
    QUIT
  Ctrl-C stops the demo; the copy is removed, the fixture stays as it was.
MSG
socat "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork" "EXEC:$exec_cmd" &
pid=$!
trap 'kill $pid 2>/dev/null; exit 0' INT TERM
wait $pid
