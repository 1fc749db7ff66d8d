# tests/suites/frontends.py: pop3d behind the proxies administrators put
# in front when one host is not enough (issue 14), with the shipped
# examples: HAProxy in TCP mode with send-proxy-v2 (examples/haproxy), and
# nginx's mail proxy with proxy_protocol and auth_http answered by nginx
# itself (examples/nginx).  Two backends on 127.0.0.2 and 127.0.0.3 under
# systemd-socket-activate, each with its own maildrops and --proxy-from
# 127.0.0.1 (the proxies connect from there); clients connect from
# 127.0.0.9 and 127.0.0.10.  Each user lands on its backend, the
# backend's syslog names the real client, a wrong password is refused,
# RETR and DELE+QUIT work through the proxy.
import importlib.util
import os
import poplib
import re
import shutil
import socket
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("suite_proxy_helpers",
                                               os.path.join(HERE, "proxy.py"))
P = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(P)
C, Fail = P.C, P.Fail

B1, B2 = "127.0.0.2", "127.0.0.3"          # backends
F1, F2 = "127.0.0.4", "127.0.0.5"          # HAProxy's two addresses
CL1, CL2 = "127.0.0.9", "127.0.0.10"       # clients


class POP3From(poplib.POP3):
    """poplib from a chosen source address."""

    def __init__(self, host, port, src, timeout):
        self.src = src
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self.src, 0))


def free_port_on(*addrs):
    """A port free on every one of addrs."""
    for _ in range(50):
        port = P.free_port(addrs[0])
        try:
            for a in addrs[1:]:
                with socket.socket() as s:
                    s.bind((a, port))
            return port
        except OSError:
            continue
    raise Fail("no port free on %s" % (addrs,))


class Backends:
    """Two pop3d backends: b1 holds $VUSER's maildrop, b2 $VUSER64's."""

    def __init__(self, h, case):
        self.h, self.case = h, case
        self.port = free_port_on(B1, B2)
        self.users = {"b1": h.ENV.vuser, "b2": h.ENV.vuser64}
        self.pw = {h.ENV.vuser: h.ENV.vpw, h.ENV.vuser64: h.ENV.vpw64}
        self.srv, self.mbox = {}, {}
        for name, addr in (("b1", B1), ("b2", B2)):
            mail = os.path.join(case, "mail-" + name)
            state = os.path.join(case, "state-" + name)
            os.mkdir(mail, 0o1777)
            os.chmod(mail, 0o1777)
            os.mkdir(state, 0o700)
            self.mbox[name] = P.seed(h, case, "../mail-%s/%s" % (name, self.users[name]))
            self.srv[name] = P.Server(h, case, ["--mailbox", os.path.join(mail, "%u"),
                                                "--state-dir", state,
                                                "--proxy-from", "127.0.0.1"],
                                      addr=addr, name=name, port=self.port)

    def stop(self):
        for s in self.srv.values():
            s.stop()

    def session(self, host, port, src, user, dele=True):
        """Through the proxy: a wrong password, then the right one, STAT,
        RETR 1, DELE 1, QUIT."""
        h = self.h
        c = POP3From(host, port, src, h.TIMEOUT)
        c.user(user)
        try:
            c.pass_("Wrong-Password-9")
            raise Fail("a wrong password was taken")
        except poplib.error_proto as e:
            if b"[AUTH]" not in e.args[0]:
                raise Fail("wrong password answered %r" % e.args[0])
        try:
            c.quit()
        except (poplib.error_proto, OSError):
            pass                        # nginx closes after a refused login
        c = POP3From(host, port, src, h.TIMEOUT)
        c.user(user)
        c.pass_(self.pw[user])
        if c.stat() != (3, 2086):
            raise Fail("STAT %r for %s" % (c.stat(), user))
        with open(os.path.join(h.FIX, "seed.mbox"), "rb") as f:
            want = h.model_messages(f.read())[0]
        if c.retr(1)[1] != want:
            raise Fail("RETR 1 differs")
        c.dele(1)
        r = c.quit()
        if r != b"+OK Logging out, messages deleted.":
            raise Fail("QUIT answered %r" % r)

    def check(self, client_of):
        """Each user's backend logged its sessions from the real client;
        the other backend never saw the user; the maildrop lost message 1."""
        for name, srv in self.srv.items():
            user = self.users[name]
            other = [u for n, u in self.users.items() if n != name][0]
            client = client_of[name]
            frm = r"%s via 127\.0\.0\.1" % re.escape(client)
            u = re.escape(user)
            last = r"session end: user=%s retr=1/501 del=1/501 left=2/1585 quit from %s" % (u, frm)
            texts = srv.wait_for(lambda t: any(re.fullmatch(last, x) for x in t),
                                 "the end of %s's session" % user)
            P.expect_lines(texts, [r"connect from " + frm,
                                   r"login failed: user=%s from %s" % (u, frm),
                                   r"connect from " + frm,
                                   r"login: user=%s .*" % u,
                                   last], name)
            if any(other in t for t in texts):
                raise Fail("%s saw %s, who lives on the other backend" % (name, other))
            if any(re.search(r"from 127\.0\.0\.1(?! \(proxy)", t) for t in texts
                   if "via" not in t):
                raise Fail("%s logged the proxy as a client: %r" % (name, texts))
            if os.environ.get("SHOW_LOGS"):
                print("\n".join("    %s: %s" % (name, t) for t in texts))
            C.expect_mbox(self.h, self.mbox[name], self.h.read_fixtures(["seed-23.mbox"]),
                          "%s after DELE 1 and QUIT" % name)
            srv.sanitizer_check()


