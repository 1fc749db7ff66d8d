"""The TLS part of `make bench` (issue 13), run by bench/run after the
pipe sessions: servers listening on 127.0.0.1 as they are deployed, side
by side in one run, the order rotating each run.

  pop3d-tls       pop3d --tls-implicit under systemd-socket-activate
                  --accept --inetd (one fork+exec per connection, like the
                  shipped pop3s.socket or xinetd.d/pop3s)
  pop3d-tcp       the same without TLS: the plaintext baseline over TCP
  dovecot-tls     Dovecot's master with its pop3s listener (ssl = required,
                  its default service settings: a pop3-login process per
                  connection, TLS kept in it, a pop3 process after login)
  stunnel-popa3d  stunnel (already running, key loaded once) exec'ing popa3d
                  per connection
  pop3d-tls-before, pop3d-tcp-before
                  the same two with the POP3D_BEFORE binary (bench/run), for
                  before/after comparisons in one run, interleaved

Sessions: "setup" connects, handshakes (certificate verified against the
test CA), reads the greeting, logs in (USER/PASS through PAM, a cheap
sha512-crypt hash), STAT on an empty maildrop, QUIT, and waits for the
server's close; "retr" logs in and RETRs every message of the mailbox
(pipelined in windows), then QUIT.  Times are from connect() to the
server's EOF.  Every server uses the same certificate chain (EC P-256, a
root CA and an intermediate made with openssl) and the same TLS client.
"""

import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import time

TUSER = "pop3bencht"           # empty maildrop, cheap hash (bench/setup)
WINDOW = 64                    # RETR commands in flight


# ------------------------------------------------------------------- PKI

def openssl(d, *args):
    subprocess.run(["openssl"] + list(args), cwd=d, check=True,
                   capture_output=True, timeout=60)


def make_pki(d):
    """Root CA -> intermediate -> server certificate for 127.0.0.1, made
    once; returns {ca, cert (chain), key (0600)}."""
    out = {"ca": os.path.join(d, "root.pem"), "cert": os.path.join(d, "chain.pem"),
           "key": os.path.join(d, "server.key")}
    if all(os.path.exists(p) for p in out.values()):
        return out
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o755)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl(d, "req", "-x509", "-new", *ec, "-keyout", "root.key", "-out", "root.pem",
            "-days", "3650", "-subj", "/CN=pop3d bench root CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    exts = {"int": "basicConstraints=critical,CA:TRUE,pathlen:0\n"
                   "keyUsage=critical,keyCertSign,cRLSign\n",
            "server": "basicConstraints=critical,CA:FALSE\n"
                      "keyUsage=critical,digitalSignature\n"
                      "extendedKeyUsage=serverAuth\n"
                      "subjectAltName=IP:127.0.0.1,DNS:localhost\n"}
    for name, ca in (("int", "root"), ("server", "int")):
        openssl(d, "req", "-new", *ec, "-keyout", name + ".key", "-out", name + ".csr",
                "-subj", "/CN=pop3d bench " + name)
        with open(os.path.join(d, name + ".ext"), "w") as f:
            f.write(exts[name])
        openssl(d, "x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem",
                "-CAkey", ca + ".key", "-CAcreateserial", "-days", "3650",
                "-extfile", name + ".ext", "-out", name + ".pem")
    with open(out["cert"], "wb") as f:
        for name in ("server.pem", "int.pem"):
            with open(os.path.join(d, name), "rb") as fi:
                f.write(fi.read())
    os.chmod(out["key"], 0o600)
    for p in (out["ca"], out["cert"]):
        os.chmod(p, 0o644)
    return out


# ---------------------------------------------------------------- client

class Eof(Exception):
    pass


