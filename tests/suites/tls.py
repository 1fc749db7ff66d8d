# tests/suites/tls.py: TLS (issue 13) with a throwaway CA and server
# certificate made here by the `openssl` command, and Python's ssl module
# (certificate and host name checked) as the client.  pop3d runs as inetd
# would start it: on a TCP connection accepted on 127.0.0.1 (stdin and
# stdout are the socket), in user mode and, as root, in root mode.
#
#   tls/implicit, tls/stls      whole sessions: RETR, DELE, QUIT change the
#                               mailbox right; CAPA before and after TLS
#   tls/injection-*             CVE-2011-0411: STLS\r\nCAPA\r\n and
#                               STLS\r\nQUIT\r\n in one write: the injected
#                               command is never answered, the handshake
#                               that follows works
#   tls/hostile-*               random bytes, plaintext on the implicit
#                               port, a truncated ClientHello (with EOF and
#                               without), a handshake never finished: each
#                               session ends within --auth-timeout + LATE,
#                               logs the library's reason and the client,
#                               leaves the mailbox alone
#   tls/stalled-reader          a client that stops reading ends the
#                               session within --idle-timeout + the TLS
#                               process's linger + LATE
#   tls/proc                    the TLS process from /proc: ids, groups,
#                               root, NoNewPrivs, Seccomp, limits, not
#                               dumpable, its descriptors; it alone holds
#                               the client socket
#   tls/key-isolation           the memory of every process of a logged-in
#                               TLS session (and before login) read through
#                               /proc/PID/mem: the key (RSA primes and
#                               private exponent in both byte orders, lines
#                               of the PEM text) is in the TLS process and
#                               in no other
#   tls/cert-*                  a key that cannot be read; a renewed
#                               certificate is used by the next connection
# The plaintext policy without handshakes is in the transcripts
# tls-plaintext-refused, tls-plaintext-allowed and stls-without-tls.
import importlib.util
import os
import pwd
import random
import re
import shutil
import socket
import ssl
import subprocess
import time


def _load(name):
    """Another suite's helpers: /proc readers shared with privsep and
    stalled."""
    spec = importlib.util.spec_from_file_location(
        "suite_%s_helpers" % name,
        os.path.join(os.path.dirname(os.path.abspath(__file__)), name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


P = _load("privsep")
S = _load("stalled")

H = None
AUTH = 3        # --auth-timeout of the hostile cases
IDLE = 2        # --idle-timeout of the stalled reader


class Pki:
    """The CA, the server's certificate and key, per mode a copy the
    session's user can read (user mode runs as the test user)."""

    def __init__(self, work):
        self.dir = os.path.join(work, "tls")
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.ca = os.path.join(self.dir, "ca.pem")
        self.cakey = os.path.join(self.dir, "ca.key")
        run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
             "-keyout", self.cakey, "-out", self.ca, "-days", "2",
             "-subj", "/CN=pop3d test CA"])
        self.serial = 1
        self.key = os.path.join(self.dir, "key.pem")
        run(["openssl", "genrsa", "-out", self.key, "2048"])
        self.cert = self.issue("server.pem")
        os.chmod(self.ca, 0o644)

    def issue(self, name):
        """A certificate for the key, for localhost and 127.0.0.1, with a
        serial of its own (the chain: leaf, then the CA)."""
        csr = os.path.join(self.dir, "req.csr")
        ext = os.path.join(self.dir, "ext")
        with open(ext, "w") as f:
            f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        run(["openssl", "req", "-new", "-key", self.key, "-out", csr,
             "-subj", "/CN=localhost"])
        out = os.path.join(self.dir, name)
        self.serial += 1
        run(["openssl", "x509", "-req", "-in", csr, "-CA", self.ca,
             "-CAkey", self.cakey, "-set_serial", str(self.serial),
             "-out", out + ".leaf", "-days", "2", "-extfile", ext])
        with open(out, "w") as f:
            f.write(open(out + ".leaf").read() + open(self.ca).read())
        os.chmod(out, 0o644)
        return out

    def files(self, mode, case):
        """--tls-cert/--tls-key arguments for a session in mode; the key
        is copied into the case, mode 0600, owned by whoever reads it."""
        key = os.path.join(case, "tls-key.pem")
        shutil.copy(self.key, key)
        os.chmod(key, 0o600)
        if H.ROOT and mode == "user":
            os.chown(key, H.ENV.u1.pw_uid, H.ENV.u1.pw_gid)
        return ["--tls-cert", self.cert, "--tls-key", key]

    def context(self):
        ctx = ssl.create_default_context(cafile=self.ca)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx


