# tests/suites/stalled.py: clients that hold a session without being served
# (issue 11, item 4).  A client that pipelines commands and never reads
# fills the output until pop3d's writes would block: every wait for room to
# write is bounded like a wait for input, so the session still ends, before
# login within --auth-timeout of the connect (one budget for the whole
# AUTHORIZATION state, so CAPA sent slowly forever uses it up too), after
# login within --idle-timeout of the last progress.  In root mode the parent
# does not outlive its pre-auth child either: when the child is stuck
# (stopped here), the parent kills it POP3D_AUTH_GRACE seconds after the
# budget.  Over pipes (pop3d < in > out) and over a socket (as from inetd).
#
# Time is what these cases test: each one checks that every process of the
# session is gone no earlier than its limit and no later than the limit plus
# LATE (tests/run: 5 s, 10 s under the sanitizers, 30 s under memcheck),
# a margin measured on a loaded machine.
import os
import re
import select
import signal
import socket
import subprocess
import threading
import time

AUTH = 2        # --auth-timeout of these cases
IDLE = 2        # --idle-timeout of the logged-in cases
POLL = 0.05     # how often the client looks (and writes)

H = None
SETUP = threading.Lock()        # the cases run at the same time
CURRENT = threading.local()     # the Client of this thread's case


def grace():
    """POP3D_AUTH_GRACE from params.h: the parent's backstop."""
    with open(os.path.join(H.TOP, "params.h")) as f:
        return int(re.search(r"#define POP3D_AUTH_GRACE\s+(\d+)", f.read()).group(1))


def group_pids(pgid):
    """Live (not zombie) processes of the process group pgid."""
    pids = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % p) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(p))
    return sorted(pids)


class Client:
    """pop3d on pipes or on one end of a socketpair; the client side is
    non-blocking, so that a flood never blocks the test itself."""

    def __init__(self, mode, extra, sock):
        with SETUP:
            self.case = H.ENV.new_case(mode)
            vars = H.ENV.vars(self.case)
            H.place_fixture(self.case, vars, "$VUSER", "seed.mbox")
        CURRENT.client = self
        self.errpath = os.path.join(self.case, "stderr-1")
        argv = H.ENV.argv(mode, self.case, ["--auth-timeout", str(AUTH)] + extra)
        self.t0 = time.monotonic()          # pop3d's connect is later
        with open(self.errpath, "wb") as err:
            if sock:
                ours, theirs = socket.socketpair()
                self.p = subprocess.Popen(argv, stdin=theirs, stdout=theirs,
                                          stderr=err, env=H.ENV.session_env(False),
                                          start_new_session=True)
                theirs.close()
                self.sock = ours
                self.wfd = self.rfd = ours.fileno()
            else:
                self.p = subprocess.Popen(argv, stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=err,
                                          env=H.ENV.session_env(False),
                                          start_new_session=True)
                self.sock = None
                self.wfd, self.rfd = self.p.stdin.fileno(), self.p.stdout.fileno()
        os.set_blocking(self.wfd, False)
        self.buf = b""

    def send(self, data):
        """Writes what the server takes now; returns the octets taken."""
        try:
            return os.write(self.wfd, data)
        except (BlockingIOError, BrokenPipeError, ConnectionResetError):
            return 0

    def line(self, timeout=None):
        deadline = time.monotonic() + (timeout or H.TIMEOUT)
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            r = select.select([self.rfd], [], [], left)[0] if left > 0 else []
            if not r:
                raise H.Fail("no reply within %.0f s" % (timeout or H.TIMEOUT))
            data = os.read(self.rfd, 65536)
            if not data:
                raise H.Fail("connection closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r")

    def rest(self):
        """What comes until the end of the output (within EXIT_TIMEOUT)."""
        deadline = time.monotonic() + H.EXIT_TIMEOUT
        data, self.buf = self.buf, b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.rfd], [], [], left)[0]:
                raise H.Fail("the output did not end")
            got = os.read(self.rfd, 65536)
            if not got:
                return data
            data += got

    def expect(self, want):
        got = self.line()
        if got != want:
            raise H.Fail("expected %r, got %r" % (want, got[:100]))

    def gone(self):
        return self.p.poll() is not None and not group_pids(self.p.pid)

    def flood(self, data, until):
        """Sends data over and over, never reading, until the session is
        gone or the time until passes.  Returns when it was seen gone,
        or None."""
        while time.monotonic() < until:
            self.send(data)
            if self.gone():
                return time.monotonic()
            time.sleep(POLL)
        return None

    def log(self):
        with open(self.errpath, "rb") as f:
            return f.read()

    def close(self):
        if self.p.poll() is None or group_pids(self.p.pid):
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.p.wait()
        for f in (self.p.stdin, self.p.stdout):
            if f:
                try:
                    f.close()
                except OSError:
                    pass
        if self.sock:
            self.sock.close()


def within(c, start, limit, end, what):
    """The session ended (at end, or not at all: None) no earlier than
    limit seconds after start and no later than limit + LATE."""
    if end is None:
        raise H.Fail("%s: session still there %.0f s after %s (limit %d s); "
                     "processes %s" % (what, time.monotonic() - start, what,
                                       limit, group_pids(c.p.pid)))
    took = end - start
    if took < limit:
        raise H.Fail("%s: session ended after %.2f s, before its limit of %d s"
                     % (what, took, limit))
    return took


