# tests/suites/hostile_mbox.py: hostile maildrops (issue 4, point 2): links,
# other owners, a symlinked lock file, a directory, a fifo, NULs, a giant
# line, a From_ line in every line, a million tiny messages, a truncated
# last message, and memory that stays flat for a big mailbox (1 GB with
# STRESS=1).  Each must get a clear -ERR or be served exactly; none may
# crash, leak another user's mail or write outside the user's maildrop.
# Also the client-side cases that need more than a transcript: the debug
# log of format-string names, a 10,000-NOOP flood, a slow client.
import os
import pwd
import re
import shutil
import stat
import time

H = None
SEED = None
FROM = b"From a@example.org Mon Jan  1 00:00:00 2000\n"


class Case:
    """One session on a fresh case directory, as the virtual user."""

    def __init__(self, mode, extra=()):
        self.mode = mode
        self.dir = H.ENV.new_case(mode)
        self.mbox = os.path.join(self.dir, "mail", H.ENV.vuser)
        self.extra = list(extra)
        self.s = None

    def owner(self):
        return H.ENV.u1

    def write(self, data, path=None):
        p = path or self.mbox
        with open(p, "wb") as f:
            f.write(data)
        os.chmod(p, 0o600)
        if H.ROOT:
            os.chown(p, self.owner().pw_uid, self.owner().pw_gid)
        return p

    def start(self):
        self.s = H.Session(H.ENV.argv(self.mode, self.dir, self.extra),
                           H.ENV.session_env(), os.path.join(self.dir, "stderr-1"))
        self.expect(b"+OK pop3d ready.")
        return self.s

    def send(self, text):
        self.s.queue(text.encode("latin-1") if isinstance(text, str) else text)
        self.s.flush()

    def line(self, timeout=None):
        got = self.s.readline(timeout or H.TIMEOUT)
        if got is None:
            raise H.Fail("timeout waiting for a reply")
        if got == b"":
            raise H.Fail("connection closed")
        return got.rstrip(b"\r\n")

    def expect(self, want, timeout=None):
        got = self.line(timeout)
        if isinstance(want, bytes) and got != want:
            raise H.Fail("expected %r, got %r" % (want, got[:120]))
        if not isinstance(want, bytes) and not re.fullmatch(want, got):
            raise H.Fail("expected /%s/, got %r" % (want.pattern, got[:120]))
        return got

    def login(self, timeout=None):
        self.send("USER %s\r\nPASS %s\r\n" % (H.ENV.vuser, H.ENV.vpw))
        self.expect(b"+OK")
        return self.line(timeout)

    def multiline(self, timeout=None):
        """The lines of a multi-line reply up to '.', dot-unstuffed."""
        out = []
        while True:
            l = self.line(timeout)
            if l == b".":
                return out
            out.append(l[1:] if l.startswith(b".") else l)

    def end(self):
        self.s.close_in()
        rest = self.s.read_rest()
        rc = self.s.wait()
        H.sanitizer_check([self.s])
        if rest is None or rc is None:
            raise H.Fail("session did not end")
        return rest, rc

    def kill(self):
        if self.s and self.s.p.returncode is None:
            self.s.kill()

    def log(self):
        return self.s.stderr() if self.s else b""

    def hwm_kb(self):
        with open("/proc/%d/status" % self.s.p.pid) as f:
            for l in f:
                if l.startswith("VmHWM:"):
                    return int(l.split()[1])
        raise H.Fail("no VmHWM")


def run(name, mode, fn, extra=()):
    full = "hostile/%s/%s" % (name, mode)
    if not H.wanted(full):
        return
    c = Case(mode, extra)
    try:
        why = fn(c)
        H.report(full, True, why or "")
        if why:
            print("    # " + why, flush=True)
    except H.Fail as e:
        c.kill()
        H.report(full, False, str(e), [l for l in c.log().decode(
            "utf-8", "replace").splitlines()][-8:])
    finally:
        c.kill()


def unchanged(path, data, what):
    with open(path, "rb") as f:
        if f.read() != data:
            raise H.Fail("%s was changed" % what)


def perm_refused(c, why_re):
    c.start()
    got = c.login()
    if got != b"-ERR [SYS/PERM] Mailbox is unreadable or malformed.":
        raise H.Fail("login gave %r" % got)
    rest, rc = c.end()
    if rest:
        raise H.Fail("output after the -ERR: %r" % rest[:80])
    if not re.search(why_re, c.log()):
        raise H.Fail("log does not say %r" % why_re)


def other_user_file(c):
    """A file with another user's mail (pop3t2 as root, else a file of
    ours outside the mail directory)."""
    p = os.path.join(c.dir, "other.mbox")
    data = FROM + b"Subject: secret of another user\n\nTOP-SECRET\n"
    with open(p, "wb") as f:
        f.write(data)
    os.chmod(p, 0o600)
    if H.ROOT and H.ENV.u2:
        os.chown(p, H.ENV.u2.pw_uid, H.ENV.u2.pw_gid)
    return p, data