class Conn:
    """A blocking client connection with a fixed read buffer; bodies are
    scanned for CRLF.CRLF, never kept."""

    def __init__(self, sock):
        self.s = sock
        self.buf = bytearray(1 << 20)
        self.mv = memoryview(self.buf)
        self.lo = self.hi = 0
        self.nread = 0

    def fill(self):
        if self.lo:
            self.buf[0:self.hi - self.lo] = self.buf[self.lo:self.hi]
            self.hi -= self.lo
            self.lo = 0
        k = self.s.recv_into(self.mv[self.hi:])
        if k == 0:
            raise Eof("EOF")
        self.hi += k
        self.nread += k

    def line(self):
        while True:
            e = self.buf.find(b"\r\n", self.lo, self.hi)
            if e >= 0:
                line = bytes(self.buf[self.lo:e])
                self.lo = e + 2
                return line
            self.fill()

    def ok(self):
        line = self.line()
        if not line.startswith(b"+OK"):
            raise Eof("reply %r" % line[:80])
        return line

    def body(self):
        while self.hi - self.lo < 3:
            self.fill()
        if self.buf[self.lo:self.lo + 3] == b".\r\n":
            self.lo += 3
            return
        while True:
            e = self.buf.find(b"\r\n.\r\n", self.lo, self.hi)
            if e >= 0:
                self.lo = e + 5
                return
            self.lo = max(self.lo, self.hi - 4)
            self.fill()

    def send(self, data):
        self.s.sendall(data)

    def until_eof(self):
        try:
            while True:
                self.lo = self.hi = 0
                self.fill()
        except Eof:
            pass


def connect(port, ctx):
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    if ctx:
        sock = ctx.wrap_socket(sock, server_hostname="127.0.0.1")
    return Conn(sock)


def login(c, user, password):
    c.ok()                                  # greeting
    c.send(b"USER %s\r\nPASS %s\r\n" % (user.encode(), password.encode()))
    c.ok()
    c.ok()


def session_setup(port, ctx, password):
    """connect, handshake, greeting, USER/PASS, STAT, QUIT, EOF; seconds."""
    t0 = time.perf_counter()
    c = connect(port, ctx)
    try:
        login(c, TUSER, password)
        c.send(b"STAT\r\n")
        stat = c.ok()
        if stat.split()[1:2] != [b"0"]:
            raise Eof("STAT %r on the empty maildrop" % stat)
        c.send(b"QUIT\r\n")
        c.ok()
        c.until_eof()
    finally:
        c.s.close()
    return time.perf_counter() - t0


def session_retr(port, ctx, user, password, n):
    """Login, RETR 1..n with WINDOW commands in flight, QUIT, EOF;
    (seconds, octets read after login)."""
    t0 = time.perf_counter()
    c = connect(port, ctx)
    try:
        login(c, user, password)
        start = c.nread - (c.hi - c.lo)
        sent = 0
        for i in range(1, n + 1):
            if sent < n and sent - i < WINDOW // 2:
                k = min(n, sent + WINDOW) - sent
                c.send(b"".join(b"RETR %d\r\n" % j for j in range(sent + 1, sent + k + 1)))
                sent += k
            c.ok()
            c.body()
        octets = c.nread - (c.hi - c.lo) - start
        c.send(b"QUIT\r\n")
        c.ok()
        c.until_eof()
    finally:
        c.s.close()
    return time.perf_counter() - t0, octets


# --------------------------------------------------------------- servers

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what):
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("%s did not start listening" % what)
            time.sleep(0.05)


class Listener:
    tls = True

    def __init__(self, R, pki):
        self.R, self.pki = R, pki
        self.proc = None
        self.port = None
        self.log = os.path.join(R.TMP, "%s.stderr" % self.name)

    def spawn(self, argv):
        self.port = self.port or free_port()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log, start_new_session=True,
                                         env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        wait_port(self.port, self.proc, self.name)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class Pop3dTls(Listener):
    name = "pop3d-tls"

    def __init__(self, R, pki, binary, suffix=""):
        self.name += suffix
        super().__init__(R, pki)
        self.binary = binary

    def options(self):
        return ["--tls-implicit", "--tls-cert", self.pki["cert"],
                "--tls-key", self.pki["key"]]

    def available(self):
        return bool(shutil.which("systemd-socket-activate"))

    def start(self):
        self.port = free_port()
        state = os.path.join(self.R.TMP, "state-" + self.name)
        os.makedirs(state, mode=0o700, exist_ok=True)
        self.spawn(["systemd-socket-activate", "--accept", "--inetd",
                    "-l", "127.0.0.1:%d" % self.port, self.binary,
                    "--pam-service", self.R.PAM_SERVICE, "--state-dir", state]
                   + self.options())


class Pop3dTcp(Pop3dTls):
    name = "pop3d-tcp"
    tls = False

    def options(self):
        return []


