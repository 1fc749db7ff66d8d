# tests/suites/deploy.py: what an administrator installs, tested with the
# real programs: the shipped xinetd.d/pop3d and xinetd.d/pop3s (xinetd),
# the inetd.conf line of the man page (openbsd-inetd), the systemd units
# for port 110 and for port 995 (systemd-analyze verify; sessions through
# systemd-socket-activate running the unit's ExecStart), the man page
# (mandoc -Tlint), a staged `make install`, and what pop3d sends to syslog
# (a private /dev/log in a mount namespace).  The pop3s files run an
# implicit-TLS session with a throwaway certificate (tls_clients.py).
import glob
import importlib.util
import os
import poplib
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("suite_clients_helpers",
                                               os.path.join(HERE, "clients.py"))
C = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(C)
Fail = C.Fail
_spec = importlib.util.spec_from_file_location("suite_tls_clients_helpers",
                                               os.path.join(HERE, "tls_clients.py"))
T = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(T)

# Where tests/deps.sh keeps the openbsd-inetd package: it conflicts with
# xinetd (both provide inet-superserver), so it is not installed; the test
# runs its inetd from the unpacked .deb.
INETD_DEB_DIR = "/var/cache/pop3d-tests"


def read(h, *path):
    with open(os.path.join(h.TOP, *path), encoding="utf-8") as f:
        return f.read()


def seed_case(h):
    """A case directory with the seed maildrop for $VUSER."""
    case = h.ENV.new_case("root" if h.ROOT else "user")
    p = os.path.join(case, "mail", h.ENV.vuser)
    shutil.copy(os.path.join(h.FIX, "seed.mbox"), p)
    if h.ROOT:
        os.chown(p, h.ENV.u1.pw_uid, h.ENV.u1.pw_gid)
    return case, p


def seed_session(h, port, mbox, ca=None):
    """poplib: STAT, RETR 2, DELE 1, QUIT; the maildrop loses message 1.
    With ca (a CA file), over implicit TLS, the certificate verified."""
    if ca:
        c = poplib.POP3_SSL("127.0.0.1", port, timeout=h.TIMEOUT,
                            context=ssl.create_default_context(cafile=ca))
    else:
        c = poplib.POP3("127.0.0.1", port, timeout=h.TIMEOUT)
    if c.getwelcome() != b"+OK pop3d ready.":
        raise Fail("greeting %r" % c.getwelcome())
    c.user(h.ENV.vuser)
    c.pass_(h.ENV.vpw)
    if c.stat() != (3, 2086):
        raise Fail("STAT %r" % (c.stat(),))
    with open(os.path.join(h.FIX, "seed.mbox"), "rb") as f:
        want = h.model_messages(f.read())[1]
    if c.retr(2)[1] != want:
        raise Fail("RETR 2 differs")
    c.dele(1)
    c.quit()
    C.expect_mbox(h, mbox, h.read_fixtures(["seed-23.mbox"]), "after DELE 1 and QUIT")


def run_case(h, name, fn, diag=True):
    if not h.wanted(name):
        return
    try:
        fn(h)
        h.report(name, True)
    except (Fail, h.Fail, poplib.error_proto, OSError, subprocess.SubprocessError) as e:
        h.report(name, False, "%s: %s" % (type(e).__name__, e),
                 h.diag_for(h.ENV.work, name) if diag else None)


# ------------------------------------------------------------------ xinetd

def xinetd_file(h):
    """The shipped file: disabled, port 110, limits, a server_args example."""
    conf = read(h, "xinetd.d", "pop3d")
    need = [r"(?m)^\s*disable\s*=\s*yes\s*$", r"(?m)^\s*port\s*=\s*110\s*$",
            r"(?m)^\s*socket_type\s*=\s*stream\s*$", r"(?m)^\s*wait\s*=\s*no\s*$",
            r"(?m)^\s*user\s*=\s*root\s*$", r"(?m)^\s*instances\s*=\s*\d+\s*$",
            r"(?m)^\s*per_source\s*=\s*\d+\s*$",
            r"(?m)^#\s*server_args\s*=\s*--mailbox /var/mail/%u",
            r"(?m)^\s*server\s*=\s*/usr/local/sbin/pop3d\s*$"]
    need.append(r"(?m)^#\s*server_args\s*=\s*--tls-cert \S+ --tls-key \S+\s*$")
    missing = [p for p in need if not re.search(p, conf)]
    if missing:
        raise Fail("xinetd.d/pop3d lacks %s" % missing)


