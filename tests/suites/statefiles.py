# tests/suites/statefiles.py: where a maildrop's state lives (session
# lock, UPDATE journal, scan cache), and who can reach it (issue 11, items
# 1 and 6).  Root only: every case runs pop3d as the test users.
#
# - state/swap-loop: pop3t1's maildrop directory is a symlink that a loop
#   (running as pop3t1) swaps between her own directory and pop3t2's,
#   while she logs in again and again; pop3t2 must never get [IN-USE]
#   from her sessions, and the state directory must hold nothing of hers
#   that names his maildrop.
# - state/replaced-journal-kept: a session killed in the middle of its
#   UPDATE leaves a journal; the maildrop is then replaced by another file.
#   The journal must be kept, and UPDATE refused, until an admin looks.
# - state/by-hand-*: run by hand with an unusable HOME, pop3d finds a
#   private state directory (beside the maildrop, $XDG_STATE_HOME), never
#   a name in /tmp that another user can take first, and says so clearly
#   when there is none.  A journal left by a killed session is found by
#   the next session run the same way.
import glob
import os
import pwd
import re
import shutil
import subprocess

SEED = None


def chown(path, user):
    os.lchown(path, user.pw_uid, user.pw_gid)


def login_lines(h, user=None, pw=None):
    return b"USER %s\r\nPASS %s\r\n" % ((user or h.ENV.user).encode(),
                                       (pw or h.ENV.pw).encode())


def start(h, argv, env, case, tag):
    return h.Session(argv, env, os.path.join(case, "stderr-" + tag))


def expect(h, s, want, what):
    got = s.readline()
    if got != want + b"\r\n":
        raise h.Fail("%s: got %r, expected %r" % (what, got, want))


def logged_in(h, s):
    """Expects the greeting and a successful USER/PASS."""
    expect(h, s, b"+OK pop3d ready.", "greeting")
    expect(h, s, b"+OK", "USER")
    expect(h, s, b"+OK Logged in.", "PASS")


def replace_maildrop(h, mbox, owner):
    """Puts a fresh seed.mbox in place of mbox: a new file (inode)."""
    new = mbox + ".new"
    shutil.copy(os.path.join(h.FIX, "seed.mbox"), new)
    chown(new, owner)
    os.rename(new, mbox)


def finish(h, s, what):
    s.close_in()
    if s.read_rest() is None or s.wait() is None:
        s.kill()
        raise h.Fail("%s: session did not end" % what)
    h.sanitizer_check([s])


def user_argv(h, case, mailbox, extra=()):
    """pop3d as pop3t1, by hand: no --state-dir."""
    argv = h.ENV.argv("user", case, ["--mailbox", mailbox] + list(extra))
    i = argv.index("--state-dir")
    return argv[:i] + argv[i + 2:]


# ------------------------------------------------------------ swap loop

SWAPPER = r"""
import os, sys
home, own, other = sys.argv[1:4]
link, tmp = os.path.join(home, "mail"), os.path.join(home, "mail.tmp")
i = 0
while True:
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    os.symlink(own if i % 2 else other, tmp)
    os.rename(tmp, link)
    i += 1
"""