# ---- the cases ---------------------------------------------------------

def t_symlink_other(c):
    p, data = other_user_file(c)
    os.symlink(p, c.mbox)
    perm_refused(c, rb"open: Too many levels of symbolic links|symbolic")
    if b"TOP-SECRET" in c.s.stderr():
        raise H.Fail("the other mailbox leaked into the log")
    unchanged(p, data, "the link target")


def t_hardlink_other(c):
    p, data = other_user_file(c)
    if not H.ROOT:
        os.chmod(p, 0o600)
    os.link(p, c.mbox)
    perm_refused(c, rb"not owned by the user|more than one link|Permission denied")
    unchanged(p, data, "the linked file")


def t_owner(c):
    c.owner = lambda: H.ENV.u2
    c.write(SEED)
    os.chmod(c.mbox, 0o666)     # open() works: the owner check must refuse
    perm_refused(c, rb"not owned by the user")
    unchanged(c.mbox, SEED, "the maildrop")


def t_lock_symlink(c):
    """MAILBOX.lock is a symlink to a file elsewhere: never followed,
    never written; the session times out on the lock ([SYS/TEMP]) or is
    served, and the target keeps its bytes, owner and mode."""
    victim = os.path.join(c.dir, "victim")
    vdata = b"root:x:0:0:do not touch\n"
    with open(victim, "wb") as f:
        f.write(vdata)
    os.chmod(victim, 0o644)
    st0 = os.stat(victim)
    c.write(SEED)
    os.symlink(victim, c.mbox + ".lock")
    c.extra += ["--lock-timeout", "1"]
    c.start()
    got = c.login(timeout=H.TIMEOUT + 3)
    if got not in (b"-ERR [SYS/TEMP] Mailbox is locked, try again later.",
                   b"+OK Logged in."):
        raise H.Fail("login gave %r" % got)
    c.end()
    st1 = os.stat(victim)
    unchanged(victim, vdata, "the lock symlink's target")
    if (st1.st_uid, st1.st_mode, st1.st_mtime_ns) != (st0.st_uid, st0.st_mode,
                                                      st0.st_mtime_ns):
        raise H.Fail("the lock symlink's target was touched")
    if not os.path.islink(c.mbox + ".lock"):
        raise H.Fail("the lock symlink was replaced")
    unchanged(c.mbox, SEED, "the maildrop")
    return "login: %s" % got.decode()


def t_directory(c):
    os.mkdir(c.mbox)
    perm_refused(c, rb"not a regular file|Is a directory")


def t_fifo(c):
    os.mkfifo(c.mbox, 0o600)
    if H.ROOT:
        os.chown(c.mbox, H.ENV.u1.pw_uid, H.ENV.u1.pw_gid)
    perm_refused(c, rb"not a regular file")


def t_nuls(c):
    c.write(b"\0" * 1_000_000)
    perm_refused(c, rb"not an mbox file")
    unchanged(c.mbox, b"\0" * 1_000_000, "the maildrop")


def t_no_newline(c):
    c.write(b"x" * (50 << 20))
    perm_refused(c, rb"not an mbox file")


def t_giant_line(c):
    """A message whose body is one 50 MB line without a newline: served
    with the right size, memory bounded."""
    body = b"y" * (50 << 20)
    c.write(FROM + b"Subject: giant\n\n" + body)
    c.start()
    got = c.login(H.TIMEOUT * 4)
    if got != b"+OK Logged in.":
        raise H.Fail("login gave %r" % got)
    size = len(b"Subject: giant\r\n\r\n") + len(body) + 2
    c.send("LIST\r\n")
    c.expect(b"+OK 1 messages:")
    if c.multiline() != [b"1 %d" % size]:
        raise H.Fail("LIST is not 1 %d" % size)
    c.send("RETR 1\r\n")
    c.expect(b"+OK %d octets" % size)
    got = 0
    while True:
        l = c.s.readline(H.TIMEOUT * 4)
        if l is None or l == b"":
            raise H.Fail("RETR did not end")
        if l == b".\r\n":
            break
        got += len(l)
    if got != size:
        raise H.Fail("RETR sent %d octets, LIST said %d" % (got, size))
    hwm = c.hwm_kb()
    c.send("QUIT\r\n")
    c.expect(b"+OK Logging out.")
    c.end()
    if hwm > 40_000 and not H.SLOW:
        raise H.Fail("VmHWM %d kB for a 50 MB line" % hwm)
    return "VmHWM %d kB" % hwm