def xinetd_pop3s_file(h):
    """The shipped pop3s file: the pop3 file's settings on port 995, with
    the implicit-TLS options and admin-style certificate paths."""
    conf = read(h, "xinetd.d", "pop3s")
    need = [r"(?m)^service pop3s$", r"(?m)^\s*disable\s*=\s*yes\s*$",
            r"(?m)^\s*port\s*=\s*995\s*$",
            r"(?m)^\s*socket_type\s*=\s*stream\s*$", r"(?m)^\s*wait\s*=\s*no\s*$",
            r"(?m)^\s*user\s*=\s*root\s*$", r"(?m)^\s*instances\s*=\s*\d+\s*$",
            r"(?m)^\s*per_source\s*=\s*\d+\s*$",
            r"(?m)^\s+server_args\s*=\s*--tls-implicit --tls-cert /etc/\S+ "
            r"--tls-key /etc/\S+\s*$",
            r"(?m)^\s*server\s*=\s*/usr/local/sbin/pop3d\s*$"]
    missing = [p for p in need if not re.search(p, conf)]
    if missing:
        raise Fail("xinetd.d/pop3s lacks %s" % missing)


def xinetd_session(h):
    if not h.ROOT:
        raise Fail("needs root (xinetd runs pop3d as root)")
    if not shutil.which("xinetd"):
        raise Fail("xinetd is not installed")
    case, mbox = seed_case(h)
    lau = C.start_xinetd(h, case, C.session_args(h, case, "root"))
    try:
        seed_session(h, lau.port, mbox)
    finally:
        lau.stop()
    san = lau.sanitizer_reports()
    if san:
        raise Fail("sanitizer report: " + "; ".join(san))


def xinetd_pop3s_session(h):
    """A session over implicit TLS through the shipped xinetd.d/pop3s."""
    if not h.ROOT:
        raise Fail("needs root (xinetd runs pop3d as root)")
    if not shutil.which("xinetd"):
        raise Fail("xinetd is not installed")
    case, mbox = seed_case(h)
    pki = T.make_pki(h, case)
    lau = T.start_pop3s_xinetd(h, case, pki, C.session_args(h, case, "root"))
    try:
        seed_session(h, lau.port, mbox, pki["ca"])
    finally:
        lau.stop()
    san = lau.sanitizer_reports()
    if san:
        raise Fail("sanitizer report: " + "; ".join(san))


# ------------------------------------------------------------------- inetd

INETD_RE = re.compile(r"(?m)^\s*pop3\s+stream\s+tcp\s+nowait\s+root\s+(/\S+/pop3d)\s+pop3d(.*)$")


def inetd_line(h):
    """The inetd.conf line of pop3d.8's EXAMPLES, which README must give
    too; returns (server path, extra arguments)."""
    m = INETD_RE.search(read(h, "pop3d.8"))
    if not m:
        raise Fail("pop3d.8 has no inetd.conf line")
    if not INETD_RE.search(read(h, "README.md")):
        raise Fail("README.md has no inetd.conf line")
    return m.group(1), shlex.split(m.group(2))


def find_inetd(case):
    debs = sorted(glob.glob(os.path.join(INETD_DEB_DIR, "openbsd-inetd_*.deb")))
    if not debs:
        raise Fail("no openbsd-inetd package in %s (tests/deps.sh fetches it)"
                   % INETD_DEB_DIR)
    root = os.path.join(case, "openbsd-inetd")
    subprocess.run(["dpkg-deb", "-x", debs[-1], root], check=True, timeout=30)
    return os.path.join(root, "usr", "sbin", "inetd")