class StunnelPopa3d(Listener):
    name = "stunnel-popa3d"

    def __init__(self, R, pki, popa3d):
        super().__init__(R, pki)
        self.popa3d = popa3d

    def available(self):
        return bool(shutil.which("stunnel4")) and os.access(self.popa3d, os.X_OK)

    def start(self):
        self.port = free_port()
        conf = os.path.join(self.R.TMP, "stunnel.conf")
        with open(conf, "w") as f:
            f.write("# written by bench/tlsbench.py\nforeground = yes\npid =\n"
                    "syslog = no\ndebug = 3\n[pop3s]\naccept = 127.0.0.1:%d\n"
                    "cert = %s\nkey = %s\nexec = %s\nexecArgs = popa3d\n"
                    % (self.port, self.pki["cert"], self.pki["key"], self.popa3d))
        self.spawn(["stunnel4", conf])


class DovecotTls(Listener):
    """Dovecot's master; from the unpacked package (tests/deps.sh keeps it
    in /var/cache/pop3d-tests) over /usr in a mount namespace of its own
    when it is not installed, since its paths are compiled in."""
    name = "dovecot-tls"
    CACHE = "/var/cache/pop3d-tests"

    def available(self):
        if os.path.exists("/usr/sbin/dovecot") and os.path.exists("/usr/lib/dovecot/pop3"):
            return True
        import glob
        return all(glob.glob(os.path.join(self.CACHE, p + "_*.deb"))
                   for p in ("dovecot-core", "dovecot-pop3d"))

    def root(self):
        """The unpacked tree, or None when Dovecot is installed."""
        if os.path.exists("/usr/sbin/dovecot") and os.path.exists("/usr/lib/dovecot/pop3"):
            return None
        import glob
        root = os.path.join(self.R.TMP, "dovecot-root")
        if not os.path.exists(os.path.join(root, "usr/sbin/dovecot")):
            for p in ("dovecot-core", "dovecot-pop3d"):
                deb = sorted(glob.glob(os.path.join(self.CACHE, p + "_*.deb")))[-1]
                subprocess.run(["dpkg-deb", "-x", deb, root], check=True)
        return root

    def start(self):
        R = self.R
        self.port = free_port()
        run = os.path.join(R.TMP, "dovecot-tls-run")
        shutil.rmtree(run, ignore_errors=True)
        os.makedirs(run, mode=0o755)
        state = os.path.join(R.TMP, "dovecot-tls-state")
        os.makedirs(state, mode=0o755, exist_ok=True)
        R.mkdir_owned(os.path.join(R.TMP, "dovecot-home", TUSER), TUSER)
        R.mkdir_owned(os.path.join(R.TMP, "dovecot-index", TUSER), TUSER)
        conf = os.path.join(R.TMP, "dovecot-tls.conf")
        with open(conf, "w") as f:
            f.write("# written by bench/tlsbench.py: Dovecot's defaults but for\n"
                    "# the paths, the listener and the users\n"
                    "base_dir = %s\nstate_dir = %s\n"
                    "protocols = pop3\nlisten = 127.0.0.1\n"
                    "ssl = required\nssl_cert = <%s\nssl_key = <%s\n"
                    "log_path = %s/dovecot-tls.log\n"
                    "mail_location = mbox:%s/dovecot-home/%%u/mail:INBOX=%s/%%u:"
                    "INDEX=%s/dovecot-index/%%u\n"
                    "mbox_read_locks = fcntl\nmbox_write_locks = fcntl\n"
                    "pop3_uidl_format = %%08Xu%%08Xv\n"
                    "first_valid_uid = 100\n"
                    "passdb {\n  driver = pam\n  args = %s\n}\n"
                    "userdb {\n  driver = passwd\n}\n"
                    "service pop3-login {\n  inet_listener pop3 {\n    port = 0\n  }\n"
                    "  inet_listener pop3s {\n    port = %d\n    ssl = yes\n  }\n}\n"
                    % (run, state, self.pki["cert"], self.pki["key"], R.TMP, R.TMP, R.SPOOL,
                       R.TMP, R.PAM_SERVICE, self.port))
        root = self.root()
        master = ["/usr/sbin/dovecot", "-F", "-c", conf]
        if root:
            master = ["unshare", "-m", "sh", "-c",
                      'mount -t overlay overlay -o lowerdir="$0/usr":/usr /usr && exec "$@"',
                      root] + master
        self.spawn(master)


