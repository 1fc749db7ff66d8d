"""tests/suites/powerloss.py: the short form of the power-cut replay.

tests/powerloss.sh runs tests/powerloss-4k (4 KiB chunks: many journal
records from small mailboxes) and tests/powerloss (the real chunk sizes)
without --long: every crash state of UPDATE and of its recovery on the
small mailboxes, a seeded sample where a cut has many, the kill-then-power-
cut cases and the regression cases (tests/powerloss.c says how); with
SANITIZE=1 the smaller --quick form, since ASan is slower.  Each
scenario line becomes a case; the INFO line carries the total.  `make
powerloss` runs the long form.  Not under VALGRIND=1: the same binaries
ran in the other passes.

powerloss/journal-name-synced: the replay takes the journal file as
given; pop3d creates it at a maildrop's first session, and must sync the
state directory then (and only then), or a power cut could take the name
back with the synced journal in it.  tests/faultinject.so logs the fsync
calls on the state directory of two real sessions.
"""
import shutil
import glob
import os
import re
import subprocess
import time


def journal_name(h):
    shim = os.path.join(h.TESTS, "faultinject.so")
    if not os.path.exists(shim):
        raise h.Fail("%s is not built (make check builds it)" % shim)
    case = h.ENV.new_case("user")
    state = os.path.join(case, "state")
    log = os.path.join(case, "mail", "faults.log")
    copy = os.path.join(case, "faultinject.so")
    shutil.copy(shim, copy)
    os.chmod(copy, 0o755)
    # a maildrop file (a missing one is empty and has no state at all)
    mbox = os.path.join(case, "mail", h.ENV.user)
    shutil.copy(os.path.join(h.FIX, "seed.mbox"), mbox)
    if h.ROOT:
        os.chown(mbox, h.ENV.u1.pw_uid, h.ENV.u1.pw_gid)
    syncs = []
    for n in (1, 2):
        env = h.ENV.session_env()
        env["LD_PRELOAD"] = " ".join([copy] + ([env["LD_PRELOAD"]]
                                               if "LD_PRELOAD" in env else []))
        env.update({"FAULT_PATHS": state, "FAULT_LOG": log})
        if os.path.exists(log):
            os.unlink(log)
        s = h.Session(h.ENV.argv("user", case), env,
                      os.path.join(case, "stderr-%d" % n))
        s.queue(("USER %s\r\nPASS %s\r\nQUIT\r\n" % (h.ENV.user, h.ENV.pw))
                .encode())
        s.close_in()
        out = s.read_rest()
        if out is None:
            s.kill()
            raise h.Fail("session %d did not end" % n)
        s.wait()
        h.sanitizer_check([s])
        if b"+OK Logging out" not in out:
            raise h.Fail("session %d: %r" % (n, out[-100:]))
        text = open(log).read() if os.path.exists(log) else ""
        syncs.append(len([l for l in text.splitlines()
                          if l.split()[1:3] == ["fsync", state]]))
    if syncs != [1, 0]:
        raise h.Fail("fsyncs of the state directory in the first and the "
                     "second session: %r, want [1, 0]" % syncs)


def tests(h):
    if h.VALGRIND:
        return
    if h.wanted("powerloss/journal-name-synced"):
        try:
            journal_name(h)
            h.report("powerloss/journal-name-synced", True)
        except h.Fail as e:
            h.report("powerloss/journal-name-synced", False, str(e))
    if h.FILTER and "powerloss" not in h.FILTER and h.FILTER not in "powerloss":
        return
    missing = [b for b in ("powerloss", "powerloss-4k")
               if not os.path.exists(os.path.join(h.TESTS, b))]
    if missing:
        h.report("powerloss/build", False, "tests/%s is not built (make check "
                 "builds it)" % missing[0])
        return
    logs = os.path.join(h.ENV.work, "powerloss-san")
    os.makedirs(logs, exist_ok=True)
    env = h.ENV.session_env(False)
    for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
        env[var] = env.get(var, "") + ":log_path=" + os.path.join(logs, "log")
    t0 = time.monotonic()
    try:
        p = subprocess.run(["sh", os.path.join(h.TESTS, "powerloss.sh")] +
                           (["--quick"] if h.SAN else []),
                           capture_output=True, timeout=600 if h.SLOW else 240,
                           cwd=h.TOP, env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        h.report("powerloss", False, "timed out")
        return
    seen, total, detail = 0, None, []
    for line in p.stdout.decode("utf-8", "replace").splitlines():
        m = re.match(r"(PASS|FAIL) (\S+?): (.*)$", line)
        if m:
            seen += 1
            if h.wanted(m.group(2)):
                h.report(m.group(2), m.group(1) == "PASS", m.group(3),
                         detail if m.group(1) == "FAIL" else None)
            detail = []
        elif line.startswith("powerloss:"):
            total = line
        elif line.startswith("    "):
            detail.append(line.strip())
    san = [f for f in glob.glob(os.path.join(logs, "log*"))
           if h.SAN_RE.search(open(f, "rb").read())]
    if san:
        h.report("powerloss/sanitizer", False, "sanitizer report in %s" % san[0])
    if p.returncode != 0 and seen == 0:
        h.report("powerloss", False, "exit %d: %r" % (p.returncode,
                                                       p.stdout[-300:]))
    elif total is None:
        h.report("powerloss", False, "no total line: %r" % p.stdout[-300:])
    else:
        print("INFO %s (%.1f s)" % (total, time.monotonic() - t0), flush=True)