def inetd_session(h):
    if not h.ROOT:
        raise Fail("needs root (the line runs pop3d as root)")
    path, extra = inetd_line(h)
    if path != "/usr/local/sbin/pop3d":
        raise Fail("the inetd.conf line runs %s" % path)
    case, mbox = seed_case(h)
    inetd = find_inetd(case)
    port = h.free_port()
    # The documented line with the test's address, binary and options:
    # openbsd-inetd takes ADDRESS:PORT in the service field.
    cfile = os.path.join(case, "inetd.conf")
    with open(cfile, "w") as f:
        f.write("127.0.0.1:%d\tstream\ttcp\tnowait\troot\t%s\tpop3d %s\n"
                % (port, h.ENV.pop3d, " ".join(extra + C.session_args(h, case, "root"))))
    logpath = os.path.join(case, "stderr-inetd")
    with open(logpath, "wb") as log:
        # -d: debug output, in the foreground.  -E keeps the environment
        # (the sanitizer's log_path).
        proc = subprocess.Popen([inetd, "-d", "-E", cfile], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log, env=C.launcher_env(h, case),
                                start_new_session=True)
    lau = C.Launcher(h, case, proc, port, logpath, "inetd")
    try:
        C.wait_port(port, proc, logpath, h.TIMEOUT)
        seed_session(h, port, mbox)
    finally:
        lau.stop()
    with open(logpath, "rb") as f:
        log = f.read()
    if b"execv " + h.ENV.pop3d.encode() not in log:
        raise Fail("inetd's log shows no pop3d started: %r" % log[-200:])
    san = lau.sanitizer_reports()
    if san:
        raise Fail("sanitizer report: " + "; ".join(san))


# ----------------------------------------------------------------- systemd

def unit(h, name):
    """(text, {key: [values]}) of systemd/NAME, comments dropped."""
    text = read(h, "systemd", name)
    keys = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;[":
            continue
        k, _, v = line.partition("=")
        keys.setdefault(k.strip(), []).append(v.strip())
    return text, keys


def unit_settings(h):
    for name, port in (("pop3d", "110"), ("pop3s", "995")):
        unit_pair_settings(h, name, port)


def unit_pair_settings(h, name, port):
    _, sock = unit(h, name + ".socket")
    _, svc = unit(h, name + "@.service")
    want = [(sock, "ListenStream", port), (sock, "Accept", "yes"),
            (svc, "StandardInput", "socket"), (svc, "StandardError", "journal"),
            (svc, "NoNewPrivileges", "no"), (svc, "ProtectSystem", "strict"),
            (svc, "PrivateTmp", "yes")]
    bad = ["%s=%s" % (k, v) for d, k, v in want if d.get(k, [None])[-1] != v]
    rw = " ".join(svc.get("ReadWritePaths", [])).split()
    bad += ["ReadWritePaths lacks %s" % p for p in ("/var/mail", "/var/lib/pop3d")
            if p not in rw and "-" + p not in rw]
    for k in ("User", "DynamicUser", "RestrictSUIDSGID", "CapabilityBoundingSet",
              "SystemCallFilter"):
        if k in svc and svc[k][-1] not in ("", "no", "root"):
            bad.append("%s=%s takes away what the privilege flow needs" % (k, svc[k][-1]))
    if bad:
        raise Fail("%s: %s" % (name, "; ".join(bad)))


def exec_start(h, name="pop3d@.service"):
    """The service's ExecStart command line as argv (systemd's %% is %),
    the installed path replaced by the binary under test."""
    _, svc = unit(h, name)
    lines = [v for v in svc.get("ExecStart", []) if v]
    if not lines:
        raise Fail("%s has no ExecStart" % name)
    argv = shlex.split(lines[-1].lstrip("-@:+!").replace("%%", "\0"))
    if any("%" in a for a in argv):
        raise Fail("ExecStart uses a specifier the test cannot expand: %s" % lines[-1])
    argv = [a.replace("\0", "%") for a in argv]
    if argv[0] != "/usr/local/sbin/pop3d":
        raise Fail("ExecStart runs %s" % argv[0])
    return [h.ENV.pop3d] + argv[1:]


def systemd_verify(h):
    if not shutil.which("systemd-analyze"):
        raise Fail("systemd-analyze is not installed (package systemd)")
    d = tempfile.mkdtemp(prefix="units.", dir=h.ENV.work)
    for name in ("pop3d.socket", "pop3d@.service", "pop3s.socket", "pop3s@.service"):
        text = read(h, "systemd", name).replace("/usr/local/sbin/pop3d", h.ENV.pop3d)
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    # An instance name as the socket makes them; verify loads the socket's
    # service too.  Unknown keys and bad values are only warnings: any
    # output fails.
    for name in ("pop3d", "pop3s"):
        p = subprocess.run(["systemd-analyze", "verify", "--man=no",
                            os.path.join(d, name + ".socket"),
                            os.path.join(d, name + "@0.service")],
                           capture_output=True, timeout=60, cwd=d)
        out = (p.stdout + p.stderr).decode("utf-8", "replace").strip()
        if p.returncode or out:
            raise Fail("systemd-analyze verify %s: exit %d: %s"
                       % (name, p.returncode, out[:300]))


def systemd_session(h):
    if not shutil.which("systemd-socket-activate"):
        raise Fail("systemd-socket-activate is not installed (package systemd)")
    argv = exec_start(h)
    mode = "root" if h.ROOT else "user"
    case, mbox = seed_case(h)
    argv += C.session_args(h, case, mode)
    lau = C.start_socket_activate(h, case, argv)
    try:
        seed_session(h, lau.port, mbox)
    finally:
        lau.stop()
    san = lau.sanitizer_reports()
    if san:
        raise Fail("sanitizer report: " + "; ".join(san))


def systemd_pop3s_session(h):
    """pop3s@.service's ExecStart (the test's certificate and key in place
    of the shipped paths) under systemd-socket-activate: a session over
    implicit TLS."""
    if not shutil.which("systemd-socket-activate"):
        raise Fail("systemd-socket-activate is not installed (package systemd)")
    mode = "root" if h.ROOT else "user"
    case, mbox = seed_case(h)
    pki = T.make_pki(h, case)
    argv = T.tls_args(shlex.join(exec_start(h, "pop3s@.service")), pki, "pop3s@.service")
    if "--tls-implicit" not in argv:
        raise Fail("pop3s@.service's ExecStart lacks --tls-implicit")
    argv += C.session_args(h, case, mode)
    lau = C.start_socket_activate(h, case, argv)
    try:
        seed_session(h, lau.port, mbox, pki["ca"])
    finally:
        lau.stop()
    san = lau.sanitizer_reports()
    if san:
        raise Fail("sanitizer report: " + "; ".join(san))


# --------------------------------------------------------------- man page

SECTIONS = ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "COMMANDS", "FILES", "LOCKING",
            "LOGGING", "EXIT STATUS", "EXAMPLES", "STANDARDS", "SECURITY"]


