"""tests/suites/crash.py: crash-safe UPDATE, through real pop3d sessions.

A session deletes a mix of messages and QUITs with tests/faultinject.so
preloaded (next to pam_wrapper), which counts the write points of the
UPDATE (write, pwrite, fsync, ftruncate, fallocate on the maildrop and its
journal) and SIGKILLs pop3d right before or right after the Nth one.  Then
another program delivers a message (dotlockfile + fcntl, like an MDA), and
a fresh session (the recovery) must find every kept message byte for byte
and in order, plus the new one, with STAT counting them: the deleted ones
all gone, or all back only when pop3d died before its first mailbox write.
Also a full disk or I/O error at each point (QUIT answers -ERR [SYS/TEMP],
nothing is lost), and RLIMIT_FSIZE (prlimit) on the journal and on the
maildrop.

Short form (make check): every point, both ways, on a 20-message maildrop
(~240 KB) for two deletion patterns; a sample of points on the same with a
4.5 MiB message (several 4 MiB chunks, journaled data); full disk at every
point of one pattern.  STRESS=1: every pattern, every point, both sizes.
"""
import glob
import os
import re
import shutil
import time

FROMS = (b"From alice@example.org Wed Jan 24 10:49:06 2011\n",
         b"From bob@example.org  Thu Feb  3 08:00:00 2011\n")
SIZES = [300, 5000, 120, 70000, 800, 33000, 150, 9000, 2500, 400, 60000,
         1000, 200, 15000, 700, 4000, 90, 25000, 600, 1500]
BIG = 4 * 1024 * 1024 + 512 * 1024          # message 3 of the big maildrop
NEW = (b"\nFrom carol@example.org Fri Feb  4 09:00:00 2011\n"
       b"Subject: delivered after the crash\n\nnew mail\n")
PATTERNS = {
    "oldest": [1],
    "half": list(range(1, 21, 2)),
    "all-but-last": list(range(1, 20)),
    "middle": [10],
}


def message(i, size):
    head = FROMS[i % 2] + (b"Received: from relay%d.example.org by mx; "
                           b"Wed, 24 Jan 2011 10:49:%02d +0000\n"
                           b"Subject: message %d\nMessage-ID: <%d@crash.test>\n\n"
                           % (i, i % 60, i, i))
    line = b"message %d: the quick brown fox jumps over the lazy dog %%d\n" % i
    body, k = [], 0
    n = len(head)
    while n < size:
        l = line % k
        body.append(l)
        n += len(l)
        k += 1
    return head + b"".join(body)


def chunks(big):
    out = []
    for i, s in enumerate(SIZES, 1):
        m = message(i, big if big and i == 3 else s)
        out.append(m + (b"\n" if i < len(SIZES) else b""))
    return out


