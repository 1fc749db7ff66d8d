# tests/suites/tls_clients.py: the real mail clients of Debian over TLS,
# against pop3d behind the shipped launcher files on 127.0.0.1: STLS on
# the xinetd.d/pop3d service with its commented TLS options, implicit TLS
# (pop3s) through xinetd.d/pop3s, both under a real xinetd as root (else
# systemd-socket-activate in user mode, with the same options).
#
# A throwaway PKI made with the `openssl` command: a root CA, an
# intermediate CA and a server certificate for 127.0.0.1 and localhost.
# The certificate file holds the server certificate and the intermediate
# (a chain, as sites install it); the clients trust only the root, so the
# chain must be sent.  Every client runs with its certificate checks on and
# the test CA added: Python's poplib (stls(), POP3_SSL) with a default
# SSL context, curl (--ssl-reqd pop3://, pop3s://) with --cacert,
# fetchmail (sslcertck, sslcertfile), mpop (tls on, tls_trust_file) and
# getmail6 (SimplePOP3SSLRetriever, ca_certs).  The cases are those of
# tests/suites/clients.py: each client gets exactly the maildrop's messages,
# deletions happen at QUIT only, UIDL-tracking clients fetch only new mail.
#
# That an STLS client really used TLS follows from the launcher refusing
# plaintext logins, which is checked first on each STLS launcher.
import importlib.util
import os
import poplib
import re
import shlex
import shutil
import ssl
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("suite_clients_helpers_tls",
                                               os.path.join(HERE, "clients.py"))
C = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(C)
Fail = C.Fail

# --------------------------------------------------------------------- PKI

