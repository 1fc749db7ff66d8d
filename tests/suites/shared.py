# tests/suites/shared.py: one spool and one state directory shared by two
# "hosts" (issue 14, README "More than one host").  Each host is a mount
# namespace of its own that sees the shared mail/ and state/ directories
# bind-mounted at a path of its own (as two NFS clients mount one export),
# and runs pop3d --shared-spool in root mode over pipes.
#   shared/lock-is-fcntl  the session lock is an fcntl lock (the kind the
#                         NFS lock manager carries): a POSIX lock held by
#                         another "host" makes pop3d answer [IN-USE]
#   shared/state-names    with --shared-spool the state files are named by
#                         the inode alone (a device number differs from
#                         NFS client to NFS client)
#   shared/dotlock-foreign-pid  a fresh dotlock with a PID that is not
#                         running here (another host's) is respected
#   shared/two-hosts      A holds the maildrop: B gets [IN-USE]; mail is
#                         delivered; A is SIGKILLed in the middle of its
#                         UPDATE; B respects A's dotlock until it is stale
#                         (aged here), then completes A's journal and finds
#                         every kept message and the new one
#   shared/concurrent     both hosts race for the maildrop in rounds while
#                         mail is delivered: one wins each round, every
#                         message is retrieved exactly once
# What one machine cannot show: one kernel serves both "hosts", so the
# locks never cross a network lock manager, both see the same st_dev and
# the page cache is shared (no attribute caching, no close-to-open
# consistency); README says which NFS set-up the real thing needs.
import importlib.util
import os
import re
import shutil
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("suite_crash_helpers",
                                               os.path.join(HERE, "crash.py"))
CR = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(CR)

# mounts the shared directories at this host's paths, then runs pop3d;
# the fault shim, when asked for, only for pop3d itself
HOST_SCRIPT = ('mount --bind "$1/mail" "$2/mail" && mount --bind "$1/state" "$2/state" && '
               'shift 2 && exec env LD_PRELOAD="$HOST_PRELOAD" "$@"')
INUSE = "-ERR [IN-USE] Mailbox is in use by another session."


class Hosts:
    def __init__(self, h):
        self.h = h
        self.case = h.ENV.new_case("root")
        self.shared = os.path.join(self.case, "shared")
        for d, mode in (("mail", 0o1777), ("state", 0o700)):
            os.makedirs(os.path.join(self.shared, d))
            os.chmod(os.path.join(self.shared, d), mode)
        for host in ("A", "B"):
            for d in ("mail", "state"):
                os.makedirs(os.path.join(self.case, host, d))
        self.n = 0

    def mbox(self, host=None):
        base = os.path.join(self.case, host) if host else self.shared
        return os.path.join(base, "mail", self.h.ENV.vuser)

    def session(self, host, fault=None, extra=()):
        """A session of pop3d on host (over pipes)."""
        h = self.h
        hd = os.path.join(self.case, host)
        self.n += 1
        argv = ["unshare", "-m", "sh", "-c", HOST_SCRIPT, "sh", self.shared, hd,
                h.ENV.pop3d, "--debug", "--shared-spool", "--fail-delay", "10",
                "--mailbox", os.path.join(hd, "mail", "%u"),
                "--state-dir", os.path.join(hd, "state"),
                "--passwd-file", h.ENV.passwd["root"], "--virtual-user", h.ENV.user] + \
            list(extra)
        env = h.ENV.session_env(pam=False)
        env["HOST_PRELOAD"] = ""
        if fault:
            env.update(fault)
            env["HOST_PRELOAD"] = os.path.join(h.TESTS, "faultinject.so")
        return h.Session(argv, env, os.path.join(self.case, "stderr-%s-%d" % (host, self.n)))

    def line(self, s):
        """The next reply line without its CRLF, as text (latin-1)."""
        ln = s.readline()
        if ln is None:
            raise self.h.Fail("no reply in time")
        return (ln[:-2] if ln.endswith(b"\r\n") else ln).decode("latin-1")

    def login(self, s):
        h = self.h
        s.queue(b"USER %s\r\nPASS %s\r\n" % (h.ENV.vuser.encode(), h.ENV.vpw.encode()))
        s.flush()
        greet, ok, res = self.line(s), self.line(s), self.line(s)
        if greet != "+OK pop3d ready." or ok != "+OK":
            raise h.Fail("greeting %r, USER %r" % (greet, ok))
        return res

    def cmd(self, s, line):
        s.queue(line.encode() + b"\r\n")
        s.flush()
        return self.line(s)

    def retr_all(self, s, n):
        """RETR 1..n: each message as its lines (bytes, dots undone), as
        model_messages gives them."""
        out = []
        for i in range(1, n + 1):
            r = self.cmd(s, "RETR %d" % i)
            if not r.startswith("+OK"):
                raise self.h.Fail("RETR %d: %r" % (i, r))
            lines = []
            while True:
                ln = self.line(s)
                if ln == ".":
                    break
                lines.append((ln[1:] if ln.startswith(".") else ln).encode("latin-1"))
            out.append(lines)
        return out

    def end(self, s, where):
        s.close_in()
        rest = s.read_rest()
        rc = s.wait()
        return rest, rc

    def uid_dir(self):
        return os.path.join(self.shared, "state", str(self.h.ENV.u1.pw_uid))


