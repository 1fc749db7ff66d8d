# tests/suites/valgrind.py: memcheck over a representative set of sessions
# (issue 4, point 5), in user mode and (as root) root mode, following the
# pre-auth and PAM children: any memory error, or a definite or indirect
# leak in any process, fails.  tests/valgrind.supp holds the suppressions
# and their reasons.  Skipped in the sanitizer build or without valgrind.
import glob
import os
import re
import shutil

SESSIONS = [
    ["USER $VUSER", "PASS wrong", "USER $VUSER", "PASS $VPASS", "STAT", "LIST",
     "UIDL", "RETR 1", "TOP 2 3", "DELE 1", "RSET", "DELE 3", "QUIT"],
    ["AUTH PLAIN ${b64:\\0$USER\\0$PASS}", "CAPA", "LIST 2", "RETR 2", "QUIT"],
    ["USER nosuchuser", "PASS x", "AUTH PLAIN !!", "AUTH PLAIN ${b64:\\0a\\0b}",
     "USER x", "PASS y"],
]


def tests(h):
    if h.SAN or h.VALGRIND or not shutil.which("valgrind"):
        return
    supp = h.ENV.supp          # a copy the test user can read
    for mode in h.ENV.modes():
        for i, lines in enumerate(SESSIONS):
            name = "valgrind/%s/%d" % (mode, i + 1)
            if not h.wanted(name):
                continue
            case = h.ENV.new_case(mode)
            vars = h.ENV.vars(case)
            for mname in ("$VUSER", "$USER"):
                h.place_fixture(case, vars, mname, "seed.mbox")
            argv = h.ENV.argv(mode, case)
            k = argv.index(h.ENV.pop3d)
            logs = os.path.join(case, "vg")
            os.mkdir(logs)
            os.chmod(logs, 0o1777)
            argv[k:k] = ["valgrind", "-q", "--trace-children=yes", "--vgdb=no",
                         "--error-exitcode=97", "--leak-check=full",
                         "--errors-for-leak-kinds=definite,indirect",
                         "--show-leak-kinds=definite,indirect",
                         "--suppressions=" + supp,
                         "--log-file=" + os.path.join(logs, "vg.%p")]
            env = h.ENV.session_env()
            env.pop("LD_PRELOAD", None)
            env["LD_PRELOAD"] = h.ENV.libpw or ""
            s = h.Session(argv, env, os.path.join(case, "stderr-1"))
            s.queue("".join(h.substitute(l, vars) + "\r\n" for l in lines).encode())
            s.close_in()
            out = s.read_rest(120)
            rc = s.wait(60)
            problems = []
            for f in glob.glob(os.path.join(logs, "vg.*")):
                text = open(f, "rb").read().decode("utf-8", "replace")
                if re.search(r"(Invalid|uninitialised|definitely lost|indirectly lost"
                             r"|Syscall param)", text):
                    problems.append("%s: %s" % (os.path.basename(f), text.strip()
                                                .splitlines()[0][:160]))
            if out is None or rc is None:
                problems.append("session did not end")
            elif rc != 0:
                problems.append("exit %d" % rc)
            elif b"+OK" not in out:
                problems.append("no reply: %r" % out[:80])
            h.report(name, not problems, "; ".join(problems))