def t_from_every_line(c):
    """A From_ line in every line, with no blank line between: one message
    (From_ lines start a message only after a blank line); with blank
    lines between: one message per From_ line."""
    data = FROM * 5000
    c.write(data)
    c.start()
    if c.login() != b"+OK Logged in.":
        raise H.Fail("login failed")
    c.send("STAT\r\nRETR 1\r\n")
    c.expect(b"+OK 1 %d" % (4999 * (len(FROM) + 1)))
    c.expect(b"+OK %d octets" % (4999 * (len(FROM) + 1)))
    lines = c.multiline()
    if lines != [FROM.rstrip(b"\n")] * 4999:
        raise H.Fail("RETR 1 is not the 4999 From_ lines as stored")
    c.send("QUIT\r\n")
    c.expect(b"+OK Logging out.")
    c.end()
    c2 = Case(c.mode)
    try:
        c2.write((FROM + b"\n") * 5000)
        c2.start()
        c2.login()
        c2.send("STAT\r\nQUIT\r\n")
        c2.expect(b"+OK 5000 0")
        c2.expect(b"+OK Logging out.")
        c2.end()
    finally:
        c2.kill()


def t_truncated(c):
    data = SEED[:len(SEED) - 300]
    c.write(data)
    c.start()
    c.login()
    sizes = [H.model_size(m) for m in H.model_messages(data)]
    c.send("LIST\r\n")
    c.expect(b"+OK 3 messages:")
    got = c.multiline()
    if got != [b"%d %d" % (i + 1, n) for i, n in enumerate(sizes)]:
        raise H.Fail("LIST %r, the model says %r" % (got, sizes))
    c.send("RETR 3\r\n")
    c.expect(b"+OK %d octets" % sizes[2])
    body = c.multiline()
    if sum(len(l) + 2 for l in body) != sizes[2]:
        raise H.Fail("RETR 3 size differs from LIST")
    c.send("DELE 1\r\nQUIT\r\n")
    c.expect(b"+OK Marked to be deleted.")
    c.expect(b"+OK Logging out, messages deleted.")
    c.end()
    with open(c.mbox, "rb") as f:
        if f.read() != data[SEED.index(b"\nFrom ") + 1:]:
            raise H.Fail("UPDATE did not keep the truncated message as stored")


def many(c, n, hwm_max):
    one = b"From a Mon Jan  1 00:00:00 2000\nX\n\n"
    c.write(one * n)
    t0 = time.monotonic()
    c.start()
    got = c.login(H.TIMEOUT * 6)
    if got != b"+OK Logged in.":
        raise H.Fail("login gave %r" % got)
    c.send("STAT\r\n")
    c.expect(b"+OK %d %d" % (n, 3 * n), H.TIMEOUT * 4)
    took = time.monotonic() - t0
    hwm = c.hwm_kb()
    c.send("LIST %d\r\nUIDL %d\r\nQUIT\r\n" % (n, n))
    c.expect(b"+OK %d 3" % n)
    c.expect(re.compile(rb"\+OK %d [!-~]{1,70}" % n))
    c.expect(b"+OK Logging out.")
    c.end()
    if hwm > hwm_max and not H.SLOW:
        raise H.Fail("VmHWM %d kB for %d messages (max %d)" % (hwm, n, hwm_max))
    return "%d messages: login+STAT %.2f s, VmHWM %d kB" % (n, took, hwm)