def write_mbox(h, path, data):
    with open(path, "wb") as f:
        f.write(data)
    os.chown(path, h.ENV.u1.pw_uid, h.ENV.u1.pw_gid)
    os.chmod(path, 0o600)


def seed_mbox(hs):
    """The crash tests' 20-message maildrop; returns its messages."""
    msgs = CR.chunks(False)
    write_mbox(hs.h, hs.mbox(), b"".join(msgs))
    return msgs


def case_lock_is_fcntl(h):
    import fcntl
    hs = Hosts(h)
    seed_mbox(hs)
    s = hs.session("A")
    if hs.login(s) != "+OK Logged in.":
        raise h.Fail("first login failed")
    hs.cmd(s, "QUIT")
    hs.end(s, "A")
    locks = [f for f in os.listdir(hs.uid_dir()) if f.endswith(".lock")]
    if len(locks) != 1:
        raise h.Fail("state lock files %r" % locks)
    fd = os.open(os.path.join(hs.uid_dir(), locks[0]), os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)     # "host B" via lockd
        s = hs.session("B")
        r = hs.login(s)
        hs.end(s, "B")
    finally:
        os.close(fd)
    if r != INUSE:
        raise h.Fail("login while another host holds the fcntl lock: %r" % r)


def case_state_names(h):
    hs = Hosts(h)
    seed_mbox(hs)
    s = hs.session("A")
    hs.login(s)
    hs.cmd(s, "QUIT")
    hs.end(s, "A")
    ino = os.stat(hs.mbox()).st_ino
    names = sorted(f for f in os.listdir(hs.uid_dir()) if not f.startswith("path-"))
    want = ["0-%x.%s" % (ino, e) for e in ("cache", "journal", "lock")]
    if names != want:
        raise h.Fail("state files %r, expected %r (named by the inode alone)" % (names, want))


def case_dotlock_foreign_pid(h):
    """A fresh dotlock holding a PID that does not run here (another
    host's delivery agent) is held, not stale: pop3d --shared-spool waits
    for it and answers [SYS/TEMP] after --lock-timeout (liblockfile's
    PID check is for one host only)."""
    hs = Hosts(h)
    seed_mbox(hs)
    with open("/proc/sys/kernel/pid_max") as f:
        pid = int(f.read()) - 1         # not running: checked below
    if os.path.exists("/proc/%d" % pid):
        raise h.Fail("pid %d runs here" % pid)
    with open(hs.mbox() + ".lock", "w") as f:
        f.write("%d\n" % pid)
    # the session's user could remove it: only the PID rule can keep it
    os.chown(hs.mbox() + ".lock", h.ENV.u1.pw_uid, h.ENV.u1.pw_gid)
    s = hs.session("A", extra=["--lock-timeout", "1"])
    s.queue(b"USER %s\r\nPASS %s\r\n" % (h.ENV.vuser.encode(), h.ENV.vpw.encode()))
    s.flush()
    hs.line(s), hs.line(s)
    r = hs.line(s)
    hs.end(s, "A")
    if r != "-ERR [SYS/TEMP] Mailbox is locked, try again later.":
        raise h.Fail("login past another host's fresh dotlock: %r" % r)
    if not os.path.exists(hs.mbox() + ".lock"):
        raise h.Fail("pop3d removed another host's dotlock")


