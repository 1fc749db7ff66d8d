# Other writers (issue 3, point 5).  Another program changes the maildrop
# while a session holds it (under the same dotlock + fcntl locks a mail
# reader takes): a rewrite that changes a header length, one that deletes a
# message, one that replaces the file by rename.  The session's next
# RETR/TOP answers -ERR [SYS/TEMP] and the session ends, or its QUIT with
# deletions answers -ERR [SYS/TEMP]; either way the file afterwards is
# exactly what the other writer made.  A writer that only appends (procmail
# here) is fine.  Two sessions for one maildrop: the second gets [IN-USE],
# also when it reaches the file by another name.  Dotlocks: a stale one
# (liblockfile's rules: the pid in it is dead, or it holds no pid and is
# older than 5 minutes) is taken over; a live one gives -ERR [SYS/TEMP]
# after --lock-timeout (and, on a loaded machine, at most tests/run's LATE
# later).  All cases take about 8 s together.
import importlib.util
import os
import pwd
import re
import shutil
import signal
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CHANGED = b"-ERR [SYS/TEMP] Mailbox was changed by another program."
LOCKED = b"-ERR [SYS/TEMP] Mailbox is locked, try again later."


def _delivery():
    spec = importlib.util.spec_from_file_location("pop3d_suite_delivery_w",
                                                  os.path.join(HERE, "delivery.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Case:
    """A case directory, its maildrop, and sessions started in it."""

    def __init__(self, h, name, mode="user", fixture="seed.mbox", extra=(),
                 passwd=None):
        self.h, self.name, self.mode = h, name, mode
        self.dir = h.ENV.new_case(mode)
        self.path = os.path.join(self.dir, "mail", h.ENV.vuser)
        self.extra = list(extra)
        self.passwd = passwd
        self.vuser = None
        self.sessions = []
        if fixture is not None:
            self.put(h.read_fixtures([fixture]))
            # an old mtime, like the transcripts' @mailbox
            os.utime(self.path, ns=(1_300_000_000_000_000_000, 1_300_000_000_000_000_000))

    def put(self, data, path=None):
        path = path or self.path
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, 0o600)
        if self.h.ROOT:
            os.chown(path, self.h.ENV.u1.pw_uid, self.h.ENV.u1.pw_gid)

    def read(self):
        with open(self.path, "rb") as f:
            return f.read()

    def start(self, pam=False):
        h = self.h
        argv = h.ENV.argv(self.mode, self.dir, self.extra)
        if self.passwd:
            argv[argv.index("--passwd-file") + 1] = self.passwd
        if self.vuser:
            argv[argv.index("--virtual-user") + 1] = self.vuser
        s = h.Session(argv, h.ENV.session_env(pam),
                      os.path.join(self.dir, "stderr-%d" % (len(self.sessions) + 1)))
        self.sessions.append(s)
        return s

    def login(self, user=None, pw=None, want=b"+OK Logged in.", pam=False):
        h = self.h
        s = self.start(pam)
        expect(h, s, b"+OK pop3d ready.", "greeting")
        s.queue(b"USER %s\r\nPASS %s\r\n" % ((user or h.ENV.vuser).encode(),
                                             (pw or h.ENV.vpw).encode()))
        expect(h, s, re.compile(rb"\+OK.*"), "USER")
        expect(h, s, want, "PASS")
        return s

    def finish(self):
        """Every session ended; sanitizer clean; no dotlock left."""
        h = self.h
        for s in self.sessions:
            if s.p.returncode is None:
                s.close_in()
                if s.read_rest() is None or s.wait() is None:
                    raise h.Fail("a session did not end")
        h.sanitizer_check(self.sessions)

    def cleanup(self):
        for s in self.sessions:
            if s.p.returncode is None:
                s.kill()


def expect(h, s, want, where):
    l = s.readline()
    if l is None:
        raise h.Fail("%s: no reply in time" % where)
    if l == b"":
        raise h.Fail("%s: connection closed" % where)
    l = l.rstrip(b"\r\n")
    ok = want.fullmatch(l) if hasattr(want, "fullmatch") else l == want
    if not ok:
        raise h.Fail("%s: got %r, expected %r" % (where, l,
                                                  getattr(want, "pattern", want)))
    return l


def expect_end(h, s, where):
    """The session ends by itself (EOF without our input closing)."""
    rest = s.read_rest()
    if rest is None:
        raise h.Fail("%s: the session did not end by itself" % where)
    if rest:
        raise h.Fail("%s: more output: %r" % (where, rest[:80]))
    if s.wait() is None:
        raise h.Fail("%s: the session did not exit" % where)


def retr(h, s, n, where):
    s.queue(b"RETR %d\r\n" % n)
    expect(h, s, re.compile(rb"\+OK \d+ octets"), where)
    lines = []
    while True:
        l = s.readline()
        if not l:
            raise h.Fail("%s: message cut short" % where)
        l = l.rstrip(b"\r\n")
        if l == b".":
            return lines
        lines.append(l[1:] if l.startswith(b"..") else l)


def split_mbox(data):
    """The raw entries of an mbox (From_ line to the next From_ line)."""
    starts = [0] + [m.start() + 2 for m in re.finditer(rb"\n\nFrom ", data)]
    return [data[a:b] for a, b in zip(starts, starts[1:] + [len(data)])]


# ------------------------------------------------------------ the writers

def rewrite_in_place(h, c, data):
    """A mail reader rewriting the file in place under both locks."""
    def write(fd):
        with open(c.path, "r+b") as f:
            f.write(data)
            f.truncate(len(data))
    _delivery().Appender(h, c.path).locked(write)


def rewrite_by_rename(h, c, data):
    """A mail reader writing a new file and renaming it over the old one,
    holding the locks on the old one (as Mailutils does)."""
    def write(fd):
        tmp = c.path + ".new"
        c.put(data, tmp)
        os.rename(tmp, c.path)
    _delivery().Appender(h, c.path).locked(write)


def longer_subject(data):
    """The first Subject: header, made longer (an earlier message's header
    changes length: every later offset moves)."""
    i = data.index(b"\nSubject:") + 1
    return data[:i] + b"Subject: [tagged by another reader] " + data[i + 9:].lstrip(b" ")


def without_header_line(data):
    """The first message loses one header line (X-Original-To)."""
    i = data.index(b"\nX-Original-To:") + 1
    return data[:i] + data[data.index(b"\n", i) + 1:]


def without_message(data, n):
    parts = split_mbox(data)
    del parts[n - 1]
    out = b"".join(parts)
    return out if out.endswith(b"\n") else out + b"\n"


# ------------------------------------------------------------ the cases

def changed_cases(h):
    """(name, writer, what the session does after it)."""
    return [
        ("writers/header-longer-then-retr", rewrite_in_place, longer_subject, "RETR 2"),
        ("writers/header-shorter-then-top", rewrite_in_place, without_header_line, "TOP 3 0"),
        ("writers/message-deleted-then-retr", rewrite_in_place,
         lambda d: without_message(d, 2), "RETR 3"),
        ("writers/message-deleted-then-quit", rewrite_in_place,
         lambda d: without_message(d, 3), "QUIT"),
        ("writers/header-longer-then-quit", rewrite_in_place, longer_subject, "QUIT"),
        ("writers/renamed-then-retr", rewrite_by_rename, lambda d: d, "RETR 2"),
        ("writers/renamed-then-quit", rewrite_by_rename,
         lambda d: without_message(d, 1), "QUIT"),
    ]


def run_changed(h, name, writer, change, after):
    c = Case(h, name)
    try:
        s = c.login()
        s.queue(b"STAT\r\nDELE 1\r\n")
        expect(h, s, b"+OK 3 2086", "STAT")
        expect(h, s, b"+OK Marked to be deleted.", "DELE 1")
        before = c.read()
        new = change(before)
        writer(h, c, new)
        s.queue(after.encode() + b"\r\n")
        expect(h, s, CHANGED, after)
        expect_end(h, s, after)
        if c.read() != new:
            raise h.Fail("the file afterwards is not what the other writer made")
        if after == "QUIT" and writer is rewrite_by_rename and os.path.exists(c.path + ".new"):
            raise h.Fail("temporary file left")
        # the next session sees the writer's file and works normally
        s2 = c.login()
        want = len(h.model_messages(new))
        s2.queue(b"STAT\r\nQUIT\r\n")
        expect(h, s2, re.compile(rb"\+OK %d \d+" % want), "STAT after")
        expect(h, s2, b"+OK Logging out.", "QUIT after")
        c.finish()
        if c.read() != new:
            raise h.Fail("the file changed after a read-only session")
        if os.path.lexists(c.path + ".lock"):
            raise h.Fail("dotlock left behind")
    finally:
        c.cleanup()


def run_append(h, name):
    """procmail appends during the session: RETR still works, QUIT with
    deletions keeps the appended mail after the kept messages."""
    d = _delivery()
    c = Case(h, name)
    try:
        s = c.login()
        s.queue(b"STAT\r\n")
        expect(h, s, b"+OK 3 2086", "STAT")
        agent = d.Procmail(h, c.path, c.dir, run_as=h.ENV.u1 if h.ROOT else None)
        agent.deliver(d.mta_input("writers", 1))
        seed = h.read_fixtures(["seed.mbox"])
        msgs = h.model_messages(seed)
        if retr(h, s, 3, "RETR 3") != msgs[2]:
            raise h.Fail("RETR 3 after an append: text differs")
        s.queue(b"DELE 2\r\n")
        expect(h, s, b"+OK Marked to be deleted.", "DELE 2")
        agent.deliver(d.mta_input("writers", 2))
        s.queue(b"STAT\r\nQUIT\r\n")
        expect(h, s, b"+OK 2 1051", "STAT")
        expect(h, s, b"+OK Logging out, messages deleted.", "QUIT")
        expect_end(h, s, "QUIT")
        c.finish()
        want = h.read_fixtures(["seed-13.mbox"]) + d.mbox_entry("writers", 1) + \
            d.mbox_entry("writers", 2)
        got = c.read()
        if got != want:
            raise h.Fail("mailbox is %d bytes, expected seed-13 + 2 appended (%d)"
                         % (len(got), len(want)))
    finally:
        c.cleanup()


def run_in_use(h, name, spelling):
    """Two sessions for one maildrop: the second gets [IN-USE] and the first
    goes on.  spelling: how the second login names the maildrop: "same"
    (the same user), "alias" (another password-file user whose line names
    the same path), "symlinked-dir" (the same file through a symlinked
    spool directory, as /var/spool/mail -> ../mail on Debian)."""
    c = Case(h, name)
    try:
        passwd = None
        if spelling != "same":
            link = os.path.join(c.dir, "spool")
            os.symlink("mail", link)
            where = c.path if spelling == "alias" else \
                os.path.join(link, h.ENV.vuser)
            passwd = os.path.join(c.dir, "passwd-alias")
            with open(h.ENV.passwd["user"]) as f:
                text = f.read()
            with open(passwd, "w") as f:
                f.write(text + "alias:%s:%s\n" % (h.crypt_hash("Alias-pass-1"), where))
            os.chmod(passwd, 0o600)
            if h.ROOT:
                os.chown(passwd, h.ENV.u1.pw_uid, h.ENV.u1.pw_gid)
            c.passwd = passwd
        s1 = c.login()
        s1.queue(b"DELE 1\r\n")
        expect(h, s1, b"+OK Marked to be deleted.", "first: DELE 1")
        if spelling == "same":
            s2 = c.login(want=b"-ERR [IN-USE] Mailbox is in use by another session.")
        else:
            s2 = c.login("alias", "Alias-pass-1",
                         want=b"-ERR [IN-USE] Mailbox is in use by another session.")
        s2.close_in()
        s2.read_rest()
        seed = h.model_messages(h.read_fixtures(["seed.mbox"]))
        if retr(h, s1, 3, "first: RETR 3") != seed[2]:
            raise h.Fail("first: RETR 3 differs")
        s1.queue(b"QUIT\r\n")
        expect(h, s1, b"+OK Logging out, messages deleted.", "first: QUIT")
        expect_end(h, s1, "first: QUIT")
        c.finish()
        if c.read() != h.read_fixtures(["seed-23.mbox"]):
            raise h.Fail("the mailbox is not seed-23 afterwards")
    finally:
        c.cleanup()


def dead_pid():
    """The pid of a process that has exited (and been reaped)."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def run_dotlock(h, name, content, age, stale, mode="user", spool=None):
    """A dotlock left before the session: stale ones are taken over (login
    quickly, QUIT deletes, no lock left), valid ones give [SYS/TEMP] after
    --lock-timeout 1 and leave the file and the lock alone."""
    c = Case(h, name, mode=mode, extra=["--lock-timeout", "1"])
    try:
        if spool:           # /var/mail/USER: the lock goes through dotlockfile
            c.path, c.passwd, owner = spool
            with open(c.path, "wb") as f:
                f.write(h.read_fixtures(["seed.mbox"]))
            c.vuser = owner
        lock = c.path + ".lock"
        with open(lock, "wb") as f:
            f.write(content)
        if h.ROOT and not spool:
            # left by a delivery running as the user; in /var/mail by a
            # setgid-mail one
            os.chown(lock, h.ENV.u1.pw_uid, h.ENV.u1.pw_gid)
        elif spool:
            import grp
            os.chown(lock, 0, grp.getgrnam("mail").gr_gid)
            os.chmod(lock, 0o644)
        t = time.time() - age
        os.utime(lock, (t, t))
        before = c.read()
        t0 = time.monotonic()
        user, pw = ("dlv", "Dlv-pass-1") if spool else (None, None)
        if stale:
            # The login works only if an attempt within --lock-timeout took
            # the stale lock over ([SYS/TEMP] otherwise); how long the
            # login took would measure the machine's load, not pop3d.
            s = c.login(user, pw)
            s.queue(b"DELE 1\r\nQUIT\r\n")
            expect(h, s, b"+OK Marked to be deleted.", "DELE 1")
            expect(h, s, b"+OK Logging out, messages deleted.", "QUIT")
            expect_end(h, s, "QUIT")
            c.finish()
            if c.read() != h.read_fixtures(["seed-23.mbox"]):
                raise h.Fail("the mailbox is not seed-23 afterwards")
            if os.path.lexists(lock):
                raise h.Fail("the stale lock is still there")
        else:
            s = c.login(user, pw, want=LOCKED)
            took = time.monotonic() - t0
            if not 0.9 <= took <= 1 + h.LATE:
                raise h.Fail("[SYS/TEMP] after %.2f s, expected 1 s (--lock-timeout)"
                             " and at most %.0f s later" % (took, h.LATE))
            expect_end(h, s, "PASS")
            c.finish()
            if c.read() != before:
                raise h.Fail("the mailbox changed")
            with open(lock, "rb") as f:
                if f.read() != content:
                    raise h.Fail("the valid lock was touched")
            os.unlink(lock)
    finally:
        c.cleanup()


def run_killed_holder(h, name):
    """A real `dotlockfile -l -p LOCK sleep 3600` holds the lock (until it
    is killed here, however slow the machine): the session gets [SYS/TEMP]
    after the bounded wait; once the holder is killed (SIGKILL: its lock
    stays, naming a dead pid) the next login takes the stale lock over and
    the session works."""
    c = Case(h, name, extra=["--lock-timeout", "1"])
    holder = None
    try:
        lock = c.path + ".lock"
        holder = subprocess.Popen(["dotlockfile", "-l", "-p", "-r", "0", lock,
                                   "sleep", "3600"], start_new_session=True)
        deadline = time.monotonic() + h.TIMEOUT
        while not os.path.exists(lock):
            if time.monotonic() > deadline or holder.poll() is not None:
                raise h.Fail("dotlockfile did not take the lock")
            time.sleep(0.01)
        if h.ROOT:
            os.chown(lock, h.ENV.u1.pw_uid, h.ENV.u1.pw_gid)
        t0 = time.monotonic()
        s = c.login(want=LOCKED)
        if time.monotonic() - t0 < 0.9:
            raise h.Fail("[SYS/TEMP] before --lock-timeout")
        expect_end(h, s, "PASS")
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
        if not os.path.exists(lock):
            raise h.Fail("the killed holder's lock vanished (nothing to take over)")
        s = c.login()
        s.queue(b"DELE 2\r\nQUIT\r\n")
        expect(h, s, b"+OK Marked to be deleted.", "DELE 2")
        expect(h, s, b"+OK Logging out, messages deleted.", "QUIT")
        expect_end(h, s, "QUIT")
        c.finish()
        if c.read() != h.read_fixtures(["seed-13.mbox"]):
            raise h.Fail("the mailbox is not seed-13 afterwards")
        if os.path.lexists(lock):
            raise h.Fail("the stale lock is still there")
    finally:
        if holder and holder.poll() is None:
            os.killpg(holder.pid, signal.SIGKILL)
            holder.wait()
        c.cleanup()


def spool_setup(h):
    """As root: /var/mail/pop3dlv (root:mail 2775 spool, so the user cannot
    create or remove the dotlock itself: liblockfile runs dotlockfile) and a
    password file naming it."""
    d = _delivery()
    h.ensure_user(d.SPOOL_USER)
    path = "/var/mail/" + d.SPOOL_USER
    for p in (path, path + ".lock"):
        if os.path.lexists(p):
            os.unlink(p)
    u = pwd.getpwnam(d.SPOOL_USER)
    with open(path, "wb"):
        pass
    os.chown(path, u.pw_uid, u.pw_gid)
    os.chmod(path, 0o600)
    pwfile = os.path.join(h.ENV.work, "passwd-spool-writers")
    with open(pwfile, "w") as f:
        f.write("dlv:%s:%s\n" % (h.crypt_hash("Dlv-pass-1"), path))
    os.chmod(pwfile, 0o600)
    return path, pwfile, d.SPOOL_USER


def tests(h):
    def run(name, fn, *args, **kw):
        if not h.wanted(name):
            return
        try:
            fn(h, name, *args, **kw)
            h.report(name, True)
        except (h.Fail, OSError, subprocess.SubprocessError) as e:
            h.report(name, False, "%s: %s" % (type(e).__name__, e),
                     h.diag_for(h.ENV.work, name))

    for name, writer, change, after in changed_cases(h):
        run(name, run_changed, writer, change, after)
    if shutil.which("procmail"):
        run("writers/procmail-appends", run_append)
    elif h.wanted("writers/procmail-appends"):
        h.report("writers/procmail-appends", False, "procmail is not installed")
    for spelling in ("same", "alias", "symlinked-dir"):
        run("writers/in-use-" + spelling, run_in_use, spelling)
    old = 6 * 60
    run("writers/dotlock-dead-pid-taken-over", run_dotlock,
        b"%d\n" % dead_pid(), 0, True)
    run("writers/dotlock-old-no-pid-taken-over", run_dotlock, b"", old, True)
    run("writers/dotlock-fresh-no-pid-waits", run_dotlock, b"", 0, False)
    run("writers/dotlock-live-pid-old-waits", run_dotlock,
        b"%d\n" % os.getpid(), old, False)
    run("writers/dotlock-killed-holder", run_killed_holder)
    if h.ROOT:
        for name, content, stale in (
                ("writers/spool-dotlock-dead-pid/root", b"%d\n" % dead_pid(), True),
                ("writers/spool-dotlock-live-pid/root", b"%d\n" % os.getpid(), False)):
            if not h.wanted(name):
                continue
            try:
                with _delivery().spool_guard(h):
                    spool = spool_setup(h)
                    run(name, run_dotlock, content, 0, stale, mode="root", spool=spool)
                    for p in (spool[0], spool[0] + ".lock"):
                        if os.path.lexists(p):
                            os.unlink(p)
            except (h.Fail, OSError, subprocess.SubprocessError) as e:
                h.report(name, False, "set-up: %s" % e)
