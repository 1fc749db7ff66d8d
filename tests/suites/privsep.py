# tests/suites/privsep.py: privilege separation proven from /proc (issue 4,
# point 1), root only.  While the AUTHORIZATION state runs, the process
# that reads the client is the pop3d user with no groups, no capabilities,
# chrooted to the empty directory, NoNewPrivs, seccomp filter, no core
# dumps, no new processes or files; after login exactly one process
# remains, with exactly the user's ids and groups minus group mail, no
# capabilities, and no way back to root.  transcripts/privsep.pop checks
# the process list; this checks every field.
import grp
import os
import pwd

H = None


def status(pid):
    f = {}
    with open("/proc/%d/status" % pid) as fh:
        for line in fh:
            k, _, v = line.partition(":")
            f[k] = v.split()
    return f


def limits(pid):
    out = {}
    with open("/proc/%d/limits" % pid) as fh:
        for line in fh.readlines()[1:]:
            name = line[:26].strip()
            out[name] = line[26:47].strip()
    return out


def group_procs(pgid):
    pids = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % p) as fh:
                st = fh.read()
            fields = st.rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                pids.append(int(p))
        except (OSError, ValueError, IndexError):
            continue
    return sorted(pids)


def check(cond, what, problems):
    if not cond:
        problems.append(what)


def preauth(h, case, s):
    """Checks the pre-auth child; returns the list of problems."""
    pw = pwd.getpwnam("pop3d")
    pids = group_procs(s.p.pid)
    kids = [p for p in pids if p != s.p.pid]
    if len(pids) != 2 or len(kids) != 1:
        return ["processes before login: %s" % pids]
    c = kids[0]
    st, lim = status(c), limits(c)
    p = []
    check(st["Uid"] == [str(pw.pw_uid)] * 4, "child Uid %s" % st["Uid"], p)
    check(st["Gid"] == [str(pw.pw_gid)] * 4, "child Gid %s" % st["Gid"], p)
    check(st.get("Groups", []) == [], "child Groups %s" % st.get("Groups"), p)
    for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        check(int(st[cap][0], 16) == 0, "child %s %s" % (cap, st[cap]), p)
    check(st["NoNewPrivs"] == ["1"], "child NoNewPrivs %s" % st["NoNewPrivs"], p)
    check(st["Seccomp"] == (["0"] if h.SAN else ["2"]), "child Seccomp %s (2: filter; 0 in ASan builds)" % st["Seccomp"], p)
    check(os.readlink("/proc/%d/root" % c) == "/var/lib/pop3d/empty",
          "child root %s" % os.readlink("/proc/%d/root" % c), p)
    check(lim["Max core file size"] == "0", "child core limit %s" %
          lim["Max core file size"], p)
    check(lim["Max processes"] == "0", "child process limit %s" %
          lim["Max processes"], p)
    check(lim["Max open files"] == "1", "child open-file limit %s" %
          lim["Max open files"], p)
    # The child reads the client: its fd 0 is the session's input.
    check(os.readlink("/proc/%d/fd/0" % c) == os.readlink("/proc/%d/fd/0" % s.p.pid),
          "child does not hold the client input", p)
    fds = os.listdir("/proc/%d/fd" % c)
    check(len(fds) <= 5, "child has %d fds: %s" % (len(fds), fds), p)
    return p


def session_checks(user, s):
    pids = group_procs(s.p.pid)
    if pids != [s.p.pid]:
        return ["processes after login: %s (want only %d)" % (pids, s.p.pid)]
    st = status(s.p.pid)
    p = []
    mail = grp.getgrnam("mail").gr_gid
    want_groups = sorted(({g.gr_gid for g in grp.getgrall()
                           if user.pw_name in g.gr_mem} | {user.pw_gid}) - {mail})
    check(st["Uid"] == [str(user.pw_uid)] * 4, "Uid %s" % st["Uid"], p)
    check(st["Gid"] == [str(user.pw_gid)] * 4, "Gid %s" % st["Gid"], p)
    got = sorted(int(g) for g in st.get("Groups", []))
    check(got == want_groups, "Groups %s, want %s" % (got, want_groups), p)
    check(mail not in got, "group mail kept", p)
    for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        check(int(st[cap][0], 16) == 0, "%s %s" % (cap, st[cap]), p)
    return p


def tests(h):
    global H
    # memcheck adds fds and raises limits in the child; VALGRIND=1 skips
    if h.VALGRIND:
        return
    H = h
    name = "privsep/proc"
    if not h.wanted(name):
        return
    if not h.ROOT:
        return
    user = h.ENV.u1
    # Make the test user a member of group mail, to see it dropped.
    h.etc_update(["usermod", "-a", "-G", "mail", user.pw_name])
    case = h.ENV.new_case("root")
    mbox = os.path.join(case, "mail", user.pw_name)
    with open(os.path.join(h.FIX, "seed.mbox"), "rb") as f:
        seed = f.read()
    with open(mbox, "wb") as f:
        f.write(seed)
    os.chown(mbox, user.pw_uid, user.pw_gid)
    os.chmod(mbox, 0o600)
    s = h.Session(h.ENV.argv("root", case), h.ENV.session_env(),
                  os.path.join(case, "stderr-1"))
    problems = []
    try:
        if s.readline() != b"+OK pop3d ready.\r\n":
            raise h.Fail("no greeting")
        problems += preauth(h, case, s)
        s.queue(b"USER %s\r\nPASS wrong\r\n" % user.pw_name.encode())
        if s.readline() != b"+OK\r\n" or \
                s.readline() != b"-ERR [AUTH] Authentication failed.\r\n":
            raise h.Fail("wrong password not refused")
        problems += ["after a failed login: " + x for x in preauth(h, case, s)]
        s.queue(b"USER %s\r\nPASS %s\r\n" % (user.pw_name.encode(), h.ENV.pw.encode()))
        if s.readline() != b"+OK\r\n" or s.readline() != b"+OK Logged in.\r\n":
            raise h.Fail("login failed")
        problems += ["after login: " + x for x in session_checks(user, s)]
        s.queue(b"STAT\r\nQUIT\r\n")
        if s.readline() != b"+OK 3 2086\r\n" or s.readline() != b"+OK Logging out.\r\n":
            raise h.Fail("STAT/QUIT failed")
        s.close_in()
        if s.read_rest() != b"" or s.wait() != 0:
            raise h.Fail("session did not end cleanly")
        h.sanitizer_check([s])
        h.report(name, not problems, "; ".join(problems))
    except h.Fail as e:
        h.report(name, False, str(e))
    finally:
        if s.p.returncode is None:
            s.kill()
        try:
            h.etc_update(["gpasswd", "-d", user.pw_name, "mail"])
        except h.Fail as e:
            # another run on the machine may have taken it out already
            if user.pw_name in grp.getgrnam("mail").gr_mem:
                h.report(name + "/cleanup", False, str(e))
