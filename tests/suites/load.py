# Load (issue 3, point 6), as root: a real xinetd, started here on a free
# port on 127.0.0.1 from the shipped xinetd.d/pop3d (instances, per_source
# and cps raised), serves 10 password-file users.  50 client threads
# (Python's poplib, 5 per user, all started at once) each log in, retrying
# after [IN-USE] since only one session per maildrop gets in, retrieve a
# random subset byte for byte, delete some of it and QUIT, while a delivery
# agent (dotlockfile + fcntl + append) delivers numbered messages into all
# 10 maildrops.  Afterwards the accounting of delivery.py holds for every
# user (each delivered message retrieved-then-deleted exactly once or left
# exactly once), no dotlock is left, and no pop3d process is left.
#
# Short form: 100 sessions (two per thread, 50 at once), about 2-5 s,
# bounded at 60 s.
# STRESS=1: every thread loops for 120 s.
import importlib.util
import os
import poplib
import random
import re
import signal
import socket
import subprocess
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
STRESS = os.environ.get("STRESS") == "1"
USERS = 10
THREADS = 50
QUOTA = 2               # sessions per client thread in the short form


def _delivery():
    spec = importlib.util.spec_from_file_location("pop3d_suite_delivery_l",
                                                  os.path.join(HERE, "delivery.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def pop3d_pids(h):
    """Processes running our copy of pop3d."""
    exe = os.path.realpath(h.ENV.pop3d)
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.readlink("/proc/%s/exe" % pid) == exe:
                with open("/proc/%s/stat" % pid) as f:
                    if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                        pids.append(int(pid))
        except OSError:
            pass
    return pids


def start_xinetd(h, case, args):
    port = h.free_port()
    with open(os.path.join(h.TOP, "xinetd.d", "pop3d")) as f:
        conf = f.read()
    subs = [(r"(?m)^(\s*disable\s*=\s*)yes", r"\g<1>no"),
            (r"(?m)^(\s*port\s*=\s*)110", r"\g<1>%d" % port),
            (r"(?m)^(\s*server\s*=\s*).*", r"\g<1>" + h.ENV.pop3d),
            (r"(?m)^(\s*instances\s*=\s*).*", r"\g<1>UNLIMITED"),
            (r"(?m)^(\s*per_source\s*=\s*).*", r"\g<1>UNLIMITED"),
            (r"(?m)^(\s*cps\s*=\s*).*", r"\g<1>10000 1"),
            (r"(?m)^(\s*socket_type\s*=)", "\tserver_args = %s\n\tbind = 127.0.0.1\n"
             "\ttype = UNLISTED\n\\1" % " ".join(args))]
    for pat, rep in subs:
        conf, n = re.subn(pat, rep, conf)
        if n != 1:
            raise h.Fail("xinetd.d/pop3d has no line matching %s" % pat)
    cfile = os.path.join(case, "xinetd.conf")
    with open(cfile, "w") as f:
        f.write(conf)
    log = open(os.path.join(case, "stderr-xinetd"), "wb")
    xd = subprocess.Popen(["xinetd", "-dontfork", "-f", cfile, "-pidfile",
                           os.path.join(case, "xinetd.pid")],
                          stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                          env=h.ENV.session_env(False), start_new_session=True)
    deadline = time.monotonic() + h.TIMEOUT
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return xd, port
        except OSError:
            if time.monotonic() > deadline or xd.poll() is not None:
                stop_xinetd(xd)
                raise h.Fail("xinetd did not start")
            time.sleep(0.05)


def stop_xinetd(xd):
    try:
        os.killpg(xd.pid, signal.SIGTERM)
        xd.wait(5)
    except subprocess.TimeoutExpired:
        os.killpg(xd.pid, signal.SIGKILL)
        xd.wait()
    except ProcessLookupError:
        xd.wait()


class Client(threading.Thread):
    """One client: sessions for one user until `quota` sessions logged in
    (or, if quota is None, until `until`), retrying after [IN-USE]."""

    def __init__(self, h, port, user, pw, tally, quota, until, seed):
        super().__init__(daemon=True)
        self.h, self.port, self.user, self.pw = h, port, user, pw
        self.tally, self.quota, self.until = tally, quota, until
        self.rng = random.Random(seed)
        self.error = None
        self.connections = 0

    def run(self):
        done = 0
        try:
            while time.monotonic() < self.until and (self.quota is None or done < self.quota):
                if self.session():
                    done += 1
                    time.sleep(self.rng.uniform(0.1, 0.5))
                else:
                    time.sleep(self.rng.uniform(0.02, 0.15))
            if self.quota is not None and done < self.quota:
                self.error = "only %d of %d sessions in time" % (done, self.quota)
        except Exception as e:
            self.error = "%s: %s" % (type(e).__name__, e)

    def session(self):
        """One session; False if it could not log in ([IN-USE], [SYS/TEMP])."""
        h, t = self.h, self.tally
        self.connections += 1
        c = poplib.POP3("127.0.0.1", self.port, timeout=30)
        try:
            if not c.getwelcome().startswith(b"+OK"):
                raise h.Fail("greeting %r" % c.getwelcome())
            c.user(self.user)
            try:
                c.pass_(self.pw)
            except poplib.error_proto as e:
                msg = e.args[0] if e.args else b""
                with t.lock:
                    if b"[IN-USE]" in msg:
                        t.in_use += 1
                    elif b"[SYS/TEMP]" in msg:
                        t.busy += 1
                    else:
                        raise h.Fail("login: %r" % msg)
                return False
            count, _ = c.stat()
            with t.lock:
                t.sessions += 1
            marked, retrieved = [], 0
            for i in range(1, count + 1):
                if self.rng.random() >= 0.6:
                    continue
                resp, lines, octets = c.retr(i)
                m = re.match(rb"\+OK (\d+) octets$", resp)
                if not m or sum(len(l) + 2 for l in lines) != int(m.group(1)):
                    raise h.Fail("RETR %d: %r and %d octets sent" % (
                        i, resp, sum(len(l) + 2 for l in lines)))
                n = t.check_text(h, lines, "%s RETR %d" % (self.user, i))
                retrieved += 1
                if self.rng.random() < 0.8:
                    if c.dele(i) != b"+OK Marked to be deleted.":
                        raise h.Fail("DELE %d" % i)
                    marked.append(n)
            with t.lock:
                t.retrieved += retrieved
            try:
                r = c.quit()
            except poplib.error_proto as e:
                if marked and b"[SYS/TEMP]" in (e.args[0] if e.args else b""):
                    with t.lock:
                        t.busy += 1
                    return True
                raise h.Fail("QUIT: %r" % (e.args,))
            want = b"+OK Logging out, messages deleted." if marked else b"+OK Logging out."
            if r != want:
                raise h.Fail("QUIT: %r" % r)
            with t.lock:
                t.deleted += marked
            return True
        finally:
            c.close()


def run_load(h, name):
    d = _delivery()
    case = h.ENV.new_case("root")
    users = ["lu%02d" % i for i in range(USERS)]
    pws = {u: "Load-%s-pass" % u for u in users}
    pwfile = os.path.join(case, "passwd-load")
    with open(pwfile, "w") as f:
        for u in users:
            f.write("%s:%s\n" % (u, h.crypt_hash(pws[u])))
    os.chmod(pwfile, 0o600)
    paths, tallies, agents = {}, {}, {}
    for u in users:
        paths[u] = os.path.join(case, "mail", u)
        with open(paths[u], "wb"):
            pass
        os.chmod(paths[u], 0o600)
        os.chown(paths[u], h.ENV.u1.pw_uid, h.ENV.u1.pw_gid)
        tallies[u] = d.Tally("load-" + u)
        agents[u] = d.Appender(h, paths[u])
    args = ["--fail-delay", "10", "--mailbox", os.path.join(case, "mail", "%u"),
            "--passwd-file", pwfile, "--state-dir", os.path.join(case, "state"),
            "--virtual-user", h.ENV.user, "--lock-timeout", "10"]
    delivered = {u: [] for u in users}
    stop = threading.Event()
    errors = []

    def deliver_all():
        rng = random.Random(name)
        n = 0
        try:
            while not stop.is_set():
                n += 1
                for u in users:
                    agents[u].deliver(d.mbox_entry(tallies[u].tag, n))
                    delivered[u].append(n)
                time.sleep(rng.uniform(0, 0.05))
        except Exception as e:
            errors.append("delivery: %s: %s" % (type(e).__name__, e))

    xd, port = start_xinetd(h, case, args)
    t0 = time.monotonic()
    dl = threading.Thread(target=deliver_all, daemon=True)
    clients = []
    try:
        dl.start()
        time.sleep(0.3)         # some mail before the first logins
        until = t0 + (120 if STRESS else 60)
        for i in range(THREADS):
            u = users[i % USERS]
            clients.append(Client(h, port, u, pws[u], tallies[u],
                                  None if STRESS else QUOTA, until,
                                  "%s-%d" % (name, i)))
        for c in clients:
            c.start()
        for c in clients:
            c.join(max(1.0, until - time.monotonic() + 40))
        stop.set()
        dl.join(60)
        if any(c.is_alive() for c in clients) or dl.is_alive():
            raise h.Fail("clients or delivery did not finish in time")
        errors += ["%s: %s" % (c.user, c.error) for c in clients if c.error]
        if errors:
            raise h.Fail("; ".join(errors[:3]))
        deadline = time.monotonic() + 15
        while pop3d_pids(h) and time.monotonic() < deadline:
            time.sleep(0.05)
        left_procs = pop3d_pids(h)
        if left_procs:
            raise h.Fail("pop3d processes left after the clients finished: %s" % left_procs)
    finally:
        stop.set()
        stop_xinetd(xd)
    tot = {"delivered": 0, "retrieved": 0, "deleted": 0, "left": 0, "sessions": 0,
           "in_use": 0, "busy": 0}
    for u in users:
        summary = d.account(h, tallies[u], delivered[u], paths[u])
        m = dict(kv.split("=") for kv in summary.split())
        for k in ("delivered", "retrieved", "deleted", "left", "sessions"):
            tot[k] += int(m[k])
        tot["in_use"] += tallies[u].in_use
        tot["busy"] += tallies[u].busy
    if tot["deleted"] == 0 or tot["sessions"] < (THREADS * QUOTA if not STRESS else 1):
        raise h.Fail("too little happened: %s" % tot)
    with open(os.path.join(case, "stderr-xinetd"), "rb") as f:
        if h.SAN_RE.search(f.read()):
            raise h.Fail("sanitizer report in the xinetd log")
    return ("users=%d clients=%d sessions=%d connections=%d in-use=%d busy=%d "
            "delivered=%d retrieved=%d deleted=%d left=%d" % (
                USERS, THREADS, tot["sessions"], sum(c.connections for c in clients),
                tot["in_use"], tot["busy"], tot["delivered"], tot["retrieved"],
                tot["deleted"], tot["left"]))


def tests(h):
    # 50 sessions under memcheck miss the time bounds; VALGRIND=1 skips
    if h.VALGRIND:
        return
    name = "load/xinetd-50-sessions-10-users/root"
    if not h.ROOT or not h.wanted(name):
        return
    if not __import__("shutil").which("xinetd"):
        h.report(name, False, "xinetd is not installed")
        return
    t0 = time.monotonic()
    try:
        summary = run_load(h, name)
        h.report("%s (%s, %.1f s)" % (name, summary, time.monotonic() - t0), True)
    except (h.Fail, OSError, poplib.error_proto, subprocess.SubprocessError) as e:
        h.report(name, False, "%s: %s" % (type(e).__name__, e),
                 h.diag_for(h.ENV.work, name))