def swap_loop(h, name):
    env = h.ENV
    eve, bob = env.u1, env.u2
    case = env.new_case("root")
    homes = os.path.join(case, "h")
    os.mkdir(homes)
    os.chmod(homes, 0o755)
    for u in (eve, bob):
        d = os.path.join(homes, u.pw_name)
        os.mkdir(d)
        os.chmod(d, 0o755)
        chown(d, u)
    own = os.path.join(homes, eve.pw_name, "own")
    bobmail = os.path.join(homes, bob.pw_name, "mail")
    for d, u in ((own, eve), (bobmail, bob)):
        os.mkdir(d)
        os.chmod(d, 0o755)
        chown(d, u)
        box = os.path.join(d, "inbox")
        shutil.copy(os.path.join(h.FIX, "seed.mbox"), box)
        os.chmod(box, 0o600)
        chown(box, u)
    os.symlink(own, os.path.join(homes, eve.pw_name, "mail"))
    chown(os.path.join(homes, eve.pw_name, "mail"), eve)
    template = os.path.join(homes, "%u", "mail", "inbox")
    argv = env.argv("root", case, ["--mailbox", template])
    swapper = subprocess.Popen(
        ["setpriv", "--reuid=%d" % eve.pw_uid, "--regid=%d" % eve.pw_gid,
         "--clear-groups", "/usr/bin/python3", "-c", SWAPPER,
         os.path.join(homes, eve.pw_name), own, bobmail],
        start_new_session=True)
    held = inuse = 0
    try:
        for i in range(40):
            s = start(h, argv, env.session_env(), case, "eve-%d" % i)
            expect(h, s, b"+OK pop3d ready.", "eve greeting")
            s.queue(login_lines(h))
            expect(h, s, b"+OK", "eve USER")
            got = s.readline()
            if got == b"+OK Logged in.\r\n":
                held += 1
            # while hers is open, his must work
            b = start(h, argv, env.session_env(), case, "bob-%d" % i)
            expect(h, b, b"+OK pop3d ready.", "bob greeting")
            b.queue(login_lines(h, env.user2, env.pw2) + b"STAT\r\nQUIT\r\n")
            expect(h, b, b"+OK", "bob USER")
            got_b = b.readline()
            if got_b != b"+OK Logged in.\r\n":
                inuse += 1
                finish(h, b, "bob")
                s.kill()
                raise h.Fail("round %d: pop3t2's login got %r while "
                             "pop3t1's session (%r) was open"
                             % (i, got_b, got))
            expect(h, b, b"+OK 3 2086", "bob STAT")
            expect(h, b, b"+OK Logging out.", "bob QUIT")
            finish(h, b, "bob")
            s.queue(b"QUIT\r\n")
            finish(h, s, "eve")
    finally:
        os.killpg(swapper.pid, 9)
        swapper.wait()
    # Nothing in the state directory of hers names his maildrop, and his
    # state is his: one directory per uid, each owned by its user.
    state = os.path.join(case, "state")
    problems = []
    for u in (eve, bob):
        d = os.path.join(state, str(u.pw_uid))
        if os.path.isdir(d) and os.stat(d).st_uid != u.pw_uid:
            problems.append("%s is not %s's" % (d, u.pw_name))
        for f in glob.glob(os.path.join(d, "*.lock")):
            text = open(f).read()
            if os.stat(f).st_uid != u.pw_uid:
                problems.append("%s is not %s's" % (f, u.pw_name))
            if u is eve and bobmail in text:
                problems.append("%s names %s" % (f, bobmail))
    extra = sorted(set(os.listdir(state)) - {str(eve.pw_uid), str(bob.pw_uid)})
    if extra:
        problems.append("other files in the state directory: %s" % extra)
    with open(os.path.join(bobmail, "inbox"), "rb") as f:
        if f.read() != SEED:
            problems.append("pop3t2's maildrop changed")
    if problems:
        raise h.Fail("; ".join(problems))
    print("    # 40 rounds of the swap loop: pop3t1 logged in %d times, "
          "pop3t2 never refused" % held, flush=True)


# ------------------------------------------------- killed in the middle

def first_mailbox_write(log, mbox):
    n = 0
    with open(log) as f:
        for n, line in enumerate(f, 1):
            p = line.split()
            if p[2] == mbox and "sync" not in p[1]:
                return n
    raise AssertionError("no mailbox write in %s" % log)