CA_EXT = ("basicConstraints=critical,CA:TRUE,pathlen:0\n"
          "keyUsage=critical,keyCertSign,cRLSign\n"
          "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
SERVER_EXT = ("basicConstraints=critical,CA:FALSE\n"
              "keyUsage=critical,digitalSignature\n"
              "extendedKeyUsage=serverAuth\n"
              "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
              "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")


def openssl(d, *args):
    p = subprocess.run(["openssl"] + list(args), cwd=d, capture_output=True, timeout=60)
    if p.returncode:
        raise Fail("openssl %s: exit %d: %r" % (args[0], p.returncode, p.stderr[-300:]))


def new_key_csr(d, name, subject):
    """An EC P-256 key (what certbot makes by default) and its request."""
    openssl(d, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", name + ".key", "-out", name + ".csr", "-subj", subject)


def sign(d, name, ca, ext):
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write(ext)
    openssl(d, "x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey",
            ca + ".key", "-CAcreateserial", "-days", "2", "-sha256",
            "-extfile", name + ".ext", "-out", name + ".pem")


def make_pki(h, case):
    """Root CA -> intermediate CA -> server certificate.  Returns the paths:
    ca (the root, what clients trust), cert (server certificate and the
    intermediate, readable by all) and key (mode 0600, owned by whoever
    runs pop3d: root, or the runner in user mode)."""
    d = os.path.join(case, "pki")
    os.mkdir(d, 0o755)
    openssl(d, "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:P-256", "-nodes", "-keyout", "root.key", "-out", "root.pem",
            "-days", "2", "-sha256", "-subj", "/CN=pop3d tests root CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    new_key_csr(d, "int", "/CN=pop3d tests intermediate CA")
    sign(d, "int", "root", CA_EXT)
    new_key_csr(d, "server", "/CN=localhost")
    sign(d, "server", "int", SERVER_EXT)
    cert = os.path.join(d, "chain.pem")
    with open(cert, "wb") as out:
        for f in ("server.pem", "int.pem"):
            with open(os.path.join(d, f), "rb") as fi:
                out.write(fi.read())
    key = os.path.join(d, "server.key")
    os.chmod(key, 0o600)
    for f in ("root.pem", "chain.pem"):
        os.chmod(os.path.join(d, f), 0o644)
    return {"ca": os.path.join(d, "root.pem"), "cert": cert, "key": key}


# --------------------------------------------------------------- launchers

def read_top(h, *path):
    with open(os.path.join(h.TOP, *path)) as f:
        return f.read()


def tls_args(line, pki, what):
    """The options of a shipped server_args/ExecStart line with the test's
    certificate and key in place of the shipped paths."""
    argv = shlex.split(line)
    for opt, path in (("--tls-cert", pki["cert"]), ("--tls-key", pki["key"])):
        if argv.count(opt) != 1 or argv.index(opt) + 1 >= len(argv):
            raise Fail("%s does not give %s once: %s" % (what, opt, line))
        argv[argv.index(opt) + 1] = path
    return argv


def stls_shipped_args(h, pki):
    """The commented STLS line of xinetd.d/pop3d."""
    m = re.findall(r"(?m)^#\s*server_args\s*=\s*(--tls-cert .*)$",
                   read_top(h, "xinetd.d", "pop3d"))
    if len(m) != 1:
        raise Fail("xinetd.d/pop3d has %d commented STLS server_args lines" % len(m))
    return tls_args(m[0], pki, "xinetd.d/pop3d")


def pop3s_conf(h, port, pki, args):
    """The shipped xinetd.d/pop3s with only these changes: disable = no,
    the port, the server path, the test's certificate and key (and the
    session's options) on server_args, bind = 127.0.0.1 and type =
    UNLISTED.  Returns (the file's text, its TLS options)."""
    conf = read_top(h, "xinetd.d", "pop3s")
    m = re.findall(r"(?m)^\s+server_args\s*=\s*(.*)$", conf)
    if len(m) != 1:
        raise Fail("xinetd.d/pop3s has %d server_args lines" % len(m))
    shipped = tls_args(m[0], pki, "xinetd.d/pop3s")
    if "--tls-implicit" not in shipped:
        raise Fail("xinetd.d/pop3s lacks --tls-implicit: %s" % m[0])
    subs = [(r"(?m)^(\s*disable\s*=\s*)yes\s*$", r"\g<1>no"),
            (r"(?m)^(\s*port\s*=\s*)995\s*$", r"\g<1>%d" % port),
            (r"(?m)^(\s*server\s*=\s*)\S+\s*$", r"\g<1>" + h.ENV.pop3d),
            (r"(?m)^(\s+server_args\s*=\s*).*$",
             lambda mo: mo.group(1) + " ".join(shipped + args)),
            (r"(?m)^#(\s*bind\s*=\s*)127\.0\.0\.1\s*$",
             r"\g<1>127.0.0.1\n\ttype\t\t= UNLISTED")]
    for pat, rep in subs:
        conf, n = re.subn(pat, rep, conf)
        if n != 1:
            raise Fail("xinetd.d/pop3s has %d lines matching %s" % (n, pat))
    return conf, shipped


def start_pop3s_xinetd(h, case, pki, args):
    port = h.free_port()
    conf, _ = pop3s_conf(h, port, pki, args)
    cfile = os.path.join(case, "xinetd.conf")
    with open(cfile, "w") as f:
        f.write(conf)
    return C.launch(h, case, port, "xinetd",
                    ["xinetd", "-dontfork", "-f", cfile, "-pidfile",
                     os.path.join(case, "xinetd.pid")])


def start_tls_launcher(h, case, pki, implicit):
    """xinetd as root (xinetd.d/pop3s, or xinetd.d/pop3d with its STLS
    line), else systemd-socket-activate with the same TLS options."""
    mode = "root" if h.ROOT else "user"
    args = C.session_args(h, case, mode)
    if h.ROOT:
        if implicit:
            return start_pop3s_xinetd(h, case, pki, args)
        return C.start_xinetd(h, case, stls_shipped_args(h, pki) + args)
    if implicit:
        _, tls = pop3s_conf(h, 995, pki, [])
    else:
        tls = stls_shipped_args(h, pki)
    return C.start_socket_activate(h, case, [h.ENV.pop3d] + tls + args)


def expect_plaintext_refused(h, port):
    """On the STLS port: CAPA offers STLS, and a USER/PASS login before TLS
    is refused with [AUTH] (so a client that logged in used TLS)."""
    c = poplib.POP3("127.0.0.1", port, timeout=h.TIMEOUT)
    try:
        if "STLS" not in c.capa():
            raise Fail("CAPA before TLS does not offer STLS")
        try:
            c.user(h.ENV.vuser)
            c.pass_(h.ENV.vpw)
        except poplib.error_proto as e:
            if not str(e).startswith("b'-ERR [AUTH]"):
                raise Fail("a plaintext login was refused with %s, not -ERR [AUTH]" % e)
        else:
            raise Fail("a plaintext login before STLS was accepted")
        c.quit()
    finally:
        c.close()


# ------------------------------------------------------------ the clients

def client_settings(pki, implicit):
    """Each client's TLS settings (the env keys of clients.py's cases):
    its defaults with certificate checks on, plus the test CA.  fetchmail
    polls localhost: it matches the server's name against the DNS names
    of the certificate only, never against an IP address."""
    ca = pki["ca"]
    ctx = ssl.create_default_context(cafile=ca)        # verifies name and chain
    if implicit:
        return {
            "pop3": lambda h, port: poplib.POP3_SSL("127.0.0.1", port, context=ctx,
                                                    timeout=h.TIMEOUT),
            "curl": ("pop3s", ["--cacert", ca]),
            "fetchmail": ("localhost", "ssl sslcertck sslcertfile %s" % ca),
            "mpop": "tls on\ntls_starttls off\ntls_trust_file %s\n" % ca,
            "getmail": ("SimplePOP3SSLRetriever", "ca_certs = %s\n" % ca),
        }

    def stls(h, port):
        c = poplib.POP3("127.0.0.1", port, timeout=h.TIMEOUT)
        c.stls(context=ctx)     # fails unless CAPA offers STLS
        return c
    return {
        "pop3": stls,
        "curl": ("pop3", ["--ssl-reqd", "--cacert", ca]),
        # fetchmail starts STLS by itself when CAPA offers it (sslproto
        # auto, its default) and checks the certificate (sslcertck).
        "fetchmail": ("localhost", "sslcertck sslcertfile %s" % ca),
        "mpop": "tls on\ntls_starttls on\ntls_trust_file %s\n" % ca,
    }


CASES = [
    ("poplib", None, C.case_poplib),
    ("curl", "curl", C.case_curl),
    ("fetchmail-keep-uidl", "fetchmail", lambda h, e: C.case_fetchmail(h, e, True)),
    ("fetchmail-delete", "fetchmail", lambda h, e: C.case_fetchmail(h, e, False)),
    ("mpop-uidl", "mpop", C.case_mpop),
    ("getmail6-uidl", "getmail", C.case_getmail),
]


def diagnostics(case):
    """The last lines of the launcher's log and of each client's log."""
    diag = []
    for p in sorted(os.listdir(case)):
        full = os.path.join(case, p)
        if os.path.isdir(full):
            full = os.path.join(full, "log")
        if (p.startswith("stderr") or os.path.basename(full) == "log") and \
                os.path.isfile(full):
            with open(full, "rb") as f:
                diag += [p + ": " + l for l in
                         f.read().decode("utf-8", "replace").splitlines()[-8:]]
    return diag


def run_case(h, name, fn, implicit, msgs, program):
    need = "xinetd" if h.ROOT else "systemd-socket-activate"
    missing = [p for p in (program, need, "openssl") if p and not shutil.which(p)]
    if missing:
        h.report(name, False, "%s not installed (tests/deps.sh)" % " ".join(missing))
        return
    case = h.ENV.new_case("root" if h.ROOT else "user")
    launcher = None
    try:
        pki = make_pki(h, case)
        mbox = C.maildrop(h, case, msgs)
        launcher = start_tls_launcher(h, case, pki, implicit)
        if not implicit:
            expect_plaintext_refused(h, launcher.port)
        env = {"launcher": launcher, "mbox": mbox, "msgs": msgs, "case": case}
        env.update(client_settings(pki, implicit))
        fn(h, env)
        launcher.stop()
        san = launcher.sanitizer_reports()
        launcher = None
        if san:
            raise Fail("sanitizer report: " + "; ".join(san))
        h.report(name, True)
    except (Fail, h.Fail, poplib.error_proto, ssl.SSLError, OSError,
            subprocess.SubprocessError) as e:
        h.report(name, False, "%s: %s" % (type(e).__name__, e), diagnostics(case))
    finally:
        if launcher:
            launcher.stop()


def tests(h):
    msgs = C.tricky_messages()
    launcher_name = "xinetd" if h.ROOT else "socket-activate"
    for kind, implicit in (("stls", False), ("pop3s", True)):
        for client, program, fn in CASES:
            if client.startswith("getmail") and not implicit:
                continue        # getmail6's POP3 retrievers have no STLS
            name = "tls-client/%s-%s-%s" % (client, kind, launcher_name)
            if h.wanted(name):
                run_case(h, name, fn, implicit, msgs, program)