def adapt(h, path, subs):
    """The shipped example with the test's addresses: each (old, new) must
    occur in it."""
    with open(os.path.join(h.TOP, path)) as f:
        text = f.read()
    for old, new in subs:
        if old not in text:
            raise Fail("%s no longer has %r" % (path, old))
        text = text.replace(old, new)
    return text


def start(h, case, name, argv, port, addr="127.0.0.1"):
    logpath = os.path.join(case, "stderr-" + name)
    with open(logpath, "wb") as f:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=f,
                                start_new_session=True, cwd=case)
    lau = C.Launcher(h, case, proc, port, logpath, name)
    deadline = time.monotonic() + h.TIMEOUT
    while True:
        with socket.socket() as s:
            # a listening check that opens no connection: bind fails
            try:
                s.bind((addr, port))
            except OSError:
                return lau
        if proc.poll() is not None or time.monotonic() > deadline:
            lau.stop()
            with open(logpath, "rb") as f:
                raise Fail("%s did not start: %r" % (name, f.read()[-400:]))
        time.sleep(0.02)


# ------------------------------------------------------------------ HAProxy

def haproxy_conf(h, case, fport, bport):
    stats = os.path.join(case, "haproxy.sock")
    text = adapt(h, "examples/haproxy/haproxy.cfg", [
        ("\tlog /dev/log local0\n", "\tstats socket %s mode 600 level admin\n" % stats),
        ("\tlog global\n\toption tcplog\n", ""),
        ("bind 192.0.2.1:110", "bind %s:%d" % (F1, fport)),
        ("bind 192.0.2.2:110", "bind %s:%d" % (F2, fport)),
        ("dst 192.0.2.1", "dst " + F1),
        ("source 10.0.0.10", "source 127.0.0.1"),
        ("10.0.0.11:110", "%s:%d" % (B1, bport)),
        ("10.0.0.12:110", "%s:%d" % (B2, bport)),
        ("inter 10s", "inter 1s"),
        # a check waits as long as a session may take to answer: under
        # valgrind and load a greeting can take seconds, and a backend
        # marked DOWN closes the test's connections
        ("\ttimeout connect 5s\n",
         "\ttimeout connect 5s\n\ttimeout check %ds\n" % int(h.TIMEOUT))])
    path = os.path.join(case, "haproxy.cfg")
    with open(path, "w") as f:
        f.write(text)
    return path, stats


def haproxy_stat(stats):
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(stats)
        s.sendall(b"show stat\n")
        out = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
    rows = out.decode().splitlines()
    head = rows[0].lstrip("# ").split(",")
    return [dict(zip(head, r.split(","))) for r in rows[1:] if r]


def wait_checks(h, stats):
    """Both servers UP by their tcp-check (L7OK: the greeting and QUIT's
    +OK came back through a PROXY header of HAProxy's checks)."""
    deadline = time.monotonic() + h.TIMEOUT
    while True:
        try:
            st = {r["svname"]: (r["status"], r["check_status"]) for r in haproxy_stat(stats)
                  if r["svname"] in ("pop1", "pop2")}
        except (FileNotFoundError, ConnectionRefusedError) as e:
            st = str(e)                 # the stats socket is not there yet
        if st == {"pop1": ("UP", "L7OK"), "pop2": ("UP", "L7OK")}:
            return
        if time.monotonic() > deadline:
            raise Fail("health checks: %r" % st)
        time.sleep(0.1)