class Crash:
    def __init__(self, h, big):
        self.h = h
        env = h.ENV
        self.case = env.new_case("user")
        self.mbox = os.path.join(self.case, "mail", env.user)
        self.state = os.path.join(self.case, "state")
        self.log = os.path.join(self.case, "mail", "faults.log")
        self.chunks = chunks(BIG if big is True else big)
        self.orig = b"".join(self.chunks)
        self.nerr = 0

    @property
    def journal(self):
        """The account's journal (named by pop3d: one per account), or a
        name that does not exist before the first session."""
        found = glob.glob(os.path.join(self.state, "*.journal"))
        return found[0] if found else os.path.join(self.state, "none.journal")

    def reset(self):
        with open(self.mbox, "wb") as f:
            f.write(self.orig)
        if self.h.ROOT:
            os.chown(self.mbox, self.h.ENV.u1.pw_uid, self.h.ENV.u1.pw_gid)
        if os.path.exists(self.journal):
            os.truncate(self.journal, 0)
        if os.path.exists(self.log):
            os.unlink(self.log)

    def session(self, lines, fault=None, prefix=()):
        """One session; returns (output, exit status, stderr)."""
        h = self.h
        env = h.ENV.session_env()
        if fault is not None:
            env["LD_PRELOAD"] = " ".join(
                [SHIM] + ([env["LD_PRELOAD"]] if "LD_PRELOAD" in env else []))
            env["FAULT_PATHS"] = "%s:*.journal" % self.mbox
            env["FAULT_LOG"] = self.log
            env.update(fault)
        self.nerr += 1
        s = h.Session(list(prefix) + h.ENV.argv("user", self.case), env,
                      os.path.join(self.case, "stderr-%d" % self.nerr))
        s.queue("".join(l + "\r\n" for l in lines).encode())
        s.close_in()
        out = s.read_rest()
        if out is None:
            s.kill()
            raise h.Fail("session did not end")
        rc = s.wait()
        h.sanitizer_check([s])
        return out, rc, s.stderr()

    def dele_session(self, dels, fault=None, prefix=()):
        env = self.h.ENV
        lines = ["USER " + env.user, "PASS " + env.pw]
        lines += ["DELE %d" % n for n in dels] + ["QUIT"]
        return self.session(lines, fault, prefix)

    def points(self):
        """The write points logged: count, first that changes the mailbox."""
        n, first = 0, 0
        if os.path.exists(self.log):
            with open(self.log) as f:
                for line in f:
                    p = line.split()
                    n += 1
                    if not first and p[2] == self.mbox and "sync" not in p[1]:
                        first = n
            os.unlink(self.log)
        return n, first

    def expected(self, dels):
        kept = [c for i, c in enumerate(self.chunks, 1) if i not in dels]
        return b"".join(kept), len(kept)

    def recover(self, want, count, untouched, where):
        """Delivers NEW, runs the recovery session, checks the maildrop."""
        self.stale_dotlock()
        self.h.deliver(self.mbox, NEW)
        env = self.h.ENV
        out, rc, err = self.session(["USER " + env.user, "PASS " + env.pw,
                                     "STAT", "QUIT"])
        with open(self.mbox, "rb") as f:
            got = f.read()
        m = re.search(rb"\+OK (\d+) \d+\r\n", out)
        if got == want + NEW and m and int(m.group(1)) == count + 1:
            return
        if untouched and got == self.orig + NEW and m and \
                int(m.group(1)) == len(self.chunks) + 1:
            return
        if os.path.exists(self.journal) and os.path.getsize(self.journal):
            why = "journal left"
        elif got.startswith(want) and got != want + NEW:
            why = "new mail lost or garbage after the kept messages"
        else:
            why = "kept messages damaged"
        raise self.h.Fail("%s: %s (%d octets, want %d; STAT %r)" % (
            where, why, len(got), len(want + NEW),
            m.group(0) if m else out[-80:]))

    def stale_dotlock(self):
        """The dead pop3d's dotlock: dotlockfile without -p waits 5 minutes
        before it takes a lock over; a pid-checking MDA (liblockfile's L_PID,
        as pop3d itself) takes it at once.  Do that here."""
        lock = self.mbox + ".lock"
        try:
            with open(lock) as f:
                pid = int(f.read().strip() or "0")
        except (OSError, ValueError):
            return
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os.unlink(lock)
        except PermissionError:
            pass

    def journal_order(self):
        """The write-ahead rule, from the log of a whole UPDATE: nothing is
        written to the mailbox while a journal write is not yet fsynced
        (a kill cannot show a missing fsync; a power cut would)."""
        dirty = None
        with open(self.log) as f:
            for line in f:
                n, call, path = line.split()[:3]
                if path.endswith(".journal"):
                    dirty = None if "sync" in call else \
                        dirty or "%s %s" % (n, call)
                elif path == self.mbox and "sync" not in call and dirty:
                    raise self.h.Fail("mailbox %s at point %s while the "
                                      "journal's %s was not fsynced"
                                      % (call, n, dirty))

    def count_points(self, dels):
        self.reset()
        out, rc, err = self.dele_session(dels, {})
        self.journal_order()
        n, first = self.points()
        want, count = self.expected(dels)
        with open(self.mbox, "rb") as f:
            got = f.read()
        if b"+OK Logging out, messages deleted." not in out or got != want:
            raise self.h.Fail("update without faults failed: %r" % out[-100:])
        if n < 3 or not first:
            raise self.h.Fail("only %d write points logged" % n)
        return n, first

    def kill_at(self, dels, k, mode, first):
        self.reset()
        out, rc, err = self.dele_session(
            dels, {"FAULT_KILL_AT": str(k), "FAULT_MODE": mode})
        self.points()
        if rc != -9:
            raise self.h.Fail("point %d %s: pop3d was not killed (exit %r)"
                              % (k, mode, rc))
        want, count = self.expected(dels)
        untouched = k <= first if mode == "before" else k < first
        self.recover(want, count, untouched, "killed %s point %d" % (mode, k))

    def error_at(self, dels, k, var, first):
        self.reset()
        out, rc, err = self.dele_session(dels, {var: str(k)})
        self.points()
        want, count = self.expected(dels)
        with open(self.mbox, "rb") as f:
            got = f.read()
        jsize = os.path.getsize(self.journal) if os.path.exists(self.journal) else 0
        if b"-ERR [SYS/TEMP]" in out:
            if got == self.orig and jsize != 0 and k < first:
                raise self.h.Fail("%s at %d: unchanged but the journal is left"
                                  % (var, k))
        elif b"+OK Logging out, messages deleted." in out:
            if got != want:      # only the journal's clearing may fail
                raise self.h.Fail("%s at %d: +OK but the update is not done"
                                  % (var, k))
        else:
            raise self.h.Fail("%s at %d: QUIT got %r" % (var, k, out[-100:]))
        self.recover(want, count, True, "%s at point %d" % (var, k))