def case_two_hosts(h):
    if not os.path.exists(os.path.join(h.TESTS, "faultinject.so")):
        raise h.Fail("tests/faultinject.so is not built")
    hs = Hosts(h)
    msgs = seed_mbox(hs)
    dele = CR.PATTERNS["half"]
    # host A's view of the files it writes in UPDATE: its maildrop path and
    # the journal; killed right after the 6th write point (mid-compaction)
    fault = {"FAULT_PATHS": "%s:*.journal" % hs.mbox("A"), "FAULT_KILL_AT": "6",
             "FAULT_MODE": "after"}
    a = hs.session("A", fault)
    if hs.login(a) != "+OK Logged in.":
        raise h.Fail("host A: no login")
    if not hs.cmd(a, "STAT").startswith("+OK 20 "):
        raise h.Fail("host A: STAT")
    for i in dele:
        if hs.cmd(a, "DELE %d" % i) != "+OK Marked to be deleted.":
            raise h.Fail("host A: DELE %d" % i)
    # host B while A holds the maildrop
    b = hs.session("B")
    r = hs.login(b)
    hs.end(b, "B")
    if r != INUSE:
        raise h.Fail("host B while host A is in session: %r" % r)
    h.deliver(hs.mbox(), CR.NEW)            # an MTA on some host
    a.queue(b"QUIT\r\n")
    a.flush()
    rest, rc = hs.end(a, "A")
    if rc != -9:
        raise h.Fail("host A was not killed in UPDATE (exit %r, %r)" % (rc, rest[:200]))
    journals = [f for f in os.listdir(hs.uid_dir()) if f.endswith(".journal")]
    if len(journals) != 1 or os.path.getsize(os.path.join(hs.uid_dir(), journals[0])) == 0:
        raise h.Fail("host A left no journal: %r" % journals)
    # A died holding the dotlock, which names no PID on shared storage:
    # B respects it (it cannot tell a dead host's lock from a live one)...
    lock = hs.mbox() + ".lock"
    if not os.path.exists(lock):
        raise h.Fail("host A died in UPDATE without its dotlock held")
    b = hs.session("B", extra=["--lock-timeout", "1"])
    r = hs.login(b)
    hs.end(b, "B")
    if r != "-ERR [SYS/TEMP] Mailbox is locked, try again later.":
        raise h.Fail("host B past host A's dotlock: %r" % r)
    # ...until liblockfile counts it stale, 5 minutes on: age it by 6
    old = time.time() - 360
    os.utime(lock, (old, old))
    # host B completes A's journal
    kept = [m for i, m in enumerate(msgs, 1) if i not in dele]
    want = h.model_messages(b"".join(kept) + CR.NEW)
    b = hs.session("B")
    if hs.login(b) != "+OK Logged in.":
        raise h.Fail("host B: no login after host A died")
    st = hs.cmd(b, "STAT")
    if not st.startswith("+OK %d " % len(want)):
        raise h.Fail("host B: STAT %r, expected %d messages" % (st, len(want)))
    got = hs.retr_all(b, len(want))
    for i, (g, w) in enumerate(zip(got, want), 1):
        if g != w:
            raise h.Fail("host B: message %d differs after recovery" % i)
    hs.cmd(b, "QUIT")
    hs.end(b, "B")
    with open(hs.mbox(), "rb") as f:
        data = f.read()
    if data != b"".join(kept) + CR.NEW:
        raise h.Fail("the shared maildrop after recovery is not the kept messages and "
                     "the new one (%d octets)" % len(data))
    if os.path.getsize(os.path.join(hs.uid_dir(), journals[0])) != 0:
        raise h.Fail("the journal is not empty after host B's session")


def case_concurrent(h):
    hs = Hosts(h)
    write_mbox(h, hs.mbox(), b"")
    sent, got = [], []
    for rnd in range(8):
        for k in range(2):
            mid = "<r%dm%d@shared.test>" % (rnd, k)
            h.deliver(hs.mbox(), b"From x@example.org Mon Jan 24 11:15:10 2022\n"
                      b"Received: by mx id R%dM%d\nMessage-ID: %s\n\nround %d\n\n"
                      % (rnd, k, mid.encode(), rnd))
            sent.append(mid)
        a, b = hs.session("A"), hs.session("B")
        ra, rb = hs.login(a), hs.login(b)
        if sorted([ra, rb]) != sorted(["+OK Logged in.", INUSE]):
            raise h.Fail("round %d: A %r, B %r (one must win, one [IN-USE])" % (rnd, ra, rb))
        win = a if ra == "+OK Logged in." else b
        n = int(hs.cmd(win, "STAT").split()[1])
        for lines in hs.retr_all(win, n):
            got += [ln[12:].decode() for ln in lines if ln.startswith(b"Message-ID: ")]
        for i in range(1, n + 1):
            hs.cmd(win, "DELE %d" % i)
        if hs.cmd(win, "QUIT") != "+OK Logging out, messages deleted." and n:
            raise h.Fail("round %d: QUIT failed" % rnd)
        hs.end(a, "A")
        hs.end(b, "B")
    if sorted(got) != sorted(sent):
        raise h.Fail("retrieved %d, delivered %d: lost %r, twice %r"
                     % (len(got), len(sent), sorted(set(sent) - set(got)),
                        sorted(m for m in set(got) if got.count(m) > 1)))


def tests(h):
    for name, fn in (("shared/lock-is-fcntl", case_lock_is_fcntl),
                     ("shared/state-names", case_state_names),
                     ("shared/dotlock-foreign-pid", case_dotlock_foreign_pid),
                     ("shared/two-hosts", case_two_hosts),
                     ("shared/concurrent", case_concurrent)):
        if not h.wanted(name):
            continue
        if not h.ROOT:
            print("SKIP %s: needs root (mount namespaces, root mode)" % name, flush=True)
            continue
        if h.VALGRIND and fn is case_two_hosts:
            # as in the crash suite: memcheck and the fault shim do not mix
            print("SKIP %s: the LD_PRELOAD fault shim under memcheck" % name, flush=True)
            continue
        try:
            fn(h)
            h.report(name, True)
        except (h.Fail, OSError, subprocess.SubprocessError) as e:
            h.report(name, False, "%s: %s" % (type(e).__name__, e), h.diag_for(h.ENV.work, name))