def t_million(c):
    n = 100_000 if H.SLOW else 1_000_000
    # 64 octets of struct msg each, plus the process itself.
    return many(c, n, 64 * n // 1024 * 3 // 2 + 20_000)


def big(c, total, msgsize):
    """A mailbox of total octets in messages of msgsize: memory stays flat
    (a few MB) while it is scanned and a whole message is sent."""
    body_line = b"z" * 1023 + b"\n"
    head = b"Subject: big\n\n"
    per = msgsize // len(body_line)
    n = total // (len(FROM) + len(head) + per * len(body_line) + 1)
    with open(c.mbox, "wb") as f:
        chunk = body_line * per
        for _ in range(n):
            f.write(FROM + head + chunk + b"\n")
    os.chmod(c.mbox, 0o600)
    if H.ROOT:
        os.chown(c.mbox, H.ENV.u1.pw_uid, H.ENV.u1.pw_gid)
    size = len(b"Subject: big\r\n\r\n") + per * 1025
    fsize = os.path.getsize(c.mbox)
    t0 = time.monotonic()
    c.start()
    got = c.login(H.TIMEOUT * 12)
    if got != b"+OK Logged in.":
        raise H.Fail("login gave %r" % got)
    c.send("STAT\r\n")
    c.expect(b"+OK %d %d" % (n, n * size))
    took = time.monotonic() - t0
    hwm_scan = c.hwm_kb()
    c.send("RETR %d\r\n" % n)
    c.expect(b"+OK %d octets" % size)
    got = 0
    while True:
        l = c.s.readline(H.TIMEOUT * 4)
        if l in (None, b""):
            raise H.Fail("RETR did not end")
        if l == b".\r\n":
            break
        got += len(l)
    hwm = c.hwm_kb()
    c.send("QUIT\r\n")
    c.expect(b"+OK Logging out.")
    c.end()
    os.unlink(c.mbox)
    if got != size:
        raise H.Fail("RETR sent %d octets, LIST said %d" % (got, size))
    if hwm > 16_000 and not H.SLOW:
        raise H.Fail("VmHWM %d kB for a %d MB mailbox" % (hwm, fsize >> 20))
    return "%d MB, %d messages: login+STAT %.2f s, VmHWM %d kB after the scan, " \
           "%d kB after RETR" % (fsize >> 20, n, took, hwm_scan, hwm)


def t_big(c):
    return big(c, 64 << 20, 8 << 20)


def t_1gb(c):
    return big(c, 1 << 30, 64 << 20)


def t_cap(c):
    """Over --max-messages: the first messages are served, the rest is
    kept like mail that arrived later; a notice is logged."""
    c.extra += ["--max-messages", "2"]
    c.write(SEED)
    c.start()
    c.login()
    c.send("STAT\r\nDELE 1\r\nQUIT\r\n")
    c.expect(b"+OK 2 1536")
    c.expect(b"+OK Marked to be deleted.")
    c.expect(b"+OK Logging out, messages deleted.")
    c.end()
    if not re.search(rb"over the limit of 2 messages", c.log()):
        raise H.Fail("no notice in the log")
    unchanged(c.mbox, H.read_fixtures(["seed-23.mbox"]), "seed-23.mbox: the maildrop")


# ---- client side -------------------------------------------------------

def t_log_escape(c):
    c.write(SEED)
    c.start()
    c.send(b"USER %n%s%x%p\xff\x1b[2J\r\nPASS x\r\nQUIT\r\n")
    c.expect(b"+OK")
    c.expect(b"-ERR [AUTH] Authentication failed.")
    c.expect(b"+OK Logging out.")
    c.end()
    log = c.log()
    if not re.search(rb"login failed: user=%n%s%x%p\\xff\\x1b\[2J\n", log):
        raise H.Fail("the name is not in the log escaped: %r" % log[-300:])
    if b"\xff" in log or b"\x1b" in log:
        raise H.Fail("raw control or 8-bit octets in the log")


def t_flood(c):
    c.write(SEED)
    c.start()
    c.login()
    c.send(b"NOOP\r\n" * 10000 + b"STAT\r\n")
    for i in range(10000):
        got = c.line()
        if got != b"+OK":
            raise H.Fail("NOOP %d got %r" % (i + 1, got))
    c.expect(b"+OK 3 2086")
    c.send("QUIT\r\n")
    c.expect(b"+OK Logging out.")
    c.end()


def t_slow(c):
    """One octet per 50 ms still works (the timeouts are per line)."""
    c.write(SEED)
    c.start()
    text = "USER %s\r\nPASS %s\r\nSTAT\r\nQUIT\r\n" % (H.ENV.vuser, H.ENV.vpw)
    for ch in text:
        c.send(ch)
        time.sleep(0.05)
    c.expect(b"+OK")
    c.expect(b"+OK Logged in.")
    c.expect(b"+OK 3 2086")
    c.expect(b"+OK Logging out.")
    c.end()


def tests(h):
    global H, SEED
    H = h
    with open(os.path.join(h.FIX, "seed.mbox"), "rb") as f:
        SEED = f.read()
    stress = os.environ.get("STRESS") == "1"
    for mode in h.ENV.modes():
        run("symlink-to-other", mode, t_symlink_other)
        run("hardlink-to-other", mode, t_hardlink_other)
        if h.ROOT:
            run("owned-by-other", mode, t_owner)
        run("lock-symlink", mode, t_lock_symlink)
        run("directory", mode, t_directory)
        run("fifo", mode, t_fifo)
        run("nuls", mode, t_nuls)
        run("no-newline-50mb", mode, t_no_newline)
        run("from-every-line", mode, t_from_every_line)
        run("truncated-last", mode, t_truncated)
        run("max-messages", mode, t_cap)
        run("log-escape", mode, t_log_escape)
        run("flood-10000-noop", mode, t_flood)
    # The heavy ones once, in the mode that matters (root when root).
    mode = h.ENV.modes()[-1]
    run("giant-line-50mb", mode, t_giant_line)
    run("million-tiny", mode, t_million)
    run("big-64mb-flat", mode, t_big)
    run("slow-client", mode, t_slow)
    if stress:
        run("big-1gb-flat", mode, t_1gb)