def man_lint(h):
    if not shutil.which("mandoc"):
        raise Fail("mandoc is not installed")
    p = subprocess.run(["mandoc", "-Tlint", "-W", "warning", os.path.join(h.TOP, "pop3d.8")],
                       capture_output=True, timeout=30)
    out = (p.stdout + p.stderr).decode("utf-8", "replace").strip()
    if p.returncode or out:
        raise Fail("mandoc -Tlint: exit %d: %s" % (p.returncode, out[:300]))
    text = read(h, "pop3d.8")
    have = re.findall(r"(?m)^\.Sh (.*)$", text)
    missing = [s for s in SECTIONS if s not in have]
    if missing:
        raise Fail("pop3d.8 lacks the sections %s" % missing)
    for launcher in ("xinetd", "inetd.conf", "pop3d.socket", "pop3d@.service",
                     "xinetd.d/pop3s", "pop3s.socket", "pop3s@.service"):
        ex = text[text.index(".Sh EXAMPLES"):]
        ex = ex[:ex.index(".Sh ", 4)] if ".Sh " in ex[4:] else ex
        if launcher not in ex:
            raise Fail("EXAMPLES does not show %s" % launcher)


# ------------------------------------------------------------------ install

def install_tree(h):
    """make install/uninstall PREFIX=/usr DESTDIR=...: the tree, modes, the
    example files pointing at the installed binary, and an existing
    /etc/pam.d/pop3d neither overwritten nor removed."""
    dest = tempfile.mkdtemp(prefix="dest.", dir=h.ENV.work)
    os.makedirs(os.path.join(dest, "etc", "pam.d"))
    local = os.path.join(dest, "etc", "pam.d", "pop3d")
    with open(local, "w") as f:
        f.write("# the administrator's own file\nauth required pam_unix.so\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}

    def make(target):
        r = subprocess.run(["make", "-s", "-C", h.TOP, "-o", "pop3d", target,
                            "DESTDIR=" + dest, "PREFIX=/usr"],
                           capture_output=True, env=env, timeout=120)
        if r.returncode:
            raise Fail("make %s: %r" % (target, (r.stdout + r.stderr)[-300:]))
    make("install")
    want = {"usr/sbin/pop3d": 0o755, "usr/share/man/man8/pop3d.8": 0o644,
            "usr/share/doc/pop3d/examples/pam.d/pop3d": 0o644,
            "usr/share/doc/pop3d/examples/xinetd.d/pop3d": 0o644,
            "usr/share/doc/pop3d/examples/systemd/pop3d.socket": 0o644,
            "usr/share/doc/pop3d/examples/systemd/pop3d@.service": 0o644,
            "usr/share/doc/pop3d/examples/xinetd.d/pop3s": 0o644,
            "usr/share/doc/pop3d/examples/systemd/pop3s.socket": 0o644,
            "usr/share/doc/pop3d/examples/systemd/pop3s@.service": 0o644,
            "usr/share/doc/pop3d/examples/haproxy/haproxy.cfg": 0o644,
            "usr/share/doc/pop3d/examples/nginx/nginx.conf": 0o644,
            "usr/share/doc/pop3d/examples/fail2ban/filter.d/pop3d.conf": 0o644,
            "usr/share/doc/pop3d/examples/fail2ban/jail.d/pop3d.conf": 0o644,
            "etc/pam.d/pop3d": 0o644}
    got = {}
    for root, _, files in os.walk(dest):
        for f in files:
            p = os.path.join(root, f)
            got[os.path.relpath(p, dest)] = os.stat(p).st_mode & 0o7777
    if got != want:
        raise Fail("installed %s, expected %s" % (
            sorted("%s %o" % kv for kv in got.items()),
            sorted("%s %o" % kv for kv in want.items())))
    with open(local) as f:
        if "administrator" not in f.read():
            raise Fail("make install overwrote /etc/pam.d/pop3d")
    ex = os.path.join(dest, "usr/share/doc/pop3d/examples")
    for f in ("xinetd.d/pop3d", "systemd/pop3d@.service", "xinetd.d/pop3s",
              "systemd/pop3s@.service"):
        with open(os.path.join(ex, f)) as fh:
            text = fh.read()
        if "/usr/sbin/pop3d" not in text or "/usr/local/sbin" in text:
            raise Fail("%s does not run /usr/sbin/pop3d" % f)
    with open(os.path.join(dest, "usr/sbin/pop3d"), "rb") as a, open(h.TOP + "/pop3d", "rb") as b:
        if a.read() != b.read():
            raise Fail("the installed pop3d is not the one built")
    make("uninstall")
    left = sorted(os.path.relpath(os.path.join(r, f), dest)
                  for r, _, fs in os.walk(dest) for f in fs)
    if left != ["etc/pam.d/pop3d"]:
        raise Fail("after uninstall: %s (expected only the administrator's PAM file)" % left)


# ------------------------------------------------------------------- syslog

NS_SCRIPT = ('mount -t tmpfs -o mode=0755,size=64k pop3d-test-dev /dev && '
             'mknod -m 666 /dev/null c 1 3 && mknod -m 666 /dev/zero c 1 5 && '
             'mknod -m 666 /dev/random c 1 8 && mknod -m 666 /dev/urandom c 1 9 && '
             'ln -s "$0" /dev/log && exec "$@"')


def syslog_lines(h):
    """One session of pop3d in root mode behind a TCP connection, in a
    mount namespace of its own whose /dev/log is the test's datagram
    socket; returns (the syslog messages, the client's transcript,
    pop3d's stderr)."""
    case, mbox = seed_case(h)
    sockpath = os.path.join(case, "log.sock")
    logsock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    logsock.bind(sockpath)
    os.chmod(sockpath, 0o666)
    lis = socket.socket()
    lis.bind(("127.0.0.1", 0))
    lis.listen(1)
    cli = socket.create_connection(lis.getsockname(), h.TIMEOUT)
    srv, _ = lis.accept()
    lis.close()
    errpath = os.path.join(case, "stderr-1")
    argv = ["unshare", "-m", "sh", "-c", NS_SCRIPT, sockpath, h.ENV.pop3d] + \
        C.session_args(h, case, "root")
    with open(errpath, "wb") as err:
        p = subprocess.Popen(argv, stdin=srv, stdout=srv, stderr=err,
                             env=h.ENV.session_env(pam=False), start_new_session=True)
    srv.close()
    try:
        cli.sendall(("USER %s\r\nPASS Wrong-Secret-7\r\nUSER %s\r\nPASS %s\r\n"
                     "STAT\r\nRETR 1\r\nDELE 2\r\nQUIT\r\n"
                     % (h.ENV.vuser, h.ENV.vuser, h.ENV.vpw)).encode())
        out = b""
        deadline = time.monotonic() + h.EXIT_TIMEOUT
        cli.settimeout(h.TIMEOUT)
        while time.monotonic() < deadline:
            data = cli.recv(65536)
            if not data:
                break
            out += data
        p.wait(h.EXIT_TIMEOUT)
    finally:
        cli.close()
        if p.poll() is None:
            p.kill()
            p.wait()
    # pop3d and its children have exited: every message they sent is
    # queued on the socket already, so drain it without waiting.
    msgs = []
    logsock.setblocking(False)
    try:
        while True:
            msgs.append(logsock.recv(8192))
    except BlockingIOError:
        pass
    logsock.close()
    with open(errpath, "rb") as f:
        return msgs, out, f.read()


def syslog_test(h):
    if not h.ROOT:
        raise Fail("needs root (a mount namespace)")
    msgs, out, err = syslog_lines(h)
    if not out.endswith(b"+OK Logging out, messages deleted.\r\n"):
        raise Fail("session transcript ends %r" % out[-80:])
    if err:
        raise Fail("pop3d wrote to stderr without --debug: %r" % err[:200])
    # <PRI> is facility mail (2) * 8 + severity; the tag is pop3d[PID].
    parsed = []
    for m in msgs:
        r = re.match(rb"<(\d+)>\w{3} [ \d]\d \d\d:\d\d:\d\d pop3d\[(\d+)\]: (.*)$", m, re.S)
        if not r:
            raise Fail("not a syslog message from pop3d: %r" % m[:120])
        pri = int(r.group(1))
        if pri >> 3 != 2:
            raise Fail("facility %d, not mail: %r" % (pri >> 3, m[:120]))
        parsed.append((pri & 7, r.group(3).decode("utf-8", "replace")))
    text = [t for _, t in parsed]
    u = re.escape(h.ENV.vuser)
    want = [r"connect from 127\.0\.0\.1",
            r"login failed: user=%s\b.*" % u,
            r"login: user=%s\b.*" % u,
            r"mailbox loaded: user=%s messages=3 bytes=2086 scanned=\d+" % u,
            r"session end: user=%s retr=1/501 del=1/1035 left=2/1051 quit from 127\.0\.0\.1" % u]
    i = 0
    for pat in want:
        while i < len(text) and not re.fullmatch(pat, text[i]):
            i += 1
        if i == len(text):
            raise Fail("no line /%s/ in order in %r" % (pat, text))
        i += 1
    for sev, t in parsed:
        if t.startswith("login failed") and sev > 5:
            raise Fail("a failed login logged below notice: %r" % t)
    blob = b"\n".join(msgs)
    for secret in (b"Wrong-Secret-7", h.ENV.vpw.encode()):
        if secret in blob:
            raise Fail("a password reached syslog")


def tests(h):
    run_case(h, "deploy/xinetd-file", xinetd_file, False)
    run_case(h, "deploy/xinetd-session", xinetd_session)
    run_case(h, "deploy/xinetd-pop3s-file", xinetd_pop3s_file, False)
    run_case(h, "deploy/xinetd-pop3s-session", xinetd_pop3s_session)
    run_case(h, "deploy/inetd-openbsd", inetd_session)
    run_case(h, "deploy/systemd-units", unit_settings, False)
    run_case(h, "deploy/systemd-analyze-verify", systemd_verify, False)
    run_case(h, "deploy/systemd-socket-activate", systemd_session)
    run_case(h, "deploy/systemd-pop3s-socket-activate", systemd_pop3s_session)
    run_case(h, "deploy/man-lint", man_lint, False)
    if not os.environ.get("POP3D"):     # make install takes ./pop3d
        run_case(h, "deploy/install-tree", install_tree, False)
    run_case(h, "deploy/syslog", syslog_test)
