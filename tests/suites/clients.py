# tests/suites/clients.py: the real mail clients of Debian (Python's
# poplib, curl, fetchmail, mpop, getmail6) against pop3d behind a real
# launcher on 127.0.0.1: the shipped xinetd.d/pop3d under xinetd as root,
# else systemd-socket-activate (systemd package) in user mode.  The
# maildrop holds tricky messages; every client must deliver each one
# byte-identical after its own documented changes (CRLF to LF, the
# Received or Return-Path header it adds), deletions must happen after
# QUIT only, and UIDL-tracking clients must fetch only new mail on their
# second run.  Here pop3d has no TLS options, so the clients log in with
# plaintext USER/PASS (their TLS turned off): what a site still does on a
# trusted network or 127.0.0.1.  tests/suites/tls_clients.py runs the same
# cases over STLS and implicit TLS, with the clients' TLS settings.
#
# The launcher helpers (start_xinetd, start_socket_activate) and the cases
# are used by tests/suites/deploy.py and tls_clients.py too; a case takes
# the client's connection settings from env (see PLAIN).
import base64
import os
import poplib
import random
import re
import shutil
import signal
import socket
import subprocess
import time

SENDER_DATES = ["Mon Jan 24 11:15:%02d 2022" % s for s in range(10, 60)]


def message(n, subject, body, extra=b""):
    """One message as delivered (LF line ends), with a unique Received
    line (the digest UIDL reads it) and Message-ID."""
    return (b"Received: from mx.example.org by mail.example.org (Postfix)"
            b" with ESMTP id T%04d; Mon, 24 Jan 2022 11:15:%02d +0000\n"
            b"From: Sender <sender@example.org>\n"
            b"To: safeer@example.org\n"
            b"Subject: %s\n"
            b"Message-ID: <msg%d@example.org>\n"
            b"Date: Mon, 24 Jan 2022 11:15:%02d +0000\n"
            % (n, n, subject, n, n)) + extra + b"\n" + body


def tricky_messages():
    """The maildrop's messages, in order; the last has no final newline."""
    rnd = random.Random(6)
    blob = base64.encodebytes(rnd.randbytes(3_800_000))     # 76-column lines
    big = (b"--b1\nContent-Type: text/plain; charset=us-ascii\n\n"
           b"A report is attached.\n\n--b1\n"
           b"Content-Type: application/octet-stream; name=report.bin\n"
           b"Content-Transfer-Encoding: base64\n"
           b"Content-Disposition: attachment; filename=report.bin\n\n"
           + blob + b"\n--b1--\n")
    return [
        message(1, b"a From line in the body",
                b"Hello,\n\nFrom the desk of nobody: this line starts like an"
                b" mbox separator.\nFrom here on, more of the same.\n"
                b">From an escaped line stays as it is.\n\nFrom me\n"),
        message(2, b"dot lines",
                b".\n..\n...\n.leading dot\n. a dot and a space\n"
                b"end.\n.\n"),
        message(3, b"8-bit and UTF-8",
                b"Latin-1: caf\xe9 na\xefve \xa9\n"
                b"UTF-8: Gr\xc3\xbc\xc3\x9fe, \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e,"
                b" \xf0\x9f\x93\xac\n\tTab and trailing space \n",
                b"MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
                b"Content-Transfer-Encoding: 8bit\n"),
        message(4, b"5 MB with a base64 attachment", big,
                b"MIME-Version: 1.0\n"
                b"Content-Type: multipart/mixed; boundary=\"b1\"\n"),
        message(5, b"empty body", b""),
        message(6, b"no final newline", b"The last line has no newline"),
    ]


def new_message():
    return message(7, b"delivered between two runs", b"New mail.\n")


def mbox_of(msgs, first=0):
    """An mbox of msgs as an MTA writes it: From_ line, the message, a
    blank line between messages; the last message is stored as it is."""
    out = b""
    for i, m in enumerate(msgs):
        if out:
            out += b"\n"
        out += (b"From sender@example.org  %s\n" % SENDER_DATES[first + i].encode()) + m
    return out