def killed_update(h, case, argv, mbox, env):
    """Runs DELE 1 + QUIT twice: once to find the first write to the
    maildrop, once killed right after it.  Leaves the journal behind."""
    shim = os.path.join(h.ENV.work, "faultinject-state.so")
    if not os.path.exists(shim):
        shutil.copy(os.path.join(h.TESTS, "faultinject.so"), shim)
        os.chmod(shim, 0o755)
    log = os.path.join(case, "mail", "faults.log")    # 1777: pop3t1 writes it
    fenv = dict(env)
    fenv["LD_PRELOAD"] = " ".join([shim] + ([env["LD_PRELOAD"]]
                                            if "LD_PRELOAD" in env else []))
    fenv["FAULT_PATHS"] = "%s:*.journal" % mbox
    fenv["FAULT_LOG"] = log
    original = open(mbox, "rb").read()
    lines = login_lines(h) + b"DELE 1\r\nQUIT\r\n"
    for k, fault in enumerate((None, "kill")):
        if fault:
            with open(mbox, "wb") as f:
                f.write(original)
            fenv["FAULT_KILL_AT"] = str(first_mailbox_write(log, mbox))
            fenv["FAULT_MODE"] = "after"
            os.unlink(log)
        s = start(h, argv, fenv, case, "killed-%d" % k)
        s.queue(lines)
        s.close_in()
        s.read_rest()
        rc = s.wait()
        if fault and rc != -9:
            raise h.Fail("pop3d was not killed in UPDATE (exit %r)" % rc)
        if os.path.exists(log) and fault:
            os.unlink(log)
    if open(mbox, "rb").read() == original:
        raise h.Fail("the killed UPDATE wrote nothing")


def replaced_journal(h, name):
    env = h.ENV
    case = env.new_case("user")
    mbox = os.path.join(case, "mail", env.user)
    shutil.copy(os.path.join(h.FIX, "seed.mbox"), mbox)
    chown(mbox, env.u1)
    argv = env.argv("user", case)
    killed_update(h, case, argv, mbox, env.session_env())
    journals = [j for j in glob.glob(os.path.join(case, "state", "*.journal"))
                if os.path.getsize(j) > 0]
    if len(journals) != 1:
        raise h.Fail("want one waiting journal, found %s" % journals)
    jsize = os.path.getsize(journals[0])
    # The admin (or a program) replaces the maildrop with a new file.
    replace_maildrop(h, mbox, env.u1)
    s = start(h, argv, env.session_env(), case, "after")
    s.queue(login_lines(h) + b"STAT\r\nDELE 1\r\nQUIT\r\n")
    logged_in(h, s)
    expect(h, s, b"+OK 3 2086", "STAT")
    expect(h, s, b"+OK Marked to be deleted.", "DELE 1")
    expect(h, s, b"-ERR [SYS/TEMP] Could not update the mailbox; "
           b"try again later.", "QUIT")
    finish(h, s, "after")
    err = s.stderr().decode("utf-8", "replace")
    if not os.path.exists(journals[0]) or \
            os.path.getsize(journals[0]) != jsize:
        raise h.Fail("the waiting journal was not kept")
    if open(mbox, "rb").read() != SEED:
        raise h.Fail("the new maildrop was changed")
    if "administrator" not in err:
        raise h.Fail("no log line for the administrator")


def replaced_collected(h, name):
    """The maildrop is replaced (a new inode) with no journal waiting: the
    next session removes the old file's state; one set per maildrop."""
    env = h.ENV
    case = env.new_case("user")
    mbox = os.path.join(case, "mail", env.user)
    state = os.path.join(case, "state")
    argv = env.argv("user", case)
    sets = []
    for k in range(3):
        replace_maildrop(h, mbox, env.u1)
        s = start(h, argv, env.session_env(), case, "%d" % k)
        s.queue(login_lines(h) + b"STAT\r\nQUIT\r\n")
        logged_in(h, s)
        expect(h, s, b"+OK 3 2086", "STAT")
        expect(h, s, b"+OK Logging out.", "QUIT")
        finish(h, s, "session %d" % k)
        sets.append(sorted(os.listdir(state)))
    st = os.stat(mbox)
    key = "%x-%x" % (st.st_dev, st.st_ino)
    want = sorted([key + ".cache", key + ".journal", key + ".lock"] +
                  [f for f in sets[-1] if f.startswith("path-")])
    if len([f for f in sets[-1] if f.startswith("path-")]) != 1 or \
            sets[-1] != want:
        raise h.Fail("state after three files at one path: %s (want the "
                     "set of %s and one path link)" % (sets, key))


