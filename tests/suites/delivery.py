# Concurrent delivery (issue 3, point 4): a real delivery agent delivers
# numbered messages into a maildrop while real pop3d sessions (over pipes)
# retrieve and delete, over and over, for a bounded time.  At the end every
# delivered message was either retrieved-then-deleted exactly once or is
# still in the mailbox exactly once, byte for byte.
#
#   delivery/procmail/user       procmail -m RCFILE (`:0:` recipe: dotlock +
#                                fcntl), run as the user; user-mode pop3d
#   delivery/procmail-d/root     procmail -d USER into /var/mail (setgid mail,
#                                as from an MTA); root-mode pop3d, whose
#                                dotlock goes through liblockfile's helper
#   delivery/dotlockfile/MODE    `dotlockfile -l -p`, fcntl (lockf), append
#
# Short form: about 4-5 s per case; STRESS=1: 45 s per case.  The helpers
# here (messages, appender, POP3 client over pipes, accounting) are also
# used by load.py.
import contextlib
import os
import pwd
import random
import re
import shutil
import subprocess
import threading
import time

STRESS = os.environ.get("STRESS") == "1"
FROM_LINE = b"From dlv-sender@example.org  Wed Nov 26 21:00:00 2025"
MSGID_RE = re.compile(rb"Message-ID: <(\d+)\.([\w.-]+)@pop3d\.test>$")
SPOOL_USER = "pop3dlv"          # owner of /var/mail/pop3dlv (root run only)


# ------------------------------------------------------------ /var/mail