def as_seen(m):
    """A message as a client sees it after CRLF -> LF: a missing final
    newline is added by the POP3 framing."""
    return m if m.endswith(b"\n") else m + b"\n"


def msgid(text):
    m = re.search(rb"(?m)^Message-ID: (<[^>]*>)", text)
    return m.group(1).decode() if m else "?"


def compare(got, want, what):
    """got and want: lists of message texts (LF).  Matched by Message-ID;
    returns a description of the first difference, or None."""
    w = {msgid(t): t for t in want}
    g = {}
    for t in got:
        g.setdefault(msgid(t), []).append(t)
    if sorted(g) != sorted(w) or any(len(v) != 1 for v in g.values()):
        return "%s: got messages %s, expected %s" % (
            what, sorted((k, len(v)) for k, v in g.items()), sorted(w))
    for k, t in w.items():
        if g[k][0] != t:
            a = g[k][0]
            i = next((i for i in range(min(len(a), len(t))) if a[i] != t[i]),
                     min(len(a), len(t)))
            return "%s: %s differs at byte %d of %d/%d: got %r, expected %r" % (
                what, k, i, len(a), len(t), a[max(0, i - 20):i + 20], t[max(0, i - 20):i + 20])
    return None


class Fail(Exception):
    pass


# --------------------------------------------------------------- launchers

def wait_port(port, proc, logpath, timeout):
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                with open(logpath, "rb") as f:
                    raise Fail("launcher did not start: %r" % f.read()[-300:])
            time.sleep(0.03)


class Launcher:
    def __init__(self, h, case, proc, port, logpath, name):
        self.h, self.case, self.proc, self.port = h, case, proc, port
        self.logpath, self.name = logpath, name

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def sanitizer_reports(self):
        """Sanitizer reports of the sessions (written to asan.* files, as
        fd 2 of a session is the socket), and of the launcher's log."""
        found = []
        logdir = os.path.join(self.case, "sanitizer")
        for p in [self.logpath] + [os.path.join(logdir, f) for f in os.listdir(logdir)]:
            with open(p, "rb") as f:
                m = self.h.SAN_RE.search(f.read())
            if m:
                found.append("%s: %s" % (os.path.basename(p), m.group(0).decode()))
        return found


def launcher_env(h, case):
    # No pam_wrapper: the sessions log in password-file users, and its
    # messages would go to fd 2, the socket.
    env = h.ENV.session_env(pam=False)
    # Sessions write their reports after dropping privileges: a sticky,
    # world-writable directory of their own.
    logdir = os.path.join(case, "sanitizer")
    os.makedirs(logdir, exist_ok=True)
    os.chmod(logdir, 0o1777)
    log = "log_path=" + os.path.join(logdir, "asan")
    env["ASAN_OPTIONS"] += ":" + log
    env["UBSAN_OPTIONS"] += ":" + log
    return env


def xinetd_conf(h, port, args, server=None):
    """The shipped xinetd.d/pop3d with only these changes: disable = no,
    the port, the server path, server_args, bind = 127.0.0.1 (uncommented)
    and type = UNLISTED (the port is not the one /etc/services gives pop3)."""
    with open(os.path.join(h.TOP, "xinetd.d", "pop3d")) as f:
        conf = f.read()
    subs = [(r"(?m)^(\s*disable\s*=\s*)yes\s*$", r"\g<1>no"),
            (r"(?m)^(\s*port\s*=\s*)110\s*$", r"\g<1>%d" % port),
            (r"(?m)^(\s*server\s*=\s*)\S+\s*$", r"\g<1>" + (server or h.ENV.pop3d)),
            (r"(?m)^#(\s*server_args\s*=\s*)--mailbox .*$", r"\g<1>" + " ".join(args)),
            (r"(?m)^#(\s*bind\s*=\s*)127\.0\.0\.1\s*$",
             r"\g<1>127.0.0.1\n\ttype\t\t= UNLISTED")]
    for pat, rep in subs:
        conf, n = re.subn(pat, rep, conf)
        if n != 1:
            raise Fail("xinetd.d/pop3d has %d lines matching %s" % (n, pat))
    return conf