def sample(n, first, count):
    """count points spread over first..n, always first, first+1 and n."""
    pts = {first, min(first + 1, n), n}
    for i in range(count):
        pts.add(first + (n - first) * i // max(count - 1, 1))
    return sorted(p for p in pts if 1 <= p <= n)


SHIM = None


def tests(h):
    # memcheck and the LD_PRELOAD fault shim do not mix; VALGRIND=1 skips
    if h.VALGRIND:
        return
    global SHIM
    stress = os.environ.get("STRESS") == "1"
    names = ["crash/kill-small", "crash/kill-big", "crash/kill-recovery",
             "crash/enospc",
             "crash/fsize-journal", "crash/fsize-mailbox"]
    if not any(h.wanted(n) for n in names):
        return
    src = os.path.join(h.TESTS, "faultinject.so")
    if not os.path.exists(src):
        for n in names:
            if h.wanted(n):
                h.report(n, False, "%s is not built (make check builds it)" % src)
        return
    SHIM = os.path.join(h.ENV.work, "faultinject.so")
    shutil.copy(src, SHIM)
    os.chmod(SHIM, 0o755)
    total = {"kills": 0, "errors": 0}

    def run(name, fn):
        if not h.wanted(name):
            return
        t0 = time.monotonic()
        try:
            info = fn()
            h.report(name, True)
            print("INFO %s: %s, %.1f s" % (name, info, time.monotonic() - t0),
                  flush=True)
        except h.Fail as e:
            h.report(name, False, str(e))

    def kills(big, patterns, every, nsample):
        c = Crash(h, big)
        done = []
        for pat in patterns:
            dels = PATTERNS[pat]
            n, first = c.count_points(dels)
            pts = list(range(1, n + 1)) if every else sample(n, first, nsample)
            for mode in ("before", "after"):
                for k in pts:
                    c.kill_at(dels, k, mode, first)
                    total["kills"] += 1
            done.append("%s %d/%d points x2" % (pat, len(pts), n))
        return "killed at " + ", ".join(done)

    run("crash/kill-small", lambda: kills(False, list(PATTERNS), True, 0))
    run("crash/kill-big", lambda: kills(
        True, list(PATTERNS) if stress else ["oldest", "middle"], True, 0))

    def kill_recovery():
        # pop3d killed in its UPDATE, mail delivered, the recovery killed
        # at each of its own write points, more mail, a last recovery.
        c = Crash(h, True)
        dels = PATTERNS["half" if stress else "oldest"]
        n, first = c.count_points(dels)
        want, count = c.expected(dels)
        env, done = h.ENV, 0
        for k in range(first, n + 1) if stress else sample(n, first, 3):
            for j in range(1, 1000):
                c.reset()
                c.dele_session(dels, {"FAULT_KILL_AT": str(k),
                                      "FAULT_MODE": "after"})
                c.points()
                c.stale_dotlock()
                h.deliver(c.mbox, NEW)
                out, rc, err = c.session(
                    ["USER " + env.user, "PASS " + env.pw, "QUIT"],
                    {"FAULT_KILL_AT": str(j), "FAULT_MODE": "before"})
                c.points()
                if rc != -9:
                    break           # the recovery ran to its end
                c.recover(want + NEW, count + 1, False,
                          "update killed at %d, recovery at %d" % (k, j))
                done += 1
                total["kills"] += 1
        if done == 0:
            raise h.Fail("no recovery was killed")
        return "%d recoveries killed" % done
    run("crash/kill-recovery", kill_recovery)

    def enospc():
        c = Crash(h, False)
        done = []
        for pat in PATTERNS:
            dels = PATTERNS[pat]
            n, first = c.count_points(dels)
            for k in range(1, n + 1):
                c.error_at(dels, k, "FAULT_ENOSPC_AT" if k % 2 or not stress
                           else "FAULT_EIO_AT", first)
                total["errors"] += 1
            done.append("%s %d points" % (pat, n))
        return "write errors at " + ", ".join(done)
    run("crash/enospc", enospc)

    def fsize_journal():
        # The small maildrop's journal reserves 2 x 260 KB; 300 KB of file
        # size is too little for it, plenty for the maildrop's writes.
        c = Crash(h, False)
        c.reset()
        dels = PATTERNS["oldest"]
        out, rc, err = c.dele_session(dels, prefix=["prlimit", "--fsize=300000"])
        with open(c.mbox, "rb") as f:
            got = f.read()
        if b"-ERR [SYS/TEMP]" not in out or got != c.orig or \
                os.path.getsize(c.journal) != 0:
            raise h.Fail("QUIT got %r, mailbox %s, journal %d octets" % (
                out[-60:], "unchanged" if got == c.orig else "changed",
                os.path.getsize(c.journal)))
        c.recover(*c.expected([]), True, "after EFBIG")
        return "EFBIG on the journal: -ERR [SYS/TEMP], unchanged"
    run("crash/fsize-journal", fsize_journal)

    def fsize_mailbox():
        # A limit below the maildrop's size but above the journal's: the
        # writes past the limit fail in the middle of the compaction; the
        # next session completes the update from the journal.
        c = Crash(h, 12 * 1024 * 1024)
        c.reset()
        dels = PATTERNS["oldest"]
        limit = len(c.orig) - 2000000
        out, rc, err = c.dele_session(dels, prefix=["prlimit",
                                                    "--fsize=%d" % limit])
        jsize = os.path.getsize(c.journal)
        if b"-ERR [SYS/TEMP]" not in out or jsize == 0:
            raise h.Fail("QUIT got %r, journal %d octets" % (out[-60:], jsize))
        c.recover(*c.expected(dels), False, "after EFBIG mid-way")
        return "EFBIG mid-compaction: -ERR [SYS/TEMP], completed next session"
    run("crash/fsize-mailbox", fsize_mailbox)
    if total["kills"] or total["errors"]:
        print("INFO crash: pop3d killed at %d write points, %d write errors "
              "injected; every kept message intact" % (total["kills"],
                                                       total["errors"]),
              flush=True)