# ------------------------------------------------------------ OpenSSL cost

def openssl_costs(R, pki, out, count=50):
    """What a fresh process pays for OpenSSL before a handshake
    (bench/tlsinit.c, built here), and the spawn of it against /bin/true:
    the difference beyond its own steps is the loading and relocation of
    libssl and libcrypto."""
    binary = os.path.join(R.TMP, "tlsinit")
    src = os.path.join(R.BENCH, "tlsinit.c")
    if subprocess.run(["cc", "-O2", "-o", binary, src, "-lssl", "-lcrypto"]).returncode:
        print("bench/tlsinit.c did not build (libssl-dev)", file=R.sys.stderr)
        return
    steps = {}
    spawn = {"true": [], "tlsinit": []}
    for _ in range(count):
        for name, argv in (("true", ["/bin/true"]),
                           ("tlsinit", [binary, pki["cert"], pki["key"]])):
            t0 = time.perf_counter()
            p = subprocess.run(argv, capture_output=True, check=True)
            spawn[name].append(time.perf_counter() - t0)
            for kv in p.stdout.split():
                k, _, v = kv.decode().partition("=")
                steps.setdefault(k, []).append(float(v) / 1e6)
    inside = sum(R.med(v) for v in steps.values())
    load = R.med(spawn["tlsinit"]) - R.med(spawn["true"]) - inside
    print("\nOpenSSL %s in a fresh process (bench/tlsinit.c, medians of %d): "
          "%s, together %s; loading libssl and libcrypto %s (spawn+wait of "
          "tlsinit %s against /bin/true %s)."
          % (ssl.OPENSSL_VERSION.split()[1], count,
             ", ".join("%s %s" % (k, R.fmt_t(R.med(v))) for k, v in steps.items()),
             R.fmt_t(inside), R.fmt_t(load), R.fmt_t(R.med(spawn["tlsinit"])),
             R.fmt_t(R.med(spawn["true"]))), file=out, flush=True)


# ------------------------------------------------------------------- run

def empty_maildrop(R):
    p = os.path.join(R.SPOOL, TUSER)
    pw = pwd.getpwnam(TUSER)
    with open(p, "wb"):
        pass
    os.chown(p, pw.pw_uid, pw.pw_gid)
    os.chmod(p, 0o600)


def bench(R, size, runs, setups, pop3d, popa3d, out):
    """The TLS table for mailbox size `size`; returns {(server, what):
    median}.  R is bench/run (its helpers and settings)."""
    pki = make_pki(os.path.join(R.TMP, "tls"))
    ctx = ssl.create_default_context(cafile=pki["ca"])
    servers = []
    before = os.path.join(R.TMP, "bin", "pop3d-before")
    both = os.environ.get("POP3D_BEFORE") and os.path.exists(before)
    want = os.environ.get("TLS_SERVERS", "pop3d-tls pop3d-tcp dovecot-tls "
                          "stunnel-popa3d" + (" pop3d-tls-before pop3d-tcp-before"
                                              if both else "")).split()
    candidates = [Pop3dTls(R, pki, pop3d), Pop3dTcp(R, pki, pop3d),
                  DovecotTls(R, pki), StunnelPopa3d(R, pki, popa3d)]
    if both:
        candidates += [Pop3dTls(R, pki, before, "-before"),
                       Pop3dTcp(R, pki, before, "-before")]
    for s in candidates:
        if s.name not in want:
            continue
        if s.available():
            servers.append(s)
        else:
            print("%s: not available, skipped" % s.name, file=R.sys.stderr)
    path, n = R.mbox_for(size)
    times = {}
    try:
        for s in servers:
            s.start()
        empty_maildrop(R)
        # Warm-up, untimed: every server once (Dovecot builds its index and
        # rewrites the mbox on its first open; pop3d writes its scan cache).
        snap = {}
        for s in servers:
            session_setup(s.port, ctx if s.tls else None, R.PASSWORD)
            R.restore(path)
            before = R.fingerprint(R.spool_path())
            session_retr(s.port, ctx if s.tls else None, R.USER, R.PASSWORD, n)
            if R.fingerprint(R.spool_path()) != before:
                copy = os.path.join(R.TMP, "%s-%s.mbox" % (s.name, size))
                shutil.copyfile(R.spool_path(), copy)
                st = os.stat(R.spool_path())
                os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns))
                snap[s.name] = copy
            else:
                snap[s.name] = path
        current = [None]
        for run in range(runs):
            order = servers[run % len(servers):] + servers[:run % len(servers)]
            for s in order:
                c = ctx if s.tls else None
                for _ in range(setups):
                    times.setdefault((s.name, "setup"), []).append(
                        session_setup(s.port, c, R.PASSWORD))
            for s in order:
                src = snap[s.name]
                if current[0] != (src, R.fingerprint(R.spool_path())):
                    R.restore(src)
                    current[0] = (src, R.fingerprint(R.spool_path()))
                t, octets = session_retr(s.port, ctx if s.tls else None,
                                         R.USER, R.PASSWORD, n)
                times.setdefault((s.name, "retr"), []).append(t)
                times.setdefault((s.name, "octets"), []).append(octets)
            print("tls run %d of %d done" % (run + 1, runs), file=R.sys.stderr, flush=True)
    finally:
        for s in servers:
            s.stop()
        empty_maildrop(R)
    med = report(R, servers, times, runs, setups, size, n, out)
    openssl_costs(R, pki, out)
    return med