def launch(h, case, port, name, cmd):
    """Starts a launcher (its log in stderr-NAME) and waits until it
    listens on port."""
    logpath = os.path.join(case, "stderr-" + name)
    with open(logpath, "wb") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=log, env=launcher_env(h, case),
                                start_new_session=True)
    launcher = Launcher(h, case, proc, port, logpath, name)
    try:
        wait_port(port, proc, logpath, h.TIMEOUT)
    except Fail:
        launcher.stop()
        raise
    return launcher


def start_xinetd(h, case, args):
    port = h.free_port()
    cfile = os.path.join(case, "xinetd.conf")
    with open(cfile, "w") as f:
        f.write(xinetd_conf(h, port, args))
    return launch(h, case, port, "xinetd",
                  ["xinetd", "-dontfork", "-f", cfile, "-pidfile",
                   os.path.join(case, "xinetd.pid")])


def start_socket_activate(h, case, argv):
    """systemd-socket-activate --inetd: one argv process per connection."""
    port = h.free_port()
    return launch(h, case, port, "systemd-socket-activate",
                  ["systemd-socket-activate", "--accept", "--inetd",
                   "-l", "127.0.0.1:%d" % port] + list(argv))


def session_args(h, case, mode):
    """pop3d's options for a launched session (no --debug: fd 2 is the
    socket)."""
    args = ["--fail-delay", "10", "--mailbox", os.path.join(case, "mail", "%u"),
            "--passwd-file", h.ENV.passwd[mode],
            "--state-dir", os.path.join(case, "state")]
    if mode == "root":
        args += ["--virtual-user", h.ENV.user]
    return args


def start_launcher(h, case):
    """xinetd as root (the shipped file), else systemd-socket-activate."""
    if h.ROOT:
        return start_xinetd(h, case, session_args(h, case, "root"))
    return start_socket_activate(h, case, [h.ENV.pop3d] + session_args(h, case, "user"))


# ----------------------------------------------------------------- helpers