# ------------------------------------------------------------- by hand

def by_hand(h, name, how):
    env = h.ENV
    eve = env.u1
    case = env.new_case("user")
    # a root-mode session of the shipped configuration (other suites) made
    # pop3t1's directory in the system state directory; run by hand,
    # pop3d would rightly share it: start from a machine without it
    shutil.rmtree("/var/lib/pop3d/state/%d" % eve.pw_uid, ignore_errors=True)
    if how == "beside-maildrop":
        # HOME still /root (setpriv or su without -l): the maildrop's own
        # directory (hers) holds the state
        d = os.path.join(case, "own")
        senv = dict(env.session_env(), HOME="/root")
        want_state = os.path.join(d, ".pop3d-state")
    elif how == "xdg":
        # no HOME, a maildrop in a shared spool, and /tmp/pop3d-UID taken
        # by another user first: $XDG_STATE_HOME
        d = os.path.join(case, "mail")
        xdg = os.path.join(case, "xdg")
        os.mkdir(xdg)
        chown(xdg, eve)
        os.chmod(xdg, 0o700)
        squat = "/tmp/pop3d-%d" % eve.pw_uid
        if not os.path.lexists(squat):
            os.mkdir(squat)
        chown(squat, env.u2)
        senv = dict(env.session_env(), XDG_STATE_HOME=xdg)
        want_state = os.path.join(xdg, "pop3d")
    else:
        # no HOME, no XDG_STATE_HOME, a shared spool: nowhere private
        d = os.path.join(case, "mail")
        senv = env.session_env()
        want_state = None
    if not os.path.isdir(d):
        os.mkdir(d)
        os.chmod(d, 0o700)
        chown(d, eve)
    mbox = os.path.join(d, eve.pw_name)
    shutil.copy(os.path.join(h.FIX, "seed.mbox"), mbox)
    chown(mbox, eve)
    argv = user_argv(h, case, os.path.join(d, "%u"))
    try:
        if want_state is None:
            s = start(h, argv, senv, case, "1")
            s.queue(login_lines(h))
            expect(h, s, b"+OK pop3d ready.", "greeting")
            expect(h, s, b"+OK", "USER")
            expect(h, s, b"-ERR [SYS/PERM] No usable state directory; see "
                   b"--state-dir in pop3d(8).", "PASS")
            finish(h, s, "session")
            if "--state-dir" not in s.stderr().decode("utf-8", "replace"):
                raise h.Fail("the log line does not name --state-dir")
            return
        killed_update(h, case, argv, mbox, senv)
        if not glob.glob(os.path.join(want_state, "*.journal")):
            raise h.Fail("no journal in %s" % want_state)
        s = start(h, argv, senv, case, "2")
        s.queue(login_lines(h) + b"STAT\r\nQUIT\r\n")
        logged_in(h, s)
        expect(h, s, b"+OK 2 1585", "STAT after the recovery")
        expect(h, s, b"+OK Logging out.", "QUIT")
        finish(h, s, "session")
        with open(os.path.join(h.FIX, "seed-23.mbox"), "rb") as f:
            if open(mbox, "rb").read() != f.read():
                raise h.Fail("the maildrop is not seed-23 after recovery")
        if not re.search(r"completed an interrupted update",
                         s.stderr().decode("utf-8", "replace")):
            raise h.Fail("no recovery logged")
    finally:
        if how == "xdg":
            shutil.rmtree("/tmp/pop3d-%d" % eve.pw_uid, ignore_errors=True)


