# rootcheck.py: root mode refuses to start, with a clear log line and a
# [SYS/TEMP] reply, when its pre-auth user or its empty chroot directory is
# missing, or with TLS configured the TLS process's user (with
# --tls-implicit without any reply: the client expects TLS).  Each is hidden in a private mount namespace (unshare -m), so
# the machine's real user and directory are never touched.
import os
import subprocess
import tempfile


SYSTEMP = "-ERR [SYS/TEMP] Temporary server failure, try again later.\r\n"


def run_hidden(h, name, hide, expect_log, args="", expect_out=SYSTEMP):
    if not h.wanted(name):
        return
    pop3d = h.POP3D
    with tempfile.TemporaryDirectory() as tmp:
        script = hide(tmp) + ' && exec "$0" --debug --mailbox /nonexistent/%u ' + args
        try:
            p = subprocess.run(["unshare", "-m", "sh", "-c", script, pop3d],
                               input=b"QUIT\r\n", capture_output=True,
                               timeout=20)
        except subprocess.TimeoutExpired:
            h.report(name, False, "timed out")
            return
    out, err = p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
    ok = p.returncode == 1 and expect_log in err and out == expect_out
    h.report(name, ok, "rc=%d out=%r err=%r" % (p.returncode, out, err[-300:]))


def hide_dir(tmp):
    # an empty tmpfs over /var/lib/pop3d: the chroot directory is gone
    return "mount -t tmpfs none /var/lib/pop3d"


def hide_user(tmp, name="pop3d"):
    # /etc/passwd and /etc/group without the entries of name
    for f in ("passwd", "group"):
        with open("/etc/" + f) as src, open(os.path.join(tmp, f), "w") as dst:
            dst.writelines(l for l in src if not l.startswith(name + ":"))
    return ("mount --bind %s/passwd /etc/passwd && "
            "mount --bind %s/group /etc/group" % (tmp, tmp))


def hide_tls_user(tmp):
    return hide_user(tmp, "pop3d-tls")


# the files are read only when the TLS process starts: never, here
TLS = "--tls-cert /nonexistent/cert.pem --tls-key /nonexistent/key.pem"


def tests(h):
    if not h.ROOT:
        return
    run_hidden(h, "root/refuses-without-empty-dir", hide_dir,
               "directory /var/lib/pop3d/empty is missing or unsafe")
    run_hidden(h, "root/refuses-without-pop3d-user", hide_user,
               "user pop3d is missing")
    run_hidden(h, "root/refuses-without-pop3d-tls-user", hide_tls_user,
               "user pop3d-tls is missing", TLS)
    run_hidden(h, "root/refuses-without-pop3d-tls-user-implicit",
               hide_tls_user, "user pop3d-tls is missing",
               TLS + " --tls-implicit", "")