PKI = None


def run(argv):
    p = subprocess.run(argv, capture_output=True, timeout=H.EXIT_TIMEOUT)
    if p.returncode != 0:
        raise H.Fail("%s: %r" % (" ".join(argv[:3]), p.stderr[-200:]))
    return p.stdout


class Conn:
    """pop3d on one TCP connection accepted on 127.0.0.1; the client end,
    in clear until starttls()."""

    def __init__(self, mode, case, extra, name="1"):
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)
        self.sock = socket.create_connection(ls.getsockname(), timeout=H.TIMEOUT)
        srv, _ = ls.accept()
        ls.close()
        self.sock_ino = os.fstat(srv.fileno()).st_ino
        self.errpath = os.path.join(case, "stderr-" + name)
        with open(self.errpath, "wb") as err:
            self.p = subprocess.Popen(H.ENV.argv(mode, case, extra), stdin=srv,
                                      stdout=srv, stderr=err,
                                      env=H.ENV.session_env(),
                                      start_new_session=True)
        srv.close()
        self.ssl = None
        self.buf = b""

    def stderr(self):
        with open(self.errpath, "rb") as f:
            return f.read()

    def log(self):
        return self.stderr().decode("utf-8", "replace")

    def send(self, data):
        (self.ssl or self.sock).sendall(data)

    def line(self):
        """One reply line; in clear, read octet by octet, so that nothing
        of the TLS handshake that may follow is taken."""
        s = self.ssl or self.sock
        while b"\n" not in self.buf:
            d = s.recv(1 if self.ssl is None else 65536)
            if not d:
                break
            self.buf += d
        i = self.buf.find(b"\n")
        line, self.buf = (self.buf[:i + 1], self.buf[i + 1:]) if i >= 0 \
            else (self.buf, b"")
        return line

    def expect(self, want):
        got = self.line()
        if got != want + b"\r\n":
            raise H.Fail("expected %r, got %r" % (want, got))

    def multiline(self):
        lines = []
        while True:
            l = self.line()
            if l in (b"", b".\r\n"):
                return lines
            lines.append(l.rstrip(b"\r\n"))

    def starttls(self):
        if self.buf:
            raise H.Fail("octets in clear before the handshake: %r" % self.buf)
        self.ssl = PKI.context().wrap_socket(self.sock, server_hostname="localhost")

    def rest(self):
        """Everything until the end of the connection."""
        s = self.ssl or self.sock
        data, self.buf = self.buf, b""
        while True:
            try:
                d = s.recv(65536)
            except ssl.SSLError as e:
                if "EOF" in str(e):
                    return data
                raise
            if not d:
                return data
            data += d

    def wait(self):
        try:
            return self.p.wait(H.EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise H.Fail("session did not exit")

    def kill(self):
        try:
            os.killpg(self.p.pid, 9)
        except ProcessLookupError:
            pass
        self.p.wait()

    def close(self):
        try:
            (self.ssl or self.sock).close()
        except OSError:
            pass


def new_case(mode, fixture="seed.mbox"):
    case = H.ENV.new_case(mode)
    vars = H.ENV.vars(case)
    mbox = H.place_fixture(case, vars, "$VUSER", fixture)
    with open(mbox, "rb") as f:
        before = f.read()
    return case, mbox, before


def login(c):
    c.send(b"USER %s\r\nPASS %s\r\n" % (H.ENV.vuser.encode(), H.ENV.vpw.encode()))
    c.expect(b"+OK")
    c.expect(b"+OK Logged in.")


def finish(c):
    """Closes the client, waits for the exit (status 0), checks the
    sanitizers."""
    c.close()
    rc = c.wait()
    H.sanitizer_check([c])
    if rc != 0:
        raise H.Fail("exit status %d" % rc)


CAPA_TLS = [b"TOP", b"UIDL", b"USER", b"RESP-CODES", b"AUTH-RESP-CODE",
            b"PIPELINING", b"EXPIRE NEVER", b"SASL PLAIN"]
CAPA_PLAIN = [b"TOP", b"UIDL", b"RESP-CODES", b"AUTH-RESP-CODE",
              b"PIPELINING", b"EXPIRE NEVER", b"STLS"]


def summary_tls(c):
    m = re.search(r"session end: .* tls=(TLSv1\.[23])/(\S+)", c.log())
    if not m:
        raise H.Fail("no TLS version and cipher in the summary: %r" % c.log()[-300:])
    return m.group(1)


def machine_setup():
    """The users and the empty directory of root mode, again before each
    case: other test runs on a shared machine (package purges) have been
    seen to remove them in the middle of this one."""
    H.ensure_user("pop3d")
    H.ensure_user("pop3d-tls")
    os.makedirs("/var/lib/pop3d/empty", exist_ok=True)
    os.chmod("/var/lib/pop3d/empty", 0o555)


def case(name, fn, modes=None):
    for mode in modes or H.ENV.modes():
        full = "%s/%s" % (name, mode)
        if not H.wanted(full):
            continue
        H.clean_pam_wrapper_dirs()
        try:
            if H.ROOT:
                machine_setup()
            note = fn(mode)
            H.report(full, True)
            if note:
                print("    # " + note, flush=True)
        except (H.Fail, OSError, ssl.SSLError) as e:
            H.report(full, False, "%s: %s" % (type(e).__name__, e),
                     H.diag_for(H.ENV.work, full))


# ---------------------------------------------------------------- sessions

def implicit(mode):
    case_dir, mbox, before = new_case(mode)
    c = Conn(mode, case_dir, PKI.files(mode, case_dir) + ["--tls-implicit"])
    try:
        c.starttls()
        c.expect(b"+OK pop3d ready.")
        c.send(b"CAPA\r\nSTLS\r\n")
        c.expect(b"+OK Capability list follows")
        if c.multiline() != CAPA_TLS:
            raise H.Fail("CAPA inside TLS lists something else")
        c.expect(b"-ERR TLS is already active.")
        login(c)
        msgs = H.model_messages(before)
        c.send(b"STAT\r\nRETR 1\r\nDELE 1\r\nQUIT\r\n")
        c.expect(b"+OK 3 2086")
        c.expect(b"+OK 501 octets")
        if [l[1:] if l.startswith(b"..") else l for l in c.multiline()] != msgs[0]:
            raise H.Fail("RETR 1 differs")
        c.expect(b"+OK Marked to be deleted.")
        c.expect(b"+OK Logging out, messages deleted.")
        if c.rest() != b"":
            raise H.Fail("more after QUIT")
        finish(c)
        if open(mbox, "rb").read() != H.read_fixtures(["seed-23.mbox"]):
            raise H.Fail("mailbox is not seed-23.mbox after DELE 1")
        return "implicit: %s" % summary_tls(c)
    finally:
        c.kill()


def stls(mode):
    case_dir, mbox, before = new_case(mode)
    c = Conn(mode, case_dir, PKI.files(mode, case_dir))
    try:
        c.expect(b"+OK pop3d ready.")
        c.send(b"CAPA\r\n")
        c.expect(b"+OK Capability list follows")
        if c.multiline() != CAPA_PLAIN:
            raise H.Fail("plain CAPA: want STLS, no USER or SASL")
        c.send(b"STLS\r\n")
        c.expect(b"+OK Begin TLS negotiation.")
        c.starttls()
        c.send(b"CAPA\r\nSTLS\r\n")
        c.expect(b"+OK Capability list follows")
        if c.multiline() != CAPA_TLS:
            raise H.Fail("CAPA after STLS lists something else")
        c.expect(b"-ERR TLS is already active.")
        # AUTH PLAIN inside TLS, then the same changes as without TLS
        import base64
        c.send(b"AUTH PLAIN " + base64.b64encode(
            b"\0" + H.ENV.vuser.encode() + b"\0" + H.ENV.vpw.encode()) + b"\r\n")
        c.expect(b"+OK Logged in.")
        c.send(b"RETR 2\r\nDELE 2\r\nQUIT\r\n")
        c.expect(b"+OK 1035 octets")
        body = c.multiline()
        if len(body) != len(H.model_messages(before)[1]):
            raise H.Fail("RETR 2 has %d lines" % len(body))
        c.expect(b"+OK Marked to be deleted.")
        c.expect(b"+OK Logging out, messages deleted.")
        finish(c)
        if open(mbox, "rb").read() != H.read_fixtures(["seed-13.mbox"]):
            raise H.Fail("mailbox is not seed-13.mbox after DELE 2")
        return "STLS: %s" % summary_tls(c)
    finally:
        c.kill()


def injection(cmd):
    """STLS and cmd in one write: the +OK, then nothing in clear; after the
    handshake, only the replies to what was sent inside TLS."""
    def test(mode):
        case_dir, mbox, before = new_case(mode)
        c = Conn(mode, case_dir, PKI.files(mode, case_dir))
        try:
            c.expect(b"+OK pop3d ready.")
            c.send(b"STLS\r\n" + cmd + b"\r\n")
            c.expect(b"+OK Begin TLS negotiation.")
            c.starttls()
            c.send(b"CAPA\r\nUSER %s\r\nPASS %s\r\nSTAT\r\nQUIT\r\n"
                   % (H.ENV.vuser.encode(), H.ENV.vpw.encode()))
            want = (b"+OK Capability list follows\r\n" +
                    b"".join(l + b"\r\n" for l in CAPA_TLS) +
                    b".\r\n+OK\r\n+OK Logged in.\r\n+OK 3 2086\r\n"
                    b"+OK Logging out.\r\n")
            got = c.rest()
            if got != want:
                raise H.Fail("after the handshake %r, want %r" % (got[:300], want))
            finish(c)
            if open(mbox, "rb").read() != before:
                raise H.Fail("mailbox changed")
        finally:
            c.kill()
    return test


# ------------------------------------------------------------- hostile

def client_hello():
    """The first flight of a real client, from Python's ssl over memory."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = PKI.context().wrap_bio(inc, out, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def hostile(kind, stls_first=False):
    """One hostile client; the session must end within --auth-timeout +
    LATE with exit status 0, the log must name the client and the reason,
    and the mailbox stays as it was."""
    def test(mode):
        case_dir, mbox, before = new_case(mode)
        extra = PKI.files(mode, case_dir) + ["--auth-timeout", str(AUTH)]
        if not stls_first:
            extra.append("--tls-implicit")
        c = Conn(mode, case_dir, extra)
        t0 = time.monotonic()
        try:
            if stls_first:
                c.expect(b"+OK pop3d ready.")
                c.send(b"STLS\r\n")
                c.expect(b"+OK Begin TLS negotiation.")
            hello = client_hello()
            reason = None
            if kind == "random":
                c.send(random.Random(13).randbytes(4096))
            elif kind == "plaintext":
                c.send(b"USER %s\r\nPASS %s\r\n" % (H.ENV.vuser.encode(),
                                                    H.ENV.vpw.encode()))
            elif kind == "truncated-eof":
                c.send(hello[:len(hello) // 2])
                c.sock.shutdown(socket.SHUT_WR)
                reason = "the client closed the connection"
            elif kind == "truncated":
                c.send(hello[:len(hello) // 2])
                reason = "timed out"
            elif kind == "unfinished":
                c.send(hello)
                if not c.sock.recv(5):
                    raise H.Fail("no answer to a whole ClientHello")
                reason = "timed out"
            c.sock.settimeout(AUTH + H.LATE + (10 if H.SLOW else 0))
            try:
                got = c.rest()
            except socket.timeout:
                raise H.Fail("the connection is still open after %.1f s"
                             % (time.monotonic() - t0))
            took = time.monotonic() - t0
            rc = c.wait()
            H.sanitizer_check([c])
            if rc != 0:
                raise H.Fail("exit status %d" % rc)
            if took > AUTH + H.LATE:
                raise H.Fail("ended after %.1f s, limit %d + %.0f" % (took, AUTH, H.LATE))
            if re.search(rb"\+OK|-ERR", got):
                raise H.Fail("answered in clear: %r" % got[:100])
            log = c.log()
            m = re.search(r"TLS handshake failed: client=127\.0\.0\.1: (.*)", log)
            if not m:
                raise H.Fail("no log line naming the client: %r" % log[-300:])
            if reason and reason not in m.group(1):
                raise H.Fail("reason %r, want %r" % (m.group(1), reason))
            if not re.search(r"session end: .* tls=failed", log):
                raise H.Fail("summary without tls=failed: %r" % log[-200:])
            if open(mbox, "rb").read() != before:
                raise H.Fail("mailbox changed")
            return "%s: %s (%.1f s)" % (kind, m.group(1), took)
        finally:
            c.kill()
    return test


def big_mailbox(case_dir):
    """A maildrop with one message of 4 MB (more than the socket buffers
    between pop3d and a client that does not read hold)."""
    p = os.path.join(case_dir, "big.mbox")
    with open(p, "wb") as f:
        f.write(b"From a@b Mon Jan 24 10:49:06 2011\nSubject: big\n\n")
        f.write((b"x" * 76 + b"\n") * ((4 << 20) // 77))
    return p


def stalled_reader(mode):
    case_dir = H.ENV.new_case(mode)
    vars = H.ENV.vars(case_dir)
    src = big_mailbox(case_dir)
    mbox = H.mailbox_path(case_dir, vars, "$VUSER")
    shutil.copy(src, mbox)
    if H.ROOT:
        os.chown(mbox, H.ENV.u1.pw_uid, H.ENV.u1.pw_gid)
    before = open(mbox, "rb").read()
    c = Conn(mode, case_dir, PKI.files(mode, case_dir) +
             ["--tls-implicit", "--idle-timeout", str(IDLE)])
    linger = int(re.search(r"#define POP3D_TLS_LINGER\s+(\d+)",
                           open(os.path.join(H.TOP, "params.h")).read()).group(1))
    try:
        c.starttls()
        c.expect(b"+OK pop3d ready.")
        login(c)
        c.send(b"RETR 1\r\n" * 8)
        t0 = time.monotonic()       # from here on nothing is read
        limit = IDLE + linger + H.LATE
        try:
            rc = c.p.wait(limit + 30)
        except subprocess.TimeoutExpired:
            raise H.Fail("session still running %d s after the client stopped reading"
                         % (limit + 30))
        took = time.monotonic() - t0
        H.sanitizer_check([c])
        if rc != 0:
            raise H.Fail("exit status %d" % rc)
        if took > limit:
            raise H.Fail("ended after %.1f s, limit %d + %d + %.0f" % (took, IDLE, linger, H.LATE))
        log = c.log()
        if "did not take the end of the session" not in log or \
                not re.search(r"session end: .* timeout( from \S+)? tls=TLSv", log):
            raise H.Fail("log: %r" % log[-400:])
        if open(mbox, "rb").read() != before:
            raise H.Fail("mailbox changed")
        return "stalled reader: gone after %.1f s" % took
    finally:
        c.kill()


# -------------------------------------------------------- /proc checks

def fds(pid):
    d = "/proc/%d/fd" % pid
    out = {}
    for n in os.listdir(d):
        try:
            out[int(n)] = os.readlink(os.path.join(d, n))
        except OSError:
            pass
    return out


def tls_process(c):
    """The one process of the session that holds the client socket: the
    TLS process.  Fails if none, or another one does too."""
    sock = "socket:[%d]" % c.sock_ino
    holders = [p for p in S.group_pids(c.p.pid) if sock in fds(p).values()]
    if len(holders) != 1:
        raise H.Fail("processes holding the client socket: %s" % holders)
    return holders[0]


def check_tls_proc(mode, pid, c):
    st, lim, fd = P.status(pid), P.limits(pid), fds(pid)
    p = []
    if mode == "root":
        pw = pwd.getpwnam("pop3d-tls")
        if st["Uid"] != [str(pw.pw_uid)] * 4:
            p.append("Uid %s" % st["Uid"])
        if st["Gid"] != [str(pw.pw_gid)] * 4:
            p.append("Gid %s" % st["Gid"])
        if st.get("Groups", []) != []:
            p.append("Groups %s" % st.get("Groups"))
        if os.readlink("/proc/%d/root" % pid) != "/var/lib/pop3d/empty":
            p.append("root %s" % os.readlink("/proc/%d/root" % pid))
        if pw.pw_uid == pwd.getpwnam("pop3d").pw_uid:
            p.append("the same user as the pre-auth child")
    else:
        if st["Uid"] != [str(H.ENV.u1.pw_uid)] * 4:
            p.append("Uid %s" % st["Uid"])
    for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        if int(st[cap][0], 16) != 0:
            p.append("%s %s" % (cap, st[cap]))
    if st["NoNewPrivs"] != ["1"]:
        p.append("NoNewPrivs %s" % st["NoNewPrivs"])
    if st["Seccomp"] != (["0"] if H.SAN else ["2"]):
        p.append("Seccomp %s (2: filter; 0 in ASan builds)" % st["Seccomp"])
    # not dumpable: its /proc files belong to root, even in user mode
    if os.stat("/proc/%d/mem" % pid).st_uid != 0:
        p.append("dumpable (/proc/PID/mem owned by uid %d)" % os.stat("/proc/%d/mem" % pid).st_uid)
    for name, want in (("Max core file size", "0"), ("Max processes", "0"),
                       ("Max open files", "3")):
        if lim[name] != want:
            p.append("%s %s" % (name, lim[name]))
    # the client socket (0 and 1), the plaintext socket, the report
    # socket, the log: stderr (--debug, a file) here
    kinds = sorted(v if not v.startswith("socket:") else "socket" for v in fd.values())
    if len(fd) > 5 or any(k != "socket" and k != os.path.realpath(c.errpath) for k in kinds):
        p.append("descriptors %s" % fd)
    return p


def proc(mode):
    case_dir, mbox, before = new_case(mode)
    c = Conn(mode, case_dir, PKI.files(mode, case_dir))
    try:
        c.expect(b"+OK pop3d ready.")
        c.send(b"STLS\r\n")
        c.expect(b"+OK Begin TLS negotiation.")
        c.starttls()
        c.send(b"NOOP\r\n")        # a round trip: the switch is done
        c.expect(b"-ERR Command not valid in this state.")
        problems = ["before login: " + x for x in check_tls_proc(mode, tls_process(c), c)]
        login(c)
        t = tls_process(c)
        problems += ["after login: " + x for x in check_tls_proc(mode, t, c)]
        # the session itself no longer holds the client socket (tls_process
        # checked) and has /dev/null on 0 and 1
        for pid in S.group_pids(c.p.pid):
            if pid != t and [fds(pid).get(i) for i in (0, 1)] != ["/dev/null"] * 2:
                problems.append("pid %d has %s on 0 and 1" % (pid, [fds(pid).get(i) for i in (0, 1)]))
        c.send(b"QUIT\r\n")
        c.expect(b"+OK Logging out.")
        finish(c)
        if problems:
            raise H.Fail("; ".join(problems))
    finally:
        c.kill()


def maps_openssl(pid):
    """Whether libssl or libcrypto is mapped into pid."""
    with open("/proc/%d/maps" % pid) as f:
        return any(re.search(r"/lib(ssl|crypto)\.so", line) for line in f)


def openssl_mapped(mode):
    """OpenSSL is loaded by the TLS process alone (tlslib.c): a session
    that has not begun TLS maps none of it, and after STLS only the TLS
    process does."""
    case_dir, mbox, before = new_case(mode)
    c = Conn(mode, case_dir, PKI.files(mode, case_dir))
    try:
        c.expect(b"+OK pop3d ready.")
        c.send(b"NOOP\r\n")
        c.expect(b"-ERR Command not valid in this state.")
        pids = S.group_pids(c.p.pid)
        mapped = [p for p in pids if maps_openssl(p)]
        if mapped:
            raise H.Fail("before STLS, OpenSSL is mapped in %s of %s" % (mapped, pids))
        c.send(b"STLS\r\n")
        c.expect(b"+OK Begin TLS negotiation.")
        c.starttls()
        c.send(b"NOOP\r\n")
        c.expect(b"-ERR Command not valid in this state.")
        t = tls_process(c)
        after = S.group_pids(c.p.pid)
        mapped = [p for p in after if maps_openssl(p)]
        if mapped != [t]:
            raise H.Fail("after STLS, OpenSSL is mapped in %s of %s; the TLS "
                         "process is %d" % (mapped, after, t))
        c.send(b"QUIT\r\n")
        c.expect(b"+OK Logging out.")
        finish(c)
        return ("OpenSSL mapped in none of %d processes before STLS, in the TLS "
                "process alone after" % len(pids))
    finally:
        c.kill()


# ------------------------------------------------------- key isolation

def key_patterns(keyfile):
    """What of the key a process that holds it has in memory: the RSA
    primes and the private exponent in both byte orders (OpenSSL's
    BIGNUMs are little-endian words), and lines of the PEM text."""
    text = run(["openssl", "rsa", "-in", keyfile, "-noout", "-text"]).decode()
    pats = {}
    for name in ("privateExponent", "prime1", "prime2"):
        m = re.search(name + r":\s*\n((?:\s+[0-9a-f:]+\n)+)", text)
        if not m:
            raise H.Fail("cannot read %s from openssl rsa -text" % name)
        n = int(re.sub(r"[^0-9a-f]", "", m.group(1)), 16)
        be = n.to_bytes((n.bit_length() + 7) // 8, "big")
        pats[name + "/BE"] = be
        pats[name + "/LE"] = be[::-1]
    lines = [l for l in open(keyfile, "rb").read().split(b"\n")
             if l and not l.startswith(b"-----")]
    for i in (2, len(lines) // 2, len(lines) - 3):
        pats["PEM line %d" % i] = lines[i]
    return pats


def scan(pid, pats):
    """The names of the patterns found in pid's readable memory."""
    found = set()
    longest = max(len(v) for v in pats.values())
    with open("/proc/%d/maps" % pid) as f:
        maps = f.read().splitlines()
    fd = os.open("/proc/%d/mem" % pid, os.O_RDONLY)
    try:
        for m in maps:
            parts = m.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if parts[1][0] != "r" or (len(parts) > 5 and parts[5] in ("[vvar]", "[vsyscall]")):
                continue
            if hi - lo > (256 << 20):      # sanitizer shadow and reserves
                continue
            off, tail = lo, b""
            while off < hi:
                try:
                    chunk = os.pread(fd, min(8 << 20, hi - off), off)
                except OSError:
                    break
                if not chunk:
                    break
                data = tail + chunk
                for name, v in pats.items():
                    if name not in found and v in data:
                        found.add(name)
                tail = data[-longest:]
                off += len(chunk)
    finally:
        os.close(fd)
    return found


def isolation_check(c, pats, when):
    t = tls_process(c)
    found, others = {}, []
    for pid in S.group_pids(c.p.pid):
        got = scan(pid, pats)
        if pid == t:
            found = got
        elif got:
            st = P.status(pid)
            others.append("%s: pid %d (uid %s) holds %s" % (when, pid, st["Uid"][0], sorted(got)))
    if others:
        raise H.Fail("; ".join(others))
    if not any(k.endswith("/LE") or k.endswith("/BE") for k in found):
        raise H.Fail("%s: the scan finds no key in the TLS process %d (found %s): "
                     "the test cannot see a key" % (when, t, sorted(found)))
    return len(S.group_pids(c.p.pid)), sorted(found)


def key_isolation(implicit_tls):
    def test(mode):
        case_dir, mbox, before = new_case(mode)
        extra = PKI.files(mode, case_dir)
        pats = key_patterns(extra[-1])
        if implicit_tls:
            extra.append("--tls-implicit")
        c = Conn(mode, case_dir, extra)
        try:
            if implicit_tls:
                c.starttls()
                c.expect(b"+OK pop3d ready.")
            else:
                c.expect(b"+OK pop3d ready.")
                c.send(b"STLS\r\n")
                c.expect(b"+OK Begin TLS negotiation.")
                c.starttls()
            c.send(b"NOOP\r\n")
            c.expect(b"-ERR Command not valid in this state.")
            n1, _ = isolation_check(c, pats, "before login")
            login(c)
            c.send(b"STAT\r\n")
            c.expect(b"+OK 3 2086")
            n2, found = isolation_check(c, pats, "logged in")
            c.send(b"QUIT\r\n")
            c.expect(b"+OK Logging out.")
            finish(c)
            return ("key found only in the TLS process (%s); none in the other %d "
                    "processes before login, %d after" % (", ".join(found), n1 - 1, n2 - 1))
        finally:
            c.kill()
    return test


# ------------------------------------------------------ certificate files

def cert_unreadable(mode):
    """A key that cannot be loaded: nothing in clear to a pop3s client,
    exit status 1, the reason in the log."""
    case_dir, mbox, before = new_case(mode)
    extra = PKI.files(mode, case_dir) + ["--tls-implicit"]
    extra[extra.index("--tls-key") + 1] = os.path.join(case_dir, "no-such-key.pem")
    c = Conn(mode, case_dir, extra)
    try:
        got = c.rest()
        rc = c.wait()
        H.sanitizer_check([c])
        if got != b"" or rc != 1:
            raise H.Fail("exit %d, sent %r" % (rc, got[:80]))
        if not re.search(r"TLS: key .*no-such-key\.pem: .*No such file", c.log()):
            raise H.Fail("log: %r" % c.log()[-300:])
    finally:
        c.kill()


def cert_renewed(mode):
    """The certificate files are read at each connection: a certificate
    issued between two connections is the one the second one sees."""
    case_dir, mbox, before = new_case(mode)
    serials = []
    extra = PKI.files(mode, case_dir) + ["--tls-implicit"]
    cert = os.path.join(case_dir, "cert.pem")
    extra[extra.index("--tls-cert") + 1] = cert
    for k in range(2):
        shutil.copy(PKI.issue("renewed-%d.pem" % k), cert)
        os.chmod(cert, 0o644)
        c = Conn(mode, case_dir, extra, name=str(k))
        try:
            c.starttls()
            serials.append(c.ssl.getpeercert(binary_form=True))
            c.expect(b"+OK pop3d ready.")
            c.send(b"QUIT\r\n")
            c.expect(b"+OK Logging out.")
            finish(c)
        finally:
            c.kill()
    if serials[0] == serials[1]:
        raise H.Fail("the second connection got the first certificate")


def tests(h):
    global H, PKI
    H = h
    cases = [("tls/implicit", implicit), ("tls/stls", stls),
             ("tls/injection-capa", injection(b"CAPA")),
             ("tls/injection-quit", injection(b"QUIT"))]
    cases += [("tls/hostile-" + k, hostile(k)) for k in
              ("random", "plaintext", "truncated-eof", "truncated", "unfinished")]
    cases += [("tls/hostile-stls-random", hostile("random", stls_first=True)),
              ("tls/stalled-reader", stalled_reader),
              ("tls/cert-unreadable", cert_unreadable),
              ("tls/cert-renewed", cert_renewed)]
    # Reading another user's (or a non-dumpable) process needs root
    # (/proc/PID/mem, and maps for tls/openssl-mapped);
    # memcheck adds descriptors, raises limits, and its processes are too
    # big to read whole: as in privsep.py, skipped under VALGRIND=1.
    if h.ROOT and not h.VALGRIND:
        cases += [("tls/proc", proc),
                  ("tls/openssl-mapped", openssl_mapped),
                  ("tls/key-isolation-implicit", key_isolation(True)),
                  ("tls/key-isolation-stls", key_isolation(False))]
    cases = [(n, f) for n, f in cases
             if any(h.wanted("%s/%s" % (n, m)) for m in h.ENV.modes())]
    if not cases:
        return
    if not shutil.which("openssl"):
        h.report("tls/setup", False, "the openssl command is missing")
        return
    PKI = Pki(h.ENV.work)
    for name, fn in cases:
        case(name, fn)