class Client:
    """Where one client runs: a directory of its own, as an unprivileged
    user (pop3t2 as root: getmail refuses to deliver as root)."""

    def __init__(self, h, case, name):
        self.h = h
        self.dir = os.path.join(case, name)
        os.mkdir(self.dir, 0o700)
        self.user = h.ENV.u2 if h.ROOT else None
        if self.user:
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)

    def path(self, *p):
        return os.path.join(self.dir, *p)

    def mkdir(self, *p):
        d = self.path(*p)
        os.makedirs(d, 0o700)
        if self.user:
            for root, dirs, _ in os.walk(self.dir):
                for x in [root] + [os.path.join(root, d2) for d2 in dirs]:
                    os.chown(x, self.user.pw_uid, self.user.pw_gid)
        return d

    def write(self, name, text, mode=0o600):
        p = self.path(name)
        with open(p, "w") as f:
            f.write(text)
        os.chmod(p, mode)
        if self.user:
            os.chown(p, self.user.pw_uid, self.user.pw_gid)
        return p

    def run(self, argv, timeout=60):
        if self.user:
            argv = ["setpriv", "--reuid=%d" % self.user.pw_uid,
                    "--regid=%d" % self.user.pw_gid, "--clear-groups"] + argv
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": self.dir,
               "LANG": "C.UTF-8", "FETCHMAILHOME": self.dir}
        try:
            p = subprocess.run(argv, capture_output=True, env=env, cwd=self.dir,
                               stdin=subprocess.DEVNULL, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Fail("%s did not finish in %d s" % (argv[0], timeout))
        with open(self.path("log"), "ab") as f:
            f.write(b"$ %s\n%s%s" % (" ".join(argv).encode(), p.stdout, p.stderr))
        return p

    def files(self, d):
        """Texts of the files in directory d (then removed)."""
        out = []
        for name in sorted(os.listdir(d)):
            p = os.path.join(d, name)
            with open(p, "rb") as f:
                out.append(f.read())
            os.unlink(p)
        return out


def strip_header(text, prefix):
    """Removes the header field starting the text if it starts with
    prefix (with its continuation lines)."""
    if not text.startswith(prefix):
        raise Fail("the client did not add its %r header: %r" % (prefix, text[:80]))
    lines = text.split(b"\n")
    i = 1
    while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
        i += 1
    return b"\n".join(lines[i:])


def unfold(text):
    """RFC 5322 unfolding of the header (getmail re-folds header lines
    longer than 78 characters; ours are never folded)."""
    head, sep, body = text.partition(b"\n\n")
    return re.sub(rb"\n(?=[ \t])", b"", head) + sep + body


def maildrop(h, case, msgs):
    """Writes the maildrop of $VUSER (owned by the session's user)."""
    p = os.path.join(case, "mail", h.ENV.vuser)
    with open(p, "wb") as f:
        f.write(mbox_of(msgs))
    os.chmod(p, 0o600)
    if h.ROOT:
        os.chown(p, h.ENV.u1.pw_uid, h.ENV.u1.pw_gid)
    return p


def expect_mbox(h, path, want, what):
    """The maildrop holds exactly want (polled: the session may still be
    finishing its update after the client saw +OK)."""
    deadline = time.monotonic() + h.TIMEOUT
    while True:
        with open(path, "rb") as f:
            got = f.read()
        if got == want:
            return
        if time.monotonic() > deadline:
            raise Fail("%s: maildrop is %d bytes, expected %d" % (what, len(got), len(want)))
        time.sleep(0.05)


def append_new(h, mbox, nmsgs):
    """Delivers new_message() as an MTA appends (dotlockfile, fcntl): a
    blank line first, and a newline before it if the last message lacks
    one (as Postfix's local(8) and procmail make sure)."""
    with open(mbox, "rb") as f:
        data = f.read()
    sep = b"" if data.endswith(b"\n\n") or not data else \
        b"\n" if data.endswith(b"\n") else b"\n\n"
    h.deliver(mbox, sep + mbox_of([new_message()], nmsgs))


# ------------------------------------------------------------------- cases

# How each client connects, when env does not say otherwise: plaintext.
# pop3: a connected poplib object; curl: URL scheme and options;
# fetchmail: the host it polls and its TLS keywords; mpop: its TLS and auth commands; getmail:
# the retriever type and its extra lines.
PLAIN = {
    "pop3": lambda h, port: poplib.POP3("127.0.0.1", port, timeout=h.TIMEOUT),
    "curl": ("pop3", []),
    "fetchmail": ("127.0.0.1", "sslproto ''"),
    "mpop": "tls off\nauth user\n",
    "getmail": ("SimplePOP3Retriever", ""),
}


def how(env, client):
    return env.get(client, PLAIN[client])


def case_poplib(h, env):
    launcher, mbox, msgs = env["launcher"], env["mbox"], env["msgs"]
    c = how(env, "pop3")(h, launcher.port)
    c.user(h.ENV.vuser)
    c.pass_(h.ENV.vpw)
    n, size = c.stat()
    want_sizes = [len(as_seen(m)) + as_seen(m).count(b"\n") for m in msgs]
    if (n, size) != (len(msgs), sum(want_sizes)):
        raise Fail("STAT %r, expected %r" % ((n, size), (len(msgs), sum(want_sizes))))
    got = []
    for i in range(1, n + 1):
        _, lines, octets = c.retr(i)
        got.append(b"".join(l + b"\n" for l in lines))
    err = compare(got, [as_seen(m) for m in msgs], "RETR")
    if err:
        raise Fail(err)
    listed = [int(l.split()[1]) for l in c.list()[1]]
    if listed != want_sizes:
        raise Fail("LIST %r, expected %r" % (listed, want_sizes))
    uidl = [l.split()[1] for l in c.uidl()[1]]
    if len(set(uidl)) != n:
        raise Fail("UIDL not unique: %r" % uidl)
    c.dele(1)
    c.dele(4)
    # A dropped connection: no QUIT, nothing may be deleted.  The session
    # notices the EOF and ends; then the maildrop must be as it was (and
    # the next login does not meet that session's [IN-USE]).  poplib's
    # file object holds the socket open too: close both.
    c.file.close()
    c.sock.close()
    h.wait_sessions_end(launcher.case, "after a dropped connection")
    expect_mbox(h, mbox, mbox_of(msgs), "after DELE and a dropped connection")
    c = how(env, "pop3")(h, launcher.port)
    c.user(h.ENV.vuser)
    c.pass_(h.ENV.vpw)
    if [l.split()[1] for l in c.uidl()[1]] != uidl:
        raise Fail("UIDL changed between sessions")
    c.dele(1)
    c.dele(4)
    c.quit()
    # The messages keep their From_ lines: 2, 3, 5, 6 of the original.
    keep = [1, 2, 4, 5]
    want = b"\n".join((b"From sender@example.org  %s\n" % SENDER_DATES[i].encode()) + msgs[i]
                      for i in keep)
    expect_mbox(h, mbox, want, "after DELE 1, DELE 4 and QUIT")


def case_curl(h, env):
    launcher, mbox, msgs = env["launcher"], env["mbox"], env["msgs"]
    scheme, tls = how(env, "curl")
    url = "%s://127.0.0.1:%d/" % (scheme, launcher.port)
    base = ["curl", "-sS", "--max-time", "30", "-u", "%s:%s" % (h.ENV.vuser, h.ENV.vpw)] + tls

    def curl(*args):
        p = subprocess.run(base + list(args), capture_output=True, timeout=60)
        if p.returncode:
            raise Fail("curl %s: exit %d: %r" % (" ".join(args), p.returncode, p.stderr[:200]))
        return p.stdout
    want_sizes = [len(as_seen(m)) + as_seen(m).count(b"\n") for m in msgs]
    listed = curl(url)                          # LIST
    want = b"".join(b"%d %d\r\n" % (i + 1, s) for i, s in enumerate(want_sizes))
    if listed != want:
        raise Fail("LIST gave %r, expected %r" % (listed[:200], want[:200]))
    got = [curl(url + str(i)).replace(b"\r\n", b"\n") for i in range(1, len(msgs) + 1)]
    err = compare(got, [as_seen(m) for m in msgs], "RETR")
    if err:
        raise Fail(err)
    uidl = curl("-X", "UIDL", url)
    if len(uidl.split(b"\r\n")) != len(msgs) + 1:
        raise Fail("UIDL gave %r" % uidl[:200])
    curl("-X", "DELE", "-I", url + "2")        # DELE 2, then QUIT
    want = b"\n".join((b"From sender@example.org  %s\n" % SENDER_DATES[i].encode()) + msgs[i]
                      for i in range(len(msgs)) if i != 1)
    expect_mbox(h, mbox, want, "after curl -X DELE 2")


def case_fetchmail(h, env, keep):
    launcher, mbox, msgs = env["launcher"], env["mbox"], env["msgs"]
    cl = Client(h, env["case"], "fetchmail")
    host, tls = how(env, "fetchmail")
    out = cl.mkdir("out")
    # The MDA writes each message to a file of its own; "no rewrite" keeps
    # the addresses as sent; fetchmail adds one Received header (and makes
    # line ends LF for an MDA: stripcr is the default then).
    rc = cl.write("fetchmailrc",
                  "set no syslog\n"
                  "poll %s service %d protocol pop3 uidl auth password timeout 30\n"
                  "  user \"%s\" there with password \"%s\" is \"%s\" here\n"
                  "  %s no rewrite %s\n"
                  "  mda \"sh -c 'cat > %s/m.$$'\"\n"
                  % (host, launcher.port, h.ENV.vuser, h.ENV.vpw,
                     cl.user.pw_name if cl.user else os.environ.get("USER", "nobody"),
                     "keep" if keep else "no keep", tls, out))

    def run():
        p = cl.run(["fetchmail", "-f", rc, "-i", cl.path("fetchids")])
        if p.returncode not in (0, 1):      # 1: no mail
            raise Fail("fetchmail exit %d: %r" % (p.returncode, p.stderr[-300:]))
        return [strip_header(t, b"Received: from " + host.encode()) for t in cl.files(out)]
    err = compare(run(), [as_seen(m) for m in msgs], "first run")
    if err:
        raise Fail(err)
    if not keep:
        expect_mbox(h, mbox, b"", "after fetchmail (delete mode)")
        return
    expect_mbox(h, mbox, mbox_of(msgs), "after fetchmail keep")
    with open(cl.path("fetchids"), "rb") as f:
        ids = f.read()
    if len(ids.strip().split(b"\n")) != len(msgs):
        raise Fail(".fetchids holds %r" % ids[:200])
    append_new(h, mbox, len(msgs))
    err = compare(run(), [new_message()], "second run (only the new message)")
    if err:
        raise Fail(err)


def keep_then_delete(h, env, run, name, delete_args):
    """What a UIDL-tracking client must do: fetch everything and leave it
    on the server; after one delivery fetch only the new message; with
    delete_args fetch nothing new and empty the maildrop after QUIT."""
    mbox, msgs = env["mbox"], env["msgs"]

    def expect(args, want, what):
        err = compare(run(*args), want, what)
        if err:
            raise Fail(err)
    expect((), [as_seen(m) for m in msgs], "first run")
    expect_mbox(h, mbox, mbox_of(msgs), "after %s, keeping" % name)
    append_new(h, mbox, len(msgs))
    expect((), [new_message()], "second run (only the new message)")
    expect(delete_args, [], "third run (nothing new)")
    expect_mbox(h, mbox, b"", "after %s %s" % (name, " ".join(delete_args)))


def case_mpop(h, env):
    launcher = env["launcher"]
    cl = Client(h, env["case"], "mpop")
    md = cl.path("Maildir")
    for d in ("cur", "new", "tmp"):
        cl.mkdir("Maildir", d)
    # received_header off: mpop adds nothing, maildir files have LF ends.
    rc = cl.write("mpoprc",
                  "account default\nhost 127.0.0.1\nport %d\n%s"
                  "user %s\npassword %s\ndelivery maildir %s\nuidls_file %s\n"
                  "received_header off\nkeep on\ntimeout 30\n"
                  % (launcher.port, how(env, "mpop"), h.ENV.vuser, h.ENV.vpw, md,
                     cl.path("uidls")))

    def run(*extra):
        p = cl.run(["mpop", "-C", rc, "-q"] + list(extra))
        if p.returncode:
            raise Fail("mpop exit %d: %r" % (p.returncode, p.stderr[-300:]))
        return cl.files(os.path.join(md, "new"))
    # keep off: mpop deletes what it has (now) retrieved, after QUIT.
    keep_then_delete(h, env, run, "mpop", ["--keep=off"])


def case_getmail(h, env):
    launcher = env["launcher"]
    cl = Client(h, env["case"], "getmail")
    md = cl.path("Maildir")
    for d in ("cur", "new", "tmp"):
        cl.mkdir("Maildir", d)
    # getmail adds Return-Path (from the envelope it does not know: a
    # POP3 server gives none) and re-folds long header lines (Python's
    # email package); delivered_to and received are turned off.
    retriever, tls = how(env, "getmail")
    rc = cl.write("getmailrc",
                  "[retriever]\ntype = %s\nserver = 127.0.0.1\n%s"
                  "port = %d\nusername = %s\npassword = %s\ntimeout = 30\n\n"
                  "[destination]\ntype = Maildir\npath = %s/\n\n"
                  "[options]\nread_all = false\ndelete = false\ndelivered_to = false\n"
                  "received = false\nverbose = 0\nmessage_log_syslog = false\n"
                  % (retriever, tls, launcher.port, h.ENV.vuser, h.ENV.vpw, md))

    def run(*extra):
        p = cl.run(["getmail", "--rcfile=" + rc, "--getmaildir=" + cl.dir] + list(extra))
        # getmail 6.18's delivery child can exit before getmail waits on
        # the condition its SIGCHLD handler notifies (baseclasses.py,
        # _wait_for_child): the wait then times out with this message, more
        # often on a busy machine.  Its own race, not pop3d's: try again
        # once (what it delivered stays; read_all = false skips it).
        if p.returncode and b"waiting child pid" in p.stdout + p.stderr:
            p = cl.run(["getmail", "--rcfile=" + rc, "--getmaildir=" + cl.dir] +
                       list(extra))
        if p.returncode:
            raise Fail("getmail exit %d: %r" % (p.returncode, (p.stdout + p.stderr)[-300:]))
        return [unfold(strip_header(t, b"Return-Path: "))
                for t in cl.files(os.path.join(md, "new"))]
    # --delete: getmail deletes the messages it has seen, after QUIT.
    keep_then_delete(h, env, run, "getmail", ["--delete"])


CASES = [
    ("poplib", None, case_poplib),
    ("curl", "curl", case_curl),
    ("fetchmail-keep-uidl", "fetchmail", lambda h, e: case_fetchmail(h, e, True)),
    ("fetchmail-delete", "fetchmail", lambda h, e: case_fetchmail(h, e, False)),
    ("mpop-uidl", "mpop", case_mpop),
    ("getmail6-uidl", "getmail", case_getmail),
]


def tests(h):
    msgs = tricky_messages()
    # The harness's own mbox model must read our maildrop as we built it.
    model = [b"".join(l + b"\n" for l in m) for m in h.model_messages(mbox_of(msgs))]
    model_ok = model == [as_seen(m) for m in msgs]
    launcher_name = "xinetd" if h.ROOT else "socket-activate"
    for client, program, fn in CASES:
        name = "client/%s-%s" % (client, launcher_name)
        if not h.wanted(name):
            continue
        if not model_ok:
            h.report(name, False, "the tricky maildrop does not parse as built")
            continue
        need = "xinetd" if h.ROOT else "systemd-socket-activate"
        missing = [p for p in (program, need) if p and not shutil.which(p)]
        if missing:
            h.report(name, False, "%s not installed (tests/deps.sh)" % " ".join(missing))
            continue
        case = h.ENV.new_case("root" if h.ROOT else "user")
        launcher = None
        try:
            mbox = maildrop(h, case, msgs)
            launcher = start_launcher(h, case)
            fn(h, {"launcher": launcher, "mbox": mbox, "msgs": msgs, "case": case})
            launcher.stop()
            san = launcher.sanitizer_reports()
            launcher = None
            if san:
                raise Fail("sanitizer report: " + "; ".join(san))
            h.report(name, True)
        except (Fail, h.Fail, poplib.error_proto, OSError, subprocess.SubprocessError) as e:
            diag = []
            for p in sorted(os.listdir(case)):
                full = os.path.join(case, p, "log") if os.path.isdir(os.path.join(case, p)) \
                    else os.path.join(case, p)
                if (p.startswith("stderr") or p.startswith("asan")
                        or os.path.exists(os.path.join(case, p, "log"))) and os.path.isfile(full):
                    with open(full, "rb") as f:
                        diag += [p + ": " + l for l in
                                 f.read().decode("utf-8", "replace").splitlines()[-8:]]
            h.report(name, False, "%s: %s" % (type(e).__name__, e), diag)
        finally:
            if launcher:
                launcher.stop()