def two_places(h, name):
    """A journal left in one place (beside the maildrop), sessions whose
    first place is another ($XDG_STATE_HOME): the first completes the
    journal under both places' locks; while it runs, a second session, in
    either environment, gets [IN-USE]."""
    env = h.ENV
    eve = env.u1
    case = env.new_case("user")
    shutil.rmtree("/var/lib/pop3d/state/%d" % eve.pw_uid, ignore_errors=True)
    d = os.path.join(case, "own")
    os.mkdir(d)
    os.chmod(d, 0o700)
    chown(d, eve)
    xdg = os.path.join(case, "xdg")
    os.mkdir(xdg)
    os.chmod(xdg, 0o700)
    chown(xdg, eve)
    mbox = os.path.join(d, eve.pw_name)
    shutil.copy(os.path.join(h.FIX, "seed.mbox"), mbox)
    chown(mbox, eve)
    argv = user_argv(h, case, os.path.join(d, "%u"))
    beside = env.session_env()
    with_xdg = dict(beside, XDG_STATE_HOME=xdg)
    killed_update(h, case, argv, mbox, beside)
    a = start(h, argv, with_xdg, case, "a")
    a.queue(login_lines(h) + b"STAT\r\n")
    logged_in(h, a)
    expect(h, a, b"+OK 2 1585", "STAT after the recovery")
    for tag, e in (("b", with_xdg), ("c", beside)):
        b = start(h, argv, e, case, tag)
        b.queue(login_lines(h))
        expect(h, b, b"+OK pop3d ready.", "greeting " + tag)
        expect(h, b, b"+OK", "USER " + tag)
        expect(h, b, b"-ERR [IN-USE] Mailbox is in use by another session.",
               "PASS %s while the first session runs" % tag)
        finish(h, b, tag)
    a.queue(b"QUIT\r\n")
    expect(h, a, b"+OK Logging out.", "QUIT")
    finish(h, a, "a")


def long_path_note(h, name):
    """The note that remembers a hidden pseudo-message is read whole,
    however long the maildrop path written beside it."""
    env = h.ENV
    case = env.new_case("user")
    d = os.path.join(case, "mail")
    for i in range(4):
        d = os.path.join(d, "%d" % i + "d" * 60)
        os.mkdir(d)
        os.chmod(d, 0o755)
        chown(d, env.u1)
    mbox = os.path.join(d, env.user)
    shutil.copy(os.path.join(h.FIX, "uw.mbox"), mbox)
    chown(mbox, env.u1)
    argv = env.argv("user", case, ["--mailbox", os.path.join(d, "%u")])
    stats = []
    for k in range(3):
        s = start(h, argv, env.session_env(), case, "%d" % k)
        s.queue(login_lines(h) + b"STAT\r\nQUIT\r\n")
        logged_in(h, s)
        stats.append(s.readline())
        expect(h, s, b"+OK Logging out.", "QUIT")
        finish(h, s, "session %d" % k)
    if len(set(stats)) != 1:
        raise h.Fail("STAT changed between sessions: %s" % stats)


def tests(h):
    global SEED
    # the fault shim and memcheck do not mix
    if not h.ROOT or h.VALGRIND:
        return
    with open(os.path.join(h.FIX, "seed.mbox"), "rb") as f:
        SEED = f.read()
    cases = [("state/swap-loop/root", swap_loop, ()),
             ("state/replaced-journal-kept", replaced_journal, ()),
             ("state/replaced-collected", replaced_collected, ()),
             ("state/by-hand-beside-maildrop", by_hand, ("beside-maildrop",)),
             ("state/by-hand-xdg-tmp-squatted", by_hand, ("xdg",)),
             ("state/by-hand-nowhere", by_hand, ("nowhere",)),
             ("state/by-hand-two-places-one-lock", two_places, ()),
             ("state/note-long-path", long_path_note, ())]
    for name, fn, args in cases:
        if not h.wanted(name):
            continue
        try:
            fn(h, name, *args)
            h.report(name, True)
        except (h.Fail, OSError, AssertionError, subprocess.SubprocessError) as e:
            h.report(name, False, "%s: %s" % (type(e).__name__, e),
                     h.diag_for(h.ENV.work, name))
