# tests/suites/timing.py: no user enumeration (issue 4, point 4).  The
# reply and its timing are the same for an unknown user and a wrong
# password, tried alternately, for PAM (pam_matrix through pam_wrapper)
# with --fail-delay 0 so that the cost of the check itself is measured, and
# for the password file (crypt with a dummy hash for unknown names, then
# PAM) with a delay, which pop3d counts from the start of the attempt.  As
# root, the same for the system's pam_unix.  Then a few tries with the
# default delay: both wait at least that long, and the same.
#
# Time is what this measures, on machines that are busy with other work:
# each known try is paired with the unknown one next to it and the median
# of the differences (which load, coming and going, mostly cancels) must be
# within 10% of the median reply time; and where a delay must hide the
# check's cost, it is set above that cost as measured right before (three
# times the slowest of a few tries without delay, under load 10 times what
# it is on an idle machine for pam_unix's hash).
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


def calibrated_delay(mode, extra, known, unknown, pam, floor_ms):
    """A --fail-delay (ms) above the check's cost on this machine now:
    three times the slowest of four tries of each kind without a delay,
    and at least floor_ms."""
    times, _ = attempts(mode, extra + ["--fail-delay", "0"], [known, unknown] * 4, pam)
    return max(floor_ms, int(3000 * max(times)) + 1)


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
    # each pair is two neighbouring tries: the load they met is alike
    md = statistics.median(k - u for k, u in zip(kt, ut))
    diff = abs(md) / statistics.median(times)
    why = ("median wrong password %.3f ms, unknown user %.3f ms, of the paired "
           "differences %+.3f ms (%.1f%%, %d each)" % (
               mk * 1000, mu * 1000, md * 1000, diff * 100, n))
    if "--fail-delay" in extra:
        why += ", --fail-delay %s" % extra[extra.index("--fail-delay") + 1]
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
    # --fail-delay after the attempt began, which hides that when the
    # delay is above the cost (about 15 ms on an idle machine, up to 60 ms
    # busy: at least 100 ms).
    name = "timing/passwd-file/" + mode
    if h.wanted(name):
        try:
            d = calibrated_delay(mode, [], known_v, unknown, True, 100)
            compare(name, mode, ["--fail-delay", str(d)], known_v, unknown,
                    min(n, 60), floor=d / 1000)
        except h.Fail as e:
            h.report(name, False, "calibration: %s" % e)
    if h.ENV.pam_ok:
        compare("timing/pam/" + mode, mode, ["--fail-delay", "0"],
                (h.ENV.user, "wrong-password"), unknown, n)
    # As root, the system's pam_unix with the shipped PAM file: it checks a
    # known name's yescrypt hash (about 40 ms on an idle machine, up to
    # 450 ms busy) and answers an unknown one at once, and its own 2 s
    # failure delay is switched off; the --fail-delay, above the hash's
    # cost (at least the default, 1000 ms), must cover the difference.
    name = "timing/pam-unix/root"
    if h.ROOT and h.wanted(name):
        known_u = ("pop3unix", "wrong-password")
        extra = ["--pam-service", "pop3d"]
        with h.shipped_pam_file():
            try:
                d = calibrated_delay("root", extra, known_u, unknown, False, 1000)
                compare(name, "root", extra + ["--fail-delay", str(d)],
                        known_u, unknown, 8, pam=False, floor=d / 1000)
            except h.Fail as e:
                h.report(name, False, "calibration: %s" % e)
    # The default delay (1000 ms): a few tries only.
    compare("timing/default-delay/" + mode, mode, ["--fail-delay", "1000"],
            known_v, unknown, 3, floor=1.0)
