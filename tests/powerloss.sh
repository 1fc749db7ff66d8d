#!/bin/sh
# tests/powerloss.sh: runs the power-cut replay with 4 KiB chunks
# (tests/powerloss-4k: many records from small mailboxes) and with the
# real ones (tests/powerloss), passing on its arguments (--long for the
# long form), and ends with the sum of both: "powerloss: N crash states
# checked, N recovered, N lost".  Exits 1 if either run failed.
cd "$(dirname "$0")/.." || exit 2
out=$(mktemp) || exit 2
trap 'rm -f "$out"' EXIT
status=0
for b in tests/powerloss-4k tests/powerloss; do
	if [ ! -x "$b" ]; then
		echo "FAIL powerloss: $b is not built (make $b)"
		exit 1
	fi
	"$b" "$@" > "$out"
	rc=$?
	grep -v '^powerloss:' "$out"
	grep '^powerloss:' "$out" | sed 's/^/INFO /'
	grep -q '^powerloss:' "$out" || rc=1
	[ "$rc" = 0 ] || status=1
	grep '^powerloss:' "$out" >> "$out.sum"
done
awk '{ s += $2; r += $6; l += $8 }
    END { printf "powerloss: %d crash states checked, %d recovered, %d lost\n",
    s, r, l }' "$out.sum"
rm -f "$out.sum"
exit "$status"