def case_haproxy(h):
    if not shutil.which("haproxy"):
        raise Fail("haproxy is not installed (tests/deps.sh installs it)")
    case = h.ENV.new_case("root")
    be = Backends(h, case)
    lb = None
    try:
        fport = free_port_on(F1, F2)
        cfg, stats = haproxy_conf(h, case, fport, be.port)
        p = subprocess.run(["haproxy", "-c", "-f", cfg], capture_output=True, timeout=30)
        if p.returncode:
            raise Fail("haproxy -c: %r" % (p.stdout + p.stderr)[-300:])
        lb = start(h, case, "haproxy", ["haproxy", "-db", "-f", cfg], fport, F1)
        wait_checks(h, stats)
        be.session(F1, fport, CL1, h.ENV.vuser)
        be.session(F2, fport, CL2, h.ENV.vuser64)
        be.check({"b1": CL1, "b2": CL2})
        # HAProxy's checks send v2 LOCAL: answered as its own connections
        for name, srv in be.srv.items():
            if not any(re.fullmatch(r"connect from 127\.0\.0\.1 \(proxy LOCAL\)", t)
                       for t in srv.texts()):
                raise Fail("%s: no health check seen: %r" % (name, srv.texts()))
    finally:
        if lb:
            lb.stop()
        be.stop()


# -------------------------------------------------------------------- nginx

def nginx_conf(h, case, fport, authport, bport):
    text = adapt(h, "examples/nginx/nginx.conf", [
        ("load_module modules/ngx_mail_module.so;",
         "load_module /usr/lib/nginx/modules/ngx_mail_module.so;\n"
         "pid %s/nginx.pid;\nerror_log stderr info;\ndaemon off;" % case),
        ("worker_processes auto;", "worker_processes 1;"),
        ("\t\talice\t\t10.0.0.11;", "\t\t%s\t\t%s;" % (h.ENV.vuser, B1)),
        ("\t\tbob\t\t10.0.0.12;", "\t\t%s\t\t%s;" % (h.ENV.vuser64, B2)),
        ("listen 127.0.0.1:9110;", "listen 127.0.0.1:%d;" % authport),
        ("auth_http 127.0.0.1:9110/auth;", "auth_http 127.0.0.1:%d/auth;" % authport),
        ("add_header Auth-Port 110;", "add_header Auth-Port %d;" % bport),
        ("\t\tlisten 110;", "\t\tlisten 127.0.0.1:%d;" % fport)])
    # temporary files of the http module: in the case, not /var/lib/nginx
    text = text.replace("http {\n", "http {\n\tclient_body_temp_path %s/nginx-tmp;\n"
                        "\tproxy_temp_path %s/nginx-tmp;\n\tfastcgi_temp_path %s/nginx-tmp;\n"
                        "\tuwsgi_temp_path %s/nginx-tmp;\n\tscgi_temp_path %s/nginx-tmp;\n"
                        % ((case,) * 5), 1)
    path = os.path.join(case, "nginx.conf")
    with open(path, "w") as f:
        f.write(text)
    return path


def case_nginx(h):
    if not shutil.which("nginx") or not os.path.exists(
            "/usr/lib/nginx/modules/ngx_mail_module.so"):
        raise Fail("nginx or libnginx-mod-mail is not installed (tests/deps.sh installs them)")
    case = h.ENV.new_case("root")
    be = Backends(h, case)
    ng = None
    try:
        fport = P.free_port("127.0.0.1")
        authport = P.free_port("127.0.0.1")
        cfg = nginx_conf(h, case, fport, authport, be.port)
        p = subprocess.run(["nginx", "-t", "-p", case, "-c", cfg], capture_output=True,
                           timeout=30)
        if p.returncode:
            raise Fail("nginx -t: %r" % (p.stdout + p.stderr)[-400:])
        ng = start(h, case, "nginx", ["nginx", "-p", case, "-c", cfg], fport)
        be.session("127.0.0.1", fport, CL1, h.ENV.vuser)
        be.session("127.0.0.1", fport, CL2, h.ENV.vuser64)
        be.check({"b1": CL1, "b2": CL2})
        # a user the map does not know never reaches a backend
        c = POP3From("127.0.0.1", fport, CL1, h.TIMEOUT)
        c.user("nosuchuser")
        try:
            c.pass_("x")
            raise Fail("nginx let an unknown user in")
        except poplib.error_proto:
            pass
    finally:
        if ng:
            ng.stop()
        be.stop()


def protocol_errors_fail(h, fn):
    """A POP3 error the case did not expect fails the case, not the run."""
    try:
        fn(h)
    except poplib.error_proto as e:
        raise Fail("unexpected POP3 reply: %s" % e) from e


def tests(h):
    for name, fn in (("frontends/haproxy", case_haproxy), ("frontends/nginx", case_nginx)):
        if not h.wanted(name):
            continue
        if not h.ROOT:
            P.skip(h, name, "needs root (mount namespaces, root-mode backends)")
            continue
        P.run_case(h, name, lambda h, fn=fn: protocol_errors_fail(h, fn))
