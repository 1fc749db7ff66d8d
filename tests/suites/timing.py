# tests/suites/timing.py: no user enumeration (issue 4, point 4).  The
# reply and its timing are the same for an unknown user and a wrong
# password: 200 tries of each, interleaved, for PAM (pam_matrix through
# pam_wrapper) with --fail-delay 0 so that the cost of the check itself is
# measured, and for the password file (crypt with a dummy hash for
# unknown names, then PAM) with a short delay, which pop3d counts from the
# start of the attempt; the medians must be within 10%.  As root, the same
# for the system's pam_unix (50 tries each: its hash makes a try slow).
# Then a few tries with the default delay: both wait at least that long,
# and the same.
import os
import statistics
import time

H = None
TRIES = 200


def attempts(mode, extra, pairs, pam=True):
    """Runs login attempts (user, password), three per session (the third
    failure ends it), one at a time.  Returns the seconds from sending
    PASS to the reply, per attempt, and the replies seen."""
    times, replies = [], set()
    case = H.ENV.new_case(mode)
    i = 0
    while i < len(pairs):
        batch = pairs[i:i + 3]
        i += 3
        s = H.Session(H.ENV.argv(mode, case, extra), H.ENV.session_env(pam),
                      os.path.join(case, "stderr-%d" % i))
        try:
            if s.readline() != b"+OK pop3d ready.\r\n":
                raise H.Fail("no greeting")
            for user, pw in batch:
                s.queue(b"USER " + user.encode() + b"\r\n")
                if s.readline() != b"+OK\r\n":
                    raise H.Fail("USER refused")
                s.queue(b"PASS " + pw.encode() + b"\r\n")
                t0 = time.perf_counter()
                s.flush()
                r = s.readline(H.TIMEOUT * 2)
                times.append(time.perf_counter() - t0)
                replies.add(r)
            s.close_in()
            s.read_rest()
            s.wait()
            H.sanitizer_check([s])
        finally:
            if s.p.returncode is None:
                s.kill()
    return times, replies


def compare(name, mode, extra, known, unknown, n, pam=True, floor=None):
    if not H.wanted(name):
        return
    pairs = []
    for k in range(n):                  # interleaved, positions balanced
        a, b = (known, unknown) if k % 2 == 0 else (unknown, known)
        pairs += [a, b]
    try:
        times, replies = attempts(mode, extra, pairs, pam)
    except H.Fail as e:
        H.report(name, False, str(e))
        return
    kt = [t for t, p in zip(times, pairs) if p is known]
    ut = [t for t, p in zip(times, pairs) if p is unknown]
    mk, mu = statistics.median(kt), statistics.median(ut)
    diff = abs(mk - mu) / max(mk, mu)
    why = "median wrong password %.3f ms, unknown user %.3f ms (%.1f%%, %d each)" % (
        mk * 1000, mu * 1000, diff * 100, n)
    ok = replies == {b"-ERR [AUTH] Authentication failed.\r\n"} and diff <= 0.10
    if replies != {b"-ERR [AUTH] Authentication failed.\r\n"}:
        why = "replies differ: %r; " % replies + why
    if floor is not None and min(mk, mu) < floor:
        ok, why = False, "faster than the delay: " + why
    H.report(name, ok, why)
    if ok:
        print("    # " + why, flush=True)


def tests(h):
    global H
    H = h
    if h.VALGRIND:      # reply times under memcheck say nothing
        return
    n = 50 if h.SAN else TRIES
    mode = h.ENV.modes()[-1]
    known_v = (h.ENV.vuser, "wrong-password")
    unknown = ("nosuchuser4711", "wrong-password")
    # Unknown names go on to PAM after the password file, so the bare
    # check costs more for them; pop3d answers a failure no earlier than
    # --fail-delay after the attempt began, which hides that.  20 ms is
    # above the check's cost here and keeps 2 x 200 tries short.
    compare("timing/passwd-file/" + mode, mode, ["--fail-delay", "20"],
            known_v, unknown, n, floor=0.020)
    if h.ENV.pam_ok:
        compare("timing/pam/" + mode, mode, ["--fail-delay", "0"],
                (h.ENV.user, "wrong-password"), unknown, n)
    # As root, the system's pam_unix with the shipped PAM file: it checks a
    # known name's yescrypt hash (about 40 ms here) and answers an unknown
    # one at once, and its own 2 s failure delay is switched off; the
    # --fail-delay, above the hash's cost, must cover the difference.
    if h.ROOT:
        with h.shipped_pam_file():
            compare("timing/pam-unix/root", "root",
                    ["--pam-service", "pop3d", "--fail-delay", "150"],
                    ("pop3unix", "wrong-password"), unknown, 50, pam=False,
                    floor=0.150)
    # The default delay (1000 ms): a few tries only.
    compare("timing/default-delay/" + mode, mode, ["--fail-delay", "1000"],
            known_v, unknown, 3, floor=1.0)
