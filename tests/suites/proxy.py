# tests/suites/proxy.py: --proxy-from and the PROXY protocol over real TCP
# (issue 14).  pop3d runs behind systemd-socket-activate, each session in
# a mount namespace of its own whose /dev/log is the test's datagram
# socket, so the assertions read the real syslog lines.  A trusted peer's
# header (v1, v2 with TLVs, IPv6, LOCAL) names the client in every line and
# in PAM_RHOST; a trusted peer without a valid header gets no session; a
# PROXY line from elsewhere is refused; without --proxy-from it is an
# unknown command.  Also the fail2ban filter of examples/fail2ban, run by
# Debian's fail2ban-regex over those syslog lines.
#
# The Server class (a backend with its syslog) is used by
# tests/suites/frontends.py (HAProxy, nginx) too.
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _load(name):
    spec = importlib.util.spec_from_file_location("suite_%s_helpers" % name,
                                                  os.path.join(HERE, name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


C = _load("clients")
D = _load("deploy")
Fail = C.Fail

CLIENT = "198.51.100.7"
V2SIG = b"\r\n\r\n\x00\r\nQUIT\n"
SYSLOG_RE = re.compile(rb"<(\d+)>(\w{3} [ \d]\d \d\d:\d\d:\d\d) pop3d\[(\d+)\]: (.*)$", re.S)


def skip(h, name, why):
    """A case this machine cannot run: said, not counted."""
    if h.wanted(name):
        print("SKIP %s: %s" % (name, why), flush=True)


def free_port(addr):
    with socket.socket() as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


class Server:
    """pop3d (root mode, or user mode through setpriv) behind
    systemd-socket-activate on addr; every session's syslog lines arrive
    on a datagram socket of the test."""

    def __init__(self, h, case, args, addr="127.0.0.1", mode="root", name="pop3d",
                 env=None, port=None, listen=None):
        self.h, self.case, self.name, self.addr = h, case, name, addr
        self.port = port or free_port(addr)
        self.sockpath = os.path.join(case, name + ".log.sock")
        self.log = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.log.bind(self.sockpath)
        os.chmod(self.sockpath, 0o666)
        self.msgs = []
        # drained all the time: a sender blocks once the datagram queue
        # is full (net.unix.max_dgram_qlen, 10 here), and pop3d with it
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        run = [h.ENV.pop3d] + C.session_args(h, case, mode) + list(args)
        if mode == "user":
            u = h.ENV.u1
            run = ["setpriv", "--reuid=%d" % u.pw_uid, "--regid=%d" % u.pw_gid,
                   "--clear-groups"] + run
        argv = ["unshare", "-m", "sh", "-c", D.NS_SCRIPT, self.sockpath] + run
        self.logpath = os.path.join(case, "stderr-" + name)
        lenv = C.launcher_env(h, case)
        lenv.update(env or {})
        # the launcher passes on only the variables named with -E
        setenv = []
        for k in sorted(set(env or {}) | {"ASAN_OPTIONS", "UBSAN_OPTIONS"}):
            setenv += ["-E", k]
        with open(self.logpath, "wb") as f:
            self.proc = subprocess.Popen(
                ["systemd-socket-activate", "--accept", "--inetd", "-l",
                 listen or "%s:%d" % (addr, self.port)] + setenv + argv,
                stdin=subprocess.DEVNULL, stdout=f, stderr=f, env=lenv,
                start_new_session=True)
        # the launcher says when it listens; a test connection would be a
        # session of its own
        deadline = time.monotonic() + h.TIMEOUT
        while b"Listening on" not in self.launcher_log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise Fail("%s did not start: %r" % (name, self.launcher_log()[-300:]))
            time.sleep(0.02)

    def launcher_log(self):
        with open(self.logpath, "rb") as f:
            return f.read()

    def stop(self):
        C.Launcher(self.h, self.case, self.proc, self.port, self.logpath, self.name).stop()
        self.log.shutdown(socket.SHUT_RDWR)
        self.reader.join(10)
        self.log.close()

    def _read(self):
        while True:
            try:
                m = self.log.recv(65536)
            except OSError:
                return
            if not m:
                return
            with self.cond:
                self.msgs.append(m)
                self.cond.notify_all()

    def ends(self):
        return sum(1 for t in self.texts() if t.startswith("session end:"))

    def wait_ends(self, n):
        """Waits until n sessions have logged their last line (session
        end: the parent logs it after its children are gone); returns
        the texts of every line so far."""
        with self.cond:
            if not self.cond.wait_for(lambda: self.ends() >= n, self.h.EXIT_TIMEOUT):
                raise Fail("%s: %d session end lines, expected %d: %r"
                           % (self.name, self.ends(), n, self.texts()))
        return self.texts()

    def mail_lines(self):
        """pop3d's lines (facility mail; PAM modules log as authpriv)."""
        out = []
        for m in list(self.msgs):
            r = SYSLOG_RE.match(m)
            if not r:
                raise Fail("%s: not a syslog line of pop3d: %r" % (self.name, m[:120]))
            if int(r.group(1)) >> 3 == 2:
                out.append(r)
        return out

    def wait_for(self, fn, what):
        """Waits until fn(texts) is true (the lines arrive as the sessions
        log them); returns the texts."""
        with self.cond:
            if not self.cond.wait_for(lambda: fn(self.texts()), self.h.EXIT_TIMEOUT):
                raise Fail("%s: %s never came: %r" % (self.name, what, self.texts()))
        return self.texts()

    def texts(self):
        return [r.group(4).decode("utf-8", "replace") for r in self.mail_lines()]

    def file_lines(self, host="mailhost"):
        """The lines as rsyslog writes them to /var/log/mail.log."""
        out = []
        for r in self.mail_lines():
            out.append("%s %s pop3d[%s]: %s" % (r.group(2).decode(), host, r.group(3).decode(),
                                               r.group(4).decode("utf-8", "replace")))
        return out

    def sanitizer_check(self):
        san = C.Launcher(self.h, self.case, self.proc, self.port, self.logpath,
                         self.name).sanitizer_reports()
        if san:
            raise Fail("sanitizer report: " + "; ".join(san))


def talk(h, addr, port, data, src=None):
    """Sends data at once and reads until the server closes; returns what
    it sent (a reset after the server's last reply counts as a close)."""
    c = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
    c.settimeout(h.TIMEOUT)
    if src:
        c.bind((src, 0))
    c.connect((addr, port))
    out = b""
    try:
        c.sendall(data)
        while True:
            d = c.recv(65536)
            if not d:
                break
            out += d
    except ConnectionResetError:
        pass
    finally:
        c.close()
    return out


def v1(src=CLIENT, dst="127.0.0.1", sport=40000, dport=110, proto="TCP4"):
    return ("PROXY %s %s %s %d %d\r\n" % (proto, src, dst, sport, dport)).encode()


def v2(src, dst, sport, dport, tlvs=b"", cmd=1):
    fam = 0x11 if ":" not in src else 0x21
    af = socket.AF_INET if fam == 0x11 else socket.AF_INET6
    block = socket.inet_pton(af, src) + socket.inet_pton(af, dst) + \
        sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + tlvs
    return V2SIG + bytes([0x20 | cmd, fam]) + len(block).to_bytes(2, "big") + block


def seed(h, case, name=None):
    p = os.path.join(case, "mail", name or h.ENV.vuser)
    shutil.copy(os.path.join(h.FIX, "seed.mbox"), p)
    if h.ROOT:
        os.chown(p, h.ENV.u1.pw_uid, h.ENV.u1.pw_gid)
    return p


def login_script(h, password=None):
    return ("USER %s\r\nPASS Wrong-7\r\nUSER %s\r\nPASS %s\r\nSTAT\r\nQUIT\r\n"
            % (h.ENV.vuser, h.ENV.vuser, password or h.ENV.vpw)).encode()


LOGIN_REPLIES = (b"+OK pop3d ready.\r\n+OK\r\n-ERR [AUTH] Authentication failed.\r\n"
                 b"+OK\r\n+OK Logged in.\r\n+OK 3 2086\r\n+OK Logging out.\r\n")


def expect_lines(texts, pats, where):
    """Each pattern matches a whole line, in this order."""
    i = 0
    for pat in pats:
        while i < len(texts) and not re.fullmatch(pat, texts[i]):
            i += 1
        if i == len(texts):
            raise Fail("%s: no line /%s/ in order in %r" % (where, pat, texts))
        i += 1


def proxied_session(h, mode, header, client, via="127.0.0.1"):
    case = h.ENV.new_case(mode)
    seed(h, case)
    srv = Server(h, case, ["--proxy-from", "127.0.0.1,::1"], mode=mode)
    try:
        out = talk(h, "127.0.0.1", srv.port, header + login_script(h))
        texts = srv.wait_ends(1)
    finally:
        srv.stop()
    if out != LOGIN_REPLIES:
        raise Fail("replies %r" % out)
    frm = r"%s via %s" % (re.escape(client), re.escape(via))
    u = re.escape(h.ENV.vuser)
    expect_lines(texts, [r"connect from " + frm,
                         r"login failed: user=%s from %s" % (u, frm),
                         r"login: user=%s .*" % u,
                         r"session end: user=%s .* quit from %s" % (u, frm)], "syslog")
    bad = [t for t in texts if re.search(r"from %s(?! via)" % re.escape(via), t)]
    if bad and client != via:
        raise Fail("a line names the proxy as the client: %r" % bad)
    srv.sanitizer_check()


# ------------------------------------------------------------------ cases

def case_v1(h):
    proxied_session(h, "root", v1(), CLIENT)


def case_v1_user_mode(h):
    proxied_session(h, "user", v1(), CLIENT)


def tls_files(h, case, mode):
    """A self-signed EC certificate for 127.0.0.1 and its key, readable by
    the user the TLS process loads them as."""
    cert, key = os.path.join(case, "cert.pem"), os.path.join(case, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if mode == "user":
        for f in (cert, key):
            os.chown(f, h.ENV.u1.pw_uid, h.ENV.u1.pw_gid)
    return cert, key


def implicit_tls(h, mode):
    """Implicit TLS from a trusted proxy: the header comes in clear before
    the handshake (as HAProxy and nginx send it); the session inside TLS
    then names the header's client."""
    import ssl
    case = h.ENV.new_case(mode)
    seed(h, case)
    cert, key = tls_files(h, case, mode)
    srv = Server(h, case, ["--proxy-from", "127.0.0.1", "--tls-implicit",
                           "--tls-cert", cert, "--tls-key", key], mode=mode)
    ctx = ssl.create_default_context(cafile=cert)
    out = b""
    try:
        raw = socket.create_connection(("127.0.0.1", srv.port), timeout=h.TIMEOUT)
        raw.sendall(v1())
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as c:
            c.sendall(login_script(h))
            while True:
                d = c.recv(65536)
                if not d:
                    break
                out += d
        texts = srv.wait_ends(1)
    except ssl.SSLError as e:
        raise Fail("TLS after the header: %s" % e)
    finally:
        srv.stop()
    if out != LOGIN_REPLIES:
        raise Fail("replies %r" % out)
    frm = r"%s via 127\.0\.0\.1" % re.escape(CLIENT)
    u = re.escape(h.ENV.vuser)
    expect_lines(texts, [r"connect from " + frm,
                         r"login failed: user=%s from %s" % (u, frm),
                         r"session end: user=%s .* quit from %s tls=TLSv1\.3.*" % (u, frm)],
                 "syslog")
    srv.sanitizer_check()


def case_implicit_tls(h):
    implicit_tls(h, "root")


def case_implicit_tls_user_mode(h):
    implicit_tls(h, "user")


def case_v2_tlvs(h):
    tlvs = b"\x04\x00\x03pad" + b"\x05\x00\x08uniqueid"     # NOOP, UNIQUE_ID
    proxied_session(h, "root", v2("198.51.100.9", "127.0.0.1", 50000, 110, tlvs),
                    "198.51.100.9")


def case_v2_ipv6(h):
    proxied_session(h, "root", v2("2001:db8::7", "2001:db8::1", 50000, 110), "2001:db8::7")


def case_v1_mapped_client(h):
    """A TCP6 header naming an IPv4-mapped client: logged as IPv4."""
    proxied_session(h, "root", v1("::ffff:198.51.100.7", "::1", proto="TCP6"), CLIENT)


def case_mapped_peer(h):
    """The proxy reaches a dual-stack listener over IPv4: the peer is
    ::ffff:127.0.0.1, which --proxy-from 127.0.0.1 must trust."""
    case = h.ENV.new_case("root")
    seed(h, case)
    port = free_port("127.0.0.1")
    try:
        srv = Server(h, case, ["--proxy-from", "127.0.0.1"], port=port, listen="[::]:%d" % port)
    except Fail as e:
        raise Fail("no dual-stack listener here: %s" % e)
    try:
        out = talk(h, "127.0.0.1", port, v1() + b"QUIT\r\n")
        texts = srv.wait_ends(1)
    finally:
        srv.stop()
    if out != b"+OK pop3d ready.\r\n+OK Logging out.\r\n":
        raise Fail("replies %r" % out)
    expect_lines(texts, [r"connect from %s via (::ffff:)?127\.0\.0\.1" % CLIENT], "syslog")


def case_ipv6_peer(h):
    """A proxy reaching pop3d over IPv6 (::1), trusted through an IPv6
    prefix, naming an IPv6 client."""
    if not socket.has_ipv6:
        raise Fail("no IPv6 here")
    case = h.ENV.new_case("root")
    seed(h, case)
    port = free_port("127.0.0.1")
    srv = Server(h, case, ["--proxy-from", "10.0.0.0/8,::1/128"], port=port,
                 listen="[::1]:%d" % port)
    try:
        out = talk(h, "::1", port, v1("2001:db8::77", "::1", proto="TCP6") +
                   login_script(h))
        texts = srv.wait_ends(1)
    finally:
        srv.stop()
    if out != LOGIN_REPLIES:
        raise Fail("replies %r" % out)
    expect_lines(texts, [r"connect from 2001:db8::77 via ::1",
                         r"login failed: user=%s from 2001:db8::77 via ::1" % re.escape(h.ENV.vuser)],
                 "syslog")


def case_pam_rhost(h):
    """PAM sees the client, not the proxy, as PAM_RHOST (pam_exec records
    it, in front of pam_matrix)."""
    pam_exec = h.find_lib("/usr/lib/*/security/pam_exec.so")
    matrix = h.find_lib("/usr/lib/*/pam_wrapper/pam_matrix.so")
    if not (pam_exec and matrix and h.ENV.pam_ok):
        raise Fail("pam_exec or pam_wrapper/pam_matrix missing")
    case = h.ENV.new_case("root")
    seed(h, case, h.ENV.user)
    pamdir = os.path.join(case, "pam")
    os.mkdir(pamdir, 0o755)
    record = os.path.join(case, "rhost.txt")
    script = os.path.join(case, "rhost.sh")
    with open(script, "w") as f:
        f.write('#!/bin/sh\necho "$PAM_RHOST" >> %s\n' % record)
    os.chmod(script, 0o755)
    passdb = os.path.join(h.ENV.pamdir, "passdb")
    with open(os.path.join(pamdir, "pop3d"), "w") as f:
        f.write("auth optional %s quiet %s\nauth required %s passdb=%s\n"
                "account required %s passdb=%s\n" % (pam_exec, script, matrix, passdb,
                                                     matrix, passdb))
    env = {k: v for k, v in h.ENV.session_env(pam=True).items()
           if "WRAPPER" in k or k == "LD_PRELOAD"}
    env["PAM_WRAPPER_SERVICE_DIR"] = pamdir
    srv = Server(h, case, ["--proxy-from", "127.0.0.1"], env=env)
    try:
        out = talk(h, "127.0.0.1", srv.port, v1() + (
            "USER %s\r\nPASS %s\r\nQUIT\r\n" % (h.ENV.user, h.ENV.pw)).encode())
        srv.wait_ends(1)
    finally:
        srv.stop()
    if not out.endswith(b"+OK Logged in.\r\n+OK Logging out.\r\n"):
        raise Fail("replies %r" % out)
    with open(record) as f:
        seen = f.read().split()
    if seen != [CLIENT]:
        raise Fail("PAM_RHOST was %r, expected [%r]" % (seen, CLIENT))


def case_local(h):
    """v2 LOCAL (a health check): greeted, QUIT answered, logged as the
    proxy's own connection."""
    case = h.ENV.new_case("root")
    srv = Server(h, case, ["--proxy-from", "127.0.0.1"])
    try:
        out = talk(h, "127.0.0.1", srv.port, V2SIG + b"\x20\x00\x00\x00QUIT\r\n")
        texts = srv.wait_ends(1)
    finally:
        srv.stop()
    if out != b"+OK pop3d ready.\r\n+OK Logging out.\r\n":
        raise Fail("replies %r" % out)
    expect_lines(texts, [r"connect from 127\.0\.0\.1 \(proxy LOCAL\)",
                         r"session end: user=- .* quit from 127\.0\.0\.1 \(proxy LOCAL\)"],
                 "syslog")


def refused_header(h, data, reason, args=(), close=False):
    """A trusted peer that does not start with a valid header gets no
    greeting, one -ERR, and no session."""
    case = h.ENV.new_case("root")
    seed(h, case)
    srv = Server(h, case, ["--proxy-from", "127.0.0.1"] + list(args))
    t0 = time.monotonic()
    try:
        c = socket.create_connection(("127.0.0.1", srv.port), h.TIMEOUT)
        c.sendall(data)
        if close:
            c.shutdown(socket.SHUT_WR)
        out = b""
        try:
            while True:
                d = c.recv(4096)
                if not d:
                    break
                out += d
        except ConnectionResetError:
            pass
        c.close()
        took = time.monotonic() - t0
        texts = srv.wait_ends(1)
    finally:
        srv.stop()
    if out != b"-ERR PROXY protocol header expected.\r\n":
        raise Fail("replies %r" % out)
    expect_lines(texts, [r"bad PROXY header from trusted proxy 127\.0\.0\.1: %s" % reason,
                         r"session end: user=- .* PROXY header refused from 127\.0\.0\.1"],
                 "syslog")
    if any(t.startswith("connect from") or t.startswith("login") for t in texts):
        raise Fail("a session began: %r" % texts)
    return took


def case_no_header(h):
    refused_header(h, ("USER %s\r\nPASS %s\r\n" % (h.ENV.vuser, h.ENV.vpw)).encode(),
                   "the connection does not start with one")


def case_bad_v1(h):
    refused_header(h, b"PROXY TCP4 198.51.100.007 127.0.0.1 1 110\r\nQUIT\r\n",
                   "v1 address is not a canonical address of the announced family")


def case_oversize_v2(h):
    refused_header(h, V2SIG + b"\x21\x11\x07\xd0" + b"\0" * 2000,
                   "the connection does not start with one")


def case_v1_no_crlf(h):
    refused_header(h, b"PROXY UNKNOWN " + b"f" * 200, "the connection does not start with one")


def case_cut_header(h):
    refused_header(h, b"PROXY TCP4 198.51.100.7 12", "connection closed before a whole header",
                   close=True)


def case_header_timeout(h):
    """Bounded in time: a trusted peer that sends nothing is dropped after
    --auth-timeout (when shorter than POP3D_PROXY_TIMEOUT)."""
    took = refused_header(h, b"", "none within the time limit", ["--auth-timeout", "2"])
    if took < 1.9 or took > 2 + h.LATE:
        raise Fail("dropped after %.2f s, expected 2 s" % took)


def case_untrusted(h):
    """--proxy-from set, the peer not in it: a PROXY line is refused,
    logged with the real peer, and the session ends."""
    case = h.ENV.new_case("root")
    seed(h, case)
    srv = Server(h, case, ["--proxy-from", "10.0.0.0/8,2001:db8::/32"])
    try:
        out = talk(h, "127.0.0.1", srv.port, v1() + b"USER x\r\n")
        texts = srv.wait_ends(1)
    finally:
        srv.stop()
    if out != (b"+OK pop3d ready.\r\n"
               b"-ERR PROXY header from an address not in --proxy-from.\r\n"):
        raise Fail("replies %r" % out)
    expect_lines(texts, [r"connect from 127\.0\.0\.1",
                         r"refused PROXY header from 127\.0\.0\.1: not in --proxy-from",
                         r"session end: user=- .* PROXY header refused from 127\.0\.0\.1"],
                 "syslog")
    if any(CLIENT in t for t in texts):
        raise Fail("the untrusted header's address reached the log: %r" % texts)


def case_client_sends_proxy(h):
    """Behind a trusted proxy the client itself sends a PROXY line (a
    spoofing attempt through HAProxy): refused, and logged with that
    client, never the proxy, which fail2ban must not ban."""
    case = h.ENV.new_case("root")
    srv = Server(h, case, ["--proxy-from", "127.0.0.1"])
    try:
        out = talk(h, "127.0.0.1", srv.port, v1("198.51.100.24") + v1("203.0.113.5") +
                   b"USER x\r\n")
        texts = srv.wait_ends(1)
    finally:
        srv.stop()
    if out != (b"+OK pop3d ready.\r\n"
               b"-ERR PROXY header from an address not in --proxy-from.\r\n"):
        raise Fail("replies %r" % out)
    # the parent logs the connect line, the pre-auth child the refusal:
    # either may come first
    expect_lines(texts, [r"connect from 198\.51\.100\.24 via 127\.0\.0\.1"], "syslog")
    expect_lines(texts, [r"refused PROXY header from 198\.51\.100\.24 via 127\.0\.0\.1: "
                         r"a second one, from the client",
                         r"session end: user=- .* PROXY header refused from 198\.51\.100\.24 "
                         r"via 127\.0\.0\.1"], "syslog")
    if any("203.0.113.5" in t for t in texts):
        raise Fail("the second header's address reached the log: %r" % texts)


def case_without_option(h):
    """Without --proxy-from a PROXY line is an unknown command."""
    case = h.ENV.new_case("root")
    srv = Server(h, case, [])
    try:
        out = talk(h, "127.0.0.1", srv.port, v1() + b"QUIT\r\n")
        texts = srv.wait_ends(1)
    finally:
        srv.stop()
    if out != b"+OK pop3d ready.\r\n-ERR Unknown command.\r\n+OK Logging out.\r\n":
        raise Fail("replies %r" % out)
    if any("PROXY" in t or CLIENT in t for t in texts):
        raise Fail("log %r" % texts)


def case_option_errors(h):
    """Bad --proxy-from values: exit 2 with the reason."""
    for val, why in (("10.0.0.1/8", "bits are set past the prefix length"),
                     ("localhost", "not an IPv4 or IPv6 address"),
                     ("10.0.0.0/33", "prefix length"), ("", "not an IPv4")):
        p = subprocess.run([h.ENV.pop3d, "--proxy-from", val], capture_output=True,
                           stdin=subprocess.DEVNULL, timeout=30)
        if p.returncode != 2 or why.encode() not in p.stderr:
            raise Fail("--proxy-from %r: exit %d, %r" % (val, p.returncode, p.stderr[:200]))


# ---------------------------------------------------------------- fail2ban

def case_fail2ban(h):
    """examples/fail2ban/filter.d/pop3d.conf, run by fail2ban-regex over the
    syslog lines of: a proxied client failing three logins (3 failures and
    the session end), one sending 20 bad commands (the session end), a
    direct client failing once, a spoofed PROXY line from an untrusted
    peer and one from a client behind the proxy; and a good login, a LOCAL
    check and a bad header from the proxy, which must not match."""
    f2b = shutil.which("fail2ban-regex")
    if not f2b:
        raise Fail("fail2ban-regex is not installed (package fail2ban; tests/deps.sh)")
    case = h.ENV.new_case("root")
    seed(h, case)
    srv = Server(h, case, ["--proxy-from", "127.0.0.1,::1"], name="proxied")
    other = Server(h, case, ["--proxy-from", "10.0.0.0/8"], name="direct")
    try:
        three = ("USER %s\r\nPASS a\r\nUSER %s\r\nPASS b\r\nUSER nobody\r\nPASS c\r\n"
                 % (h.ENV.vuser, h.ENV.vuser)).encode()
        talk(h, "127.0.0.1", srv.port, v1("198.51.100.21") + three)
        talk(h, "127.0.0.1", srv.port, v2("2001:db8::22", "::1", 1, 110) + b"XYZZY\r\n" * 20)
        talk(h, "127.0.0.1", srv.port, v1("198.51.100.23") + login_script(h))
        talk(h, "127.0.0.1", srv.port, V2SIG + b"\x20\x00\x00\x00QUIT\r\n")
        talk(h, "127.0.0.1", srv.port, b"GARBAGE\r\n")
        talk(h, "127.0.0.1", srv.port, v1("198.51.100.24") + v1("203.0.113.5"))
        talk(h, "127.0.0.1", other.port, b"USER x\r\nPASS y\r\nQUIT\r\n")
        talk(h, "127.0.0.1", other.port, v1("203.0.113.9") + b"QUIT\r\n")
        srv.wait_ends(6)
        other.wait_ends(2)
    finally:
        srv.stop()
        other.stop()
    logfile = os.path.join(case, "mail.log")
    with open(logfile, "w") as f:
        f.write("\n".join(srv.file_lines() + other.file_lines()) + "\n")
    filt = h.ENV.reachable(os.path.join(h.TOP, "examples", "fail2ban", "filter.d", "pop3d.conf"))
    fdir = os.path.join(case, "fail2ban", "filter.d")
    os.makedirs(fdir)
    shutil.copy(filt, fdir)
    # the filter includes common.conf from Debian's configuration
    for inc in ("common.conf",):
        shutil.copy(os.path.join("/etc/fail2ban/filter.d", inc), fdir)
    p = subprocess.run([f2b, "--print-all-matched", logfile,
                        os.path.join(fdir, "pop3d.conf")],
                       capture_output=True, timeout=120)
    text = p.stdout.decode("utf-8", "replace")
    if p.returncode != 0:
        raise Fail("fail2ban-regex exit %d: %s" % (p.returncode, text[-400:]))
    if os.environ.get("F2B_SHOW"):
        print(text)
    check_f2b(text)


def check_f2b(text):
    """fail2ban-regex --print-all-matched lists the matched lines; the
    expected counts by client: 4 for .21 (3 failures + the session end), 1
    for 2001:db8::22 (bad commands), 1 for .23 (one failure), 2 for
    127.0.0.1 direct (the failed login and the spoofed PROXY line), 1 for
    .24 (its PROXY line through the proxy); none for the proxy's own
    lines."""
    m = re.search(r"Lines: (\d+) lines, (\d+) ignored, (\d+) matched, (\d+) missed", text)
    if not m:
        raise Fail("no summary in the fail2ban-regex output: %s" % text[-400:])
    if int(m.group(3)) != 9:
        raise Fail("%s lines matched, expected 9: %s" % (m.group(3), text[-1500:]))
    sect = text[text.index("|- Matched line(s):"):text.index("|- Missed line(s):")] \
        if "|- Missed line(s):" in text else text
    counts = {}
    for line in sect.splitlines():
        if "pop3d[" not in line:
            continue
        tail = line.split("pop3d[", 1)[1]
        ip = re.search(r"from (\S+?)(?: via \S+)?$|PROXY header from (\S+?)(?: via \S+)?: ",
                       tail)
        if ip:
            key = ip.group(1) or ip.group(2)
            counts[key] = counts.get(key, 0) + 1
    want = {"198.51.100.21": 4, "2001:db8::22": 1, "198.51.100.23": 1, "127.0.0.1": 2,
            "198.51.100.24": 1}
    if counts != want:
        raise Fail("matched lines by client %r, expected %r" % (counts, want))
    # the user name is on the lines: each failure's, and the last one tried
    # on the line of a session ended by failures
    for pat in (r"login failed: user=safeer from 198\.51\.100\.21 via",
                r"login failed: user=nobody from 198\.51\.100\.21 via",
                r"session end: user=nobody .* auth failures from 198\.51\.100\.21 via",
                r"login failed: user=x from 127\.0\.0\.1$"):
        if not re.search("(?m)" + pat, sect):
            raise Fail("no matched line /%s/" % pat)


def tests(h):
    cases = [("proxy/v1", case_v1), ("proxy/v1-user-mode", case_v1_user_mode),
             ("proxy/v2-tlvs", case_v2_tlvs), ("proxy/v2-ipv6", case_v2_ipv6),
             ("proxy/v1-mapped-client", case_v1_mapped_client),
             ("proxy/mapped-peer", case_mapped_peer), ("proxy/ipv6-peer", case_ipv6_peer),
             ("proxy/pam-rhost", case_pam_rhost),
             ("proxy/v2-local", case_local), ("proxy/trusted-no-header", case_no_header),
             ("proxy/trusted-bad-v1", case_bad_v1), ("proxy/trusted-oversize-v2", case_oversize_v2),
             ("proxy/trusted-v1-no-crlf", case_v1_no_crlf),
             ("proxy/trusted-cut-header", case_cut_header),
             ("proxy/trusted-timeout", case_header_timeout),
             ("proxy/untrusted-refused", case_untrusted),
             ("proxy/client-sends-proxy", case_client_sends_proxy),
             ("proxy/without-option", case_without_option),
             ("proxy/option-errors", case_option_errors),
             ("proxy/fail2ban-regex", case_fail2ban),
             ("proxy/implicit-tls", case_implicit_tls),
             ("proxy/implicit-tls-user-mode", case_implicit_tls_user_mode)]
    for name, fn in cases:
        if not h.wanted(name):
            continue
        if not h.ROOT and name != "proxy/option-errors":
            skip(h, name, "needs root (mount namespaces for /dev/log, root mode)")
            continue
        if not shutil.which("systemd-socket-activate"):
            skip(h, name, "systemd-socket-activate is not installed (package systemd)")
            continue
        run_case(h, name, fn)


def run_case(h, name, fn):
    try:
        fn(h)
        h.report(name, True)
    except (Fail, h.Fail, OSError, subprocess.SubprocessError) as e:
        h.report(name, False, "%s: %s" % (type(e).__name__, e), h.diag_for(h.ENV.work, name))