def report(R, servers, times, runs, setups, size, n, out):
    med = {}
    for key, xs in times.items():
        med[key] = R.med(xs)
    names = [s.name for s in servers]
    print("\n### Over TCP on 127.0.0.1, implicit TLS (%s messages)\n" % n, file=out)
    print("| session | " + " | ".join(names) + " |", file=out)
    print("|---" * (len(names) + 1) + "|", file=out)
    base = "pop3d-tls"
    rows = [("setup", "connect, handshake, login, STAT, QUIT (empty maildrop)")]
    rows.append(("retr", "RETR every message (%s)" % size))
    for key, title in rows:
        cells = []
        for s in names:
            m = med.get((s, key))
            if m is None:
                cells.append("—")
                continue
            c = R.fmt_t(m)
            if s != base and med.get((base, key)):
                c += " (%.2f×)" % (m / med[(base, key)])
            cells.append(c)
        print("| %s | %s |" % (title, " | ".join(cells)), file=out)
    cells = []
    for s in names:
        if med.get((s, "retr")):
            rate = med[(s, "octets")] / med[(s, "retr")]
            med[(s, "rate")] = rate
            cells.append("%.0f MB/s" % (rate / 1e6))
        else:
            cells.append("—")
    print("| RETR all, output rate | %s |" % " | ".join(cells), file=out)
    print("\nMedians: setup of %d sessions (%d runs × %d), RETR of %d runs; the "
          "order rotates each run; ratios are to pop3d-tls." % (runs * setups, runs,
                                                               setups, runs), file=out)
    lines = []

    def verdict(name, ok, detail):
        lines.append("- %s: %s (%s)" % (name, "not measured" if ok is None else
                                        "**met**" if ok else "**not met**", detail))
    p, d = med.get((base, "setup")), med.get(("dovecot-tls", "setup"))
    verdict("TLS session setup ≤ Dovecot's", None if not (p and d) else p <= d,
            "%s vs %s" % (R.fmt_t(p), R.fmt_t(d)))
    rp, rd, rt = (med.get((s, "rate")) for s in (base, "dovecot-tls", "pop3d-tcp"))
    verdict("RETR over TLS ≥ 1.5 × Dovecot's", None if not (rp and rd) else rp >= 1.5 * rd,
            "%.0f vs %.0f MB/s, %.2f×" % ((rp or 0) / 1e6, (rd or 0) / 1e6,
                                          (rp or 0) / rd if rd else 0))
    verdict("RETR over TLS within 1.3× of plaintext", None if not (rp and rt)
            else rt <= 1.3 * rp, "%.0f vs %.0f MB/s, %.2f×" % (
                (rp or 0) / 1e6, (rt or 0) / 1e6, (rt or 0) / rp if rp else 0))
    print("\nTLS targets (%s):\n" % size, file=out)
    print("\n".join(lines), file=out, flush=True)
    return med