@contextlib.contextmanager
def spool_guard(h, limit=120.0):
    """Holds a machine-wide lock while a case uses /var/mail/pop3dlv, so
    that test runs started at the same time from other trees wait."""
    import fcntl
    d = "/run/lock" if os.path.isdir("/run/lock") else "/tmp"
    fd = os.open(os.path.join(d, "pop3d-tests-spool.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + limit
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise h.Fail("/var/mail/%s stayed busy (another test run)" % SPOOL_USER)
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)


# ------------------------------------------------------------ messages

def message(tag, n):
    """Message n of the maildrop `tag`, as the client must see it: lines
    (bytes, without line ends), From_ line and separator excluded.  A body
    that varies in length, with lines that need dot-stuffing."""
    hdr = [b"Return-Path: <dlv-sender@example.org>",
           b"From: Delivery Test <dlv-sender@example.org>",
           b"To: %s@pop3d.test" % tag.encode(),
           b"Subject: message %d" % n,
           b"Message-ID: <%d.%s@pop3d.test>" % (n, tag.encode()),
           b"Date: Wed, 26 Nov 2025 21:00:00 +0000"]
    body = [b"message %d for %s" % (n, tag.encode()),
            b".a line that is dot-stuffed on the wire",
            b"",
            b"%s" % (b"0123456789abcdef" * ((n * 7) % 23)),
            b"..",
            b"end of message %d" % n]
    return hdr + [b""] + body


def mta_input(tag, n):
    """What an MTA hands the MDA: From_ line, message, final newline."""
    return FROM_LINE + b"\n" + b"\n".join(message(tag, n)) + b"\n"


def mbox_entry(tag, n):
    """What an appender writes: the MTA input and the separating blank line."""
    return mta_input(tag, n) + b"\n"


def identify(lines):
    """(tag, n) of a message from its Message-ID header, or None."""
    for l in lines:
        if l == b"":
            break
        m = MSGID_RE.match(l)
        if m:
            return m.group(2).decode(), int(m.group(1))
    return None


# ------------------------------------------------------------ delivery

class Appender:
    """A plain delivery agent: `dotlockfile -l -p` (tried once, retried
    here after a short random sleep, since its own retry sleeps 5 s), then
    an fcntl lock (lockf) waited for while holding the dotlock, as procmail
    does, then one append, then both released.  locked() gives the same
    locks to another writer (a mail reader rewriting the file)."""

    def __init__(self, h, path):
        self.h, self.path = h, path

    def locked(self, fn, limit=30.0):
        """Calls fn(fd) (fd: the maildrop, open for appending) holding the
        dotlock and the fcntl lock; returns what fn returns."""
        import fcntl
        h, lock = self.h, self.path + ".lock"
        deadline = time.monotonic() + limit
        while subprocess.run(["dotlockfile", "-l", "-p", "-r", "0", lock],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             timeout=limit).returncode != 0:
            if time.monotonic() > deadline:
                raise h.Fail("dotlockfile: %s never came free" % lock)
            time.sleep(random.uniform(0.005, 0.03))
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            try:
                while True:
                    try:
                        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except OSError:
                        if time.monotonic() > deadline:
                            raise h.Fail("fcntl lock on %s never came free" % self.path)
                        time.sleep(0.002)
                try:
                    return fn(fd)
                finally:
                    fcntl.lockf(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        finally:
            subprocess.run(["dotlockfile", "-u", lock], check=True, timeout=limit)

    def deliver(self, data, limit=30.0):
        def append(fd):
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            return True
        return self.locked(append, limit)


class Procmail:
    """procmail as the MDA: either `procmail -p -m RCFILE` run as the user
    (rcfile: a `:0:` recipe to the maildrop: procmail's dotlock plus its
    fcntl lock) or, as root, `procmail -d USER` into /var/mail/USER."""

    def __init__(self, h, path, case, run_as=None, recipient=None):
        self.h, self.path, self.recipient = h, path, recipient
        self.err = os.path.join(case, "stderr-procmail")
        self.prefix = []
        if recipient is None:
            rc = os.path.join(case, "procmailrc")
            with open(rc, "w") as f:
                # LOCKSLEEP: procmail's wait between dotlock attempts (8 s
                # by default) shortened so the short form delivers enough.
                f.write("LOCKSLEEP=1\nLOGFILE=%s\n:0:\n%s\n"
                        % (os.path.join(case, "procmail.log"), path))
            os.chmod(rc, 0o644)
            self.argv = ["procmail", "-p", "-m", rc]
            if run_as is not None:
                self.prefix = ["setpriv", "--reuid=%d" % run_as.pw_uid,
                               "--regid=%d" % run_as.pw_gid, "--clear-groups"]
                log = os.path.join(case, "procmail.log")
                open(log, "a").close()
                os.chown(log, run_as.pw_uid, run_as.pw_gid)
        else:
            self.argv = ["procmail", "-d", recipient]

    def deliver(self, data, limit=60.0):
        with open(self.err, "ab") as err:
            r = subprocess.run(self.prefix + self.argv, input=data, stdout=err,
                               stderr=err, timeout=limit,
                               env={"PATH": "/usr/bin:/bin", "LANG": "C"})
        if r.returncode != 0:
            raise self.h.Fail("procmail exited %d" % r.returncode)
        return True


class Deliverer(threading.Thread):
    """Delivers messages 1, 2, ... of `tag` with `agent` until stopped (or
    `count` messages), with short random pauses; records what was delivered."""

    def __init__(self, agent, tag, count=None, pause=(0.0, 0.04), seed=1):
        super().__init__(daemon=True)
        self.agent, self.tag, self.count, self.pause = agent, tag, count, pause
        self.rng = random.Random(seed)
        self.delivered = []
        self.error = None
        self.stop = threading.Event()

    def run(self):
        n = 0
        try:
            while not self.stop.is_set() and (self.count is None or n < self.count):
                n += 1
                data = mta_input(self.tag, n) if isinstance(self.agent, Procmail) \
                    else mbox_entry(self.tag, n)
                self.agent.deliver(data)
                self.delivered.append(n)
                time.sleep(self.rng.uniform(*self.pause))
        except Exception as e:           # reported by the test
            self.error = "%s: %s" % (type(e).__name__, e)


# ------------------------------------------------------------ accounting

class Tally:
    """What the POP3 side saw, for one maildrop."""

    def __init__(self, tag):
        self.tag = tag
        self.sessions = 0       # sessions that logged in
        self.retrieved = 0      # RETR replies checked byte for byte
        self.tops = 0
        self.deleted = []       # numbers deleted by a QUIT that said +OK
        self.dropped = 0        # sessions that dropped the connection after DELE
        self.busy = 0           # -ERR [SYS/TEMP] (lock timeout) at login or QUIT
        self.in_use = 0         # -ERR [IN-USE]
        self.lock = threading.Lock()

    def check_text(self, h, lines, where):
        who = identify(lines)
        if who is None or who[0] != self.tag:
            raise h.Fail("%s: not a message of %s: %r" % (where, self.tag, lines[:6]))
        if lines != message(*who):
            raise h.Fail("%s: message %d arrived altered" % (where, who[1]))
        return who[1]


def account(h, tally, delivered, path):
    """The final check: deleted + left == delivered, each exactly once, and
    the maildrop parses into exactly the messages expected, byte for byte.
    Returns the summary string for the PASS line."""
    if os.path.lexists(path + ".lock"):
        raise h.Fail("dotlock %s.lock left behind" % path)
    with open(path, "rb") as f:
        data = f.read()
    left = []
    for i, m in enumerate(h.model_messages(data)):
        left.append(tally.check_text(h, m, "mailbox message %d" % (i + 1)))
    if data and not data.endswith(b"\n\n"):
        raise h.Fail("the maildrop does not end with a blank line")
    import collections
    dup = sorted(n for n, k in collections.Counter(tally.deleted).items() if k > 1)
    if dup:
        raise h.Fail("deleted more than once: %s" % dup[:10])
    dup = sorted(n for n, k in collections.Counter(left).items() if k > 1)
    if dup:
        raise h.Fail("in the mailbox more than once: %s" % dup[:10])
    both = sorted(set(left) & set(tally.deleted))
    if both:
        raise h.Fail("deleted yet still in the mailbox: %s" % both[:10])
    want, got = set(delivered), set(left) | set(tally.deleted)
    if want != got:
        raise h.Fail("lost %s; never delivered %s" % (sorted(want - got)[:10],
                                                      sorted(got - want)[:10]))
    if left != sorted(left):
        raise h.Fail("messages out of order in the mailbox")
    return "delivered=%d retrieved=%d deleted=%d left=%d sessions=%d" % (
        len(delivered), tally.retrieved, len(tally.deleted), len(left), tally.sessions)


# ------------------------------------------------------------ POP3 side

def read_multi(h, s, where):
    lines = []
    while True:
        l = s.readline()
        if not l:
            raise h.Fail("%s: %s inside a multi-line reply" % (
                where, "timeout" if l is None else "EOF"))
        l = l[:-2] if l.endswith(b"\r\n") else l.rstrip(b"\n")
        if l == b".":
            return lines
        if l.startswith(b"."):
            if not l.startswith(b".."):
                raise h.Fail("%s: line %r not dot-stuffed" % (where, l))
            l = l[1:]
        lines.append(l)


def status(h, s, where):
    l = s.readline()
    if l is None:
        raise h.Fail("%s: no reply in time" % where)
    if l == b"":
        raise h.Fail("%s: connection closed" % where)
    return l.rstrip(b"\r\n")


def pop_session(h, argv, env, errpath, user, pw, tally, rng, keep_last=False,
                hold=0.0):
    """One session over pipes: login, STAT, RETR a random subset (checked
    byte for byte), DELE some of those, sometimes TOP or RSET, then QUIT (or,
    now and then, a dropped connection, which must delete nothing).
    keep_last: never delete the newest message, so the maildrop is not
    left empty.  hold: the session waits up to that long after STAT (a
    slow client), so that mail is delivered between its scan and its
    UPDATE."""
    s = h.Session(argv, env, errpath)
    try:
        s.queue(b"USER %s\r\nPASS %s\r\nSTAT\r\n" % (user.encode(), pw.encode()))
        if not status(h, s, "greeting").startswith(b"+OK"):
            raise h.Fail("no greeting")
        status(h, s, "USER")
        r = status(h, s, "PASS")
        if r.startswith(b"-ERR [SYS/TEMP]") or r.startswith(b"-ERR [IN-USE]"):
            with tally.lock:
                if b"IN-USE" in r:
                    tally.in_use += 1
                else:
                    tally.busy += 1
            s.close_in()
            s.read_rest()
            s.wait()
            h.sanitizer_check([s])
            return
        if r != b"+OK Logged in.":
            raise h.Fail("login: %r" % r)
        r = status(h, s, "STAT")
        m = re.match(rb"\+OK (\d+) (\d+)$", r)
        if not m:
            raise h.Fail("STAT: %r" % r)
        count = int(m.group(1))
        if hold:
            time.sleep(rng.uniform(0, hold))
        plan = []
        for i in range(1, count + 1):
            x = rng.random()
            if x < 0.55:
                plan.append(("RETR", i))
                if rng.random() < 0.75 and not (keep_last and i == count):
                    plan.append(("DELE", i))
            elif x < 0.6:
                plan.append(("TOP", i))
        rset = rng.random() < 0.05
        if rset:
            plan.append(("RSET", 0))
        drop = rng.random() < 0.08
        for cmd, i in plan:
            s.queue(b"%s %d\r\n" % (cmd.encode(), i) if cmd == "RETR" or cmd == "DELE"
                    else b"TOP %d 1\r\n" % i if cmd == "TOP" else b"RSET\r\n")
        if not drop:
            s.queue(b"QUIT\r\n")
        with tally.lock:
            tally.sessions += 1
        ids, marked, retrieved = {}, [], 0
        for cmd, i in plan:
            where = "%s %d of %d" % (cmd, i, count)
            r = status(h, s, where)
            if cmd == "RETR":
                m = re.match(rb"\+OK (\d+) octets$", r)
                if not m:
                    raise h.Fail("%s: %r" % (where, r))
                text = read_multi(h, s, where)
                if sum(len(l) + 2 for l in text) != int(m.group(1)):
                    raise h.Fail("%s: size in +OK differs from the octets sent" % where)
                ids[i] = tally.check_text(h, text, where)
                retrieved += 1
            elif cmd == "TOP":
                if not r.startswith(b"+OK"):
                    raise h.Fail("%s: %r" % (where, r))
                text = read_multi(h, s, where)
                who = identify(text)
                if who is None or who[0] != tally.tag:
                    raise h.Fail("%s: no Message-ID in the header" % where)
                full = message(*who)
                if text != full[:full.index(b"") + 2]:
                    raise h.Fail("%s: header or first body line altered" % where)
                with tally.lock:
                    tally.tops += 1
            elif cmd == "DELE":
                if r != b"+OK Marked to be deleted.":
                    raise h.Fail("%s: %r" % (where, r))
                marked.append(ids[i])
            elif r != b"+OK":
                if not r.startswith(b"+OK"):
                    raise h.Fail("RSET: %r" % r)
        if rset:
            marked = []
        with tally.lock:
            tally.retrieved += retrieved
        if drop:
            s.close_in()
            if s.read_rest() is None:
                raise h.Fail("session did not end after a dropped connection")
            if marked:
                with tally.lock:
                    tally.dropped += 1
        else:
            r = status(h, s, "QUIT")
            if marked and r == b"+OK Logging out, messages deleted.":
                with tally.lock:
                    tally.deleted += marked
            elif not marked and r == b"+OK Logging out.":
                pass
            elif marked and r.startswith(b"-ERR [SYS/TEMP] Mailbox is locked"):
                with tally.lock:
                    tally.busy += 1
            else:
                raise h.Fail("QUIT after %d DELE: %r" % (len(marked), r))
            s.close_in()
            rest = s.read_rest()
            if rest:
                raise h.Fail("output after QUIT: %r" % rest[:80])
        if s.wait() is None:
            raise h.Fail("session did not exit")
        h.sanitizer_check([s])
    finally:
        if s.p.returncode is None:
            s.kill()


# ------------------------------------------------------------ the cases

def run_case(h, name, mode, kind, seconds):
    case = h.ENV.new_case(mode)
    rng = random.Random(name)
    extra = ["--lock-timeout", "10"]
    if kind == "procmail-d":
        spool = pwd.getpwnam(SPOOL_USER)
        path = "/var/mail/" + SPOOL_USER
        for p in (path, path + ".lock"):
            if os.path.lexists(p):
                os.unlink(p)
        with open(path, "wb"):
            pass
        os.chown(path, spool.pw_uid, _mail_gid())
        os.chmod(path, 0o660)
        pwfile = os.path.join(case, "passwd-spool")
        with open(pwfile, "w") as f:
            f.write("dlv:%s:%s\n" % (h.crypt_hash("Dlv-pass-1"), path))
        os.chmod(pwfile, 0o600)
        argv = [h.ENV.pop3d, "--debug", "--fail-delay", "10", "--mailbox",
                os.path.join(case, "mail", "%u"), "--passwd-file", pwfile,
                "--state-dir", os.path.join(case, "state"),
                "--virtual-user", SPOOL_USER] + extra
        user, pw, env = "dlv", "Dlv-pass-1", h.ENV.session_env(False)
        agent = Procmail(h, path, case, recipient=SPOOL_USER)
    else:
        argv = h.ENV.argv(mode, case, extra)
        if kind == "procmail":
            user, pw, env = h.ENV.user, h.ENV.pw, h.ENV.session_env(True)
        else:
            user, pw, env = h.ENV.vuser, h.ENV.vpw, h.ENV.session_env(False)
        path = os.path.join(case, "mail", user)
        with open(path, "wb"):
            pass
        os.chmod(path, 0o600)
        if h.ROOT:
            os.chown(path, h.ENV.u1.pw_uid, h.ENV.u1.pw_gid)
        if kind == "procmail":
            agent = Procmail(h, path, case, run_as=h.ENV.u1 if h.ROOT else None)
        else:
            agent = Appender(h, path)
    tally = Tally("%s-%s" % (kind, mode))
    dl = Deliverer(agent, tally.tag, seed=rng.random())
    errpath = os.path.join(case, "stderr-1")
    dl.start()
    try:
        # At least `seconds`, and on until something was retrieved and
        # deleted (procmail -d may sit out 8 s on a lock it found taken,
        # and a loaded machine makes every session slower), but never more
        # than twice TIMEOUT past that.
        end = time.monotonic() + seconds
        hard = end + 2 * h.TIMEOUT
        while dl.error is None and time.monotonic() < hard and (
                time.monotonic() < end or tally.sessions < 3 or
                not tally.retrieved or not tally.deleted):
            # procmail sleeps 1 s, holding its locks, when it delivers in
            # the second the mailbox was last read (its atime hack for biff):
            # sessions there are fewer and slower, so that it delivers more
            # and delivers during sessions.
            slow = kind.startswith("procmail")
            pop_session(h, argv, env, errpath, user, pw, tally, rng,
                        keep_last=slow, hold=1.0 if slow else 0.1)
            time.sleep(rng.uniform(0.3, 0.8) if slow else rng.uniform(0, 0.1))
    finally:
        dl.stop.set()
        dl.join(90)
    if dl.is_alive():
        raise h.Fail("the delivery agent did not finish")
    if dl.error:
        raise h.Fail("delivery: " + dl.error)
    # One more session once delivery has stopped: it sees every message.
    pop_session(h, argv, env, errpath, user, pw, tally, rng)
    summary = account(h, tally, dl.delivered, path)
    if tally.sessions < 3 or tally.retrieved == 0 or not tally.deleted:
        raise h.Fail("too little happened: " + summary)
    if kind == "procmail-d":
        for p in (path, path + ".lock"):
            if os.path.lexists(p):
                os.unlink(p)
    if tally.busy or tally.dropped:
        summary += " busy=%d dropped=%d" % (tally.busy, tally.dropped)
    return summary


def _mail_gid():
    import grp
    return grp.getgrnam("mail").gr_gid


def tests(h):
    # sessions under memcheck are too slow for the bounded runs
    if h.VALGRIND:
        return
    seconds = 45 if STRESS else None
    cases = [("procmail", "user", 5), ("procmail-d", "root", 5),
             ("dotlockfile", "user", 4), ("dotlockfile", "root", 4)]
    for kind, mode, short in cases:
        name = "delivery/%s/%s" % (kind, mode)
        if not h.wanted(name):
            continue
        if mode == "root" and not h.ROOT:
            continue
        if kind.startswith("procmail") and not shutil.which("procmail"):
            h.report(name, False, "procmail is not installed (tests/deps.sh)")
            continue
        if kind == "procmail-d":
            h.ensure_user(SPOOL_USER)
        t0 = time.monotonic()
        try:
            if kind == "procmail-d":
                with spool_guard(h):
                    summary = run_case(h, name, mode, kind, seconds or short)
            else:
                summary = run_case(h, name, mode, kind, seconds or short)
            h.report(name + " (%s, %.1f s)" % (summary, time.monotonic() - t0), True)
        except (h.Fail, OSError, subprocess.SubprocessError) as e:
            h.report(name, False, "%s: %s" % (type(e).__name__, e),
                     h.diag_for(h.ENV.work, name))