def login(c):
    c.expect(b"+OK pop3d ready.")
    c.send(b"USER %s\r\nPASS %s\r\n" % (H.ENV.vuser.encode(), H.ENV.vpw.encode()))
    c.expect(b"+OK")
    c.expect(b"+OK Logged in.")


def t_preauth_flood(mode, sock):
    """Before login: CAPA pipelined without end, nothing read.  Gone within
    --auth-timeout of the connect."""
    c = Client(mode, [], sock)
    try:
        end = c.flood(b"CAPA\r\n" * 200, c.t0 + AUTH + H.LATE)
        took = within(c, c.t0, AUTH, end, "connect")
        if not re.search(rb"session end: .* timeout", c.log()):
            raise H.Fail("the log does not say timeout: %r" % c.log()[-200:])
        return "gone %.2f s after the connect" % took
    finally:
        c.close()


def t_preauth_trickle(mode):
    """Before login: a client that reads every reply but sends only CAPA,
    one every 0.2 s.  The budget counts from the connect, not per command:
    the autologout comes after --auth-timeout."""
    c = Client(mode, [], False)
    try:
        c.expect(b"+OK pop3d ready.")
        until = c.t0 + AUTH + H.LATE
        end = None
        while time.monotonic() < until:
            c.send(b"CAPA\r\n")
            l = c.line()
            if l == b"-ERR Autologout; idle for too long.":
                end = time.monotonic()
                break
            if l != b"+OK Capability list follows":
                raise H.Fail("CAPA gave %r" % l)
            while c.line() != b".":
                pass
            time.sleep(0.2)
        took = within(c, c.t0, AUTH, end, "connect")
        rest = c.rest()
        if rest:
            raise H.Fail("output after the autologout: %r" % rest[:80])
        if c.p.wait(H.EXIT_TIMEOUT) != 0:
            raise H.Fail("exit status %d" % c.p.returncode)
        return "autologout %.2f s after the connect" % took
    finally:
        c.close()


def t_logged_in_flood(mode, sock, cmd):
    """After login: cmd pipelined without end, nothing read.  Gone within
    --idle-timeout of the moment the output stopped moving, which is after
    the flood began."""
    c = Client(mode, ["--idle-timeout", str(IDLE)], sock)
    try:
        login(c)
        start = time.monotonic()
        end = c.flood(cmd * 100, start + IDLE + H.LATE)
        took = within(c, start, IDLE, end, "the flood began")
        if not re.search(rb"session end: user=\S+ .* timeout", c.log()):
            raise H.Fail("the log does not say timeout: %r" % c.log()[-200:])
        return "gone %.2f s after the flood began" % took
    finally:
        c.close()


def t_stuck_child():
    """Root mode: the pre-auth child is stopped (SIGSTOP) after the
    greeting.  The parent kills it and ends POP3D_AUTH_GRACE after the
    budget, with -ERR Autologout to the client."""
    limit = AUTH + grace()
    c = Client("root", [], True)
    try:
        c.expect(b"+OK pop3d ready.")
        kids = [p for p in group_pids(c.p.pid) if p != c.p.pid]
        if len(kids) != 1:
            raise H.Fail("processes before login: %s" % group_pids(c.p.pid))
        os.kill(kids[0], signal.SIGSTOP)
        c.send(b"USER %s\r\n" % H.ENV.vuser.encode())
        end = None
        while time.monotonic() < c.t0 + limit + H.LATE:
            if c.gone():
                end = time.monotonic()
                break
            time.sleep(POLL)
        took = within(c, c.t0, limit, end, "connect")
        got = c.line()
        if got != b"-ERR Autologout; idle for too long.":
            raise H.Fail("the client got %r" % got)
        if b"pre-auth child did not end in time; killed" not in c.log():
            raise H.Fail("no log line for the killed child: %r" % c.log()[-200:])
        return "gone %.2f s after the connect" % took
    finally:
        c.close()


def run_all(cases):
    """Runs the cases (name, function, arguments) at the same time, since
    each mostly waits for a timer of pop3d, and reports them in order."""
    cases = [c for c in cases if H.wanted(c[0])]
    results = {}

    def one(name, fn, args):
        CURRENT.client = None
        try:
            results[name] = (True, fn(*args), None)
        except (H.Fail, OSError) as e:
            c = CURRENT.client
            log = c.log().decode("utf-8", "replace").splitlines()[-8:] if c else []
            why = str(e) if isinstance(e, H.Fail) else "%s: %s" % (type(e).__name__, e)
            results[name] = (False, why, log)
    threads = [threading.Thread(target=one, args=c) for c in cases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, _, _ in cases:
        ok, why, log = results.get(name, (False, "harness: no result", []))
        H.report(name, ok, "" if ok else why, log)
        if ok:
            print("    # " + why, flush=True)


def tests(h):
    global H
    H = h
    cases = []
    for mode in h.ENV.modes():
        cases += [
            ("stalled/preauth-capa-flood-pipe/" + mode, t_preauth_flood, (mode, False)),
            ("stalled/preauth-capa-flood-socket/" + mode, t_preauth_flood, (mode, True)),
            ("stalled/preauth-capa-trickle/" + mode, t_preauth_trickle, (mode,)),
            ("stalled/list-flood-pipe/" + mode, t_logged_in_flood,
             (mode, False, b"LIST\r\n")),
            ("stalled/retr-flood-socket/" + mode, t_logged_in_flood,
             (mode, True, b"RETR 1\r\n"))]
    if h.ROOT:
        cases.append(("stalled/stuck-preauth-child/root", t_stuck_child, ()))
    run_all(cases)
