# tests/suites/migrate.py: migration proven against the real servers.  A
# site that replaces its POP3 server keeps its leave-on-server clients only
# if every message keeps its UIDL.  This family runs the servers of
# Debian's packages on the same mailboxes as pop3d and compares their UIDL
# listings with `pop3d --list-uidl` in the matching mode, byte for byte:
#
#   popa3d 1.0.3            --uidl digest (the default)
#   GNU Mailutils' pop3d    --uidl x-uidl (it writes X-UIDL: headers)
#   Dovecot's pop3          --uidl x-uid, and --uidl-format for each
#                           pop3_uidl_format template pop3d supports
#
# The servers conflict with each other and with pop3d's own package
# (mailutils-pop3d owns /usr/sbin/pop3d), so none is installed:
# tests/deps.sh downloads the packages into /var/cache/pop3d-tests and
# installs only the shared libraries they link; each run unpacks them with
# dpkg-deb into its scratch directory.  popa3d's spool (/var/mail) and
# chroot are compiled in: it runs in a mount namespace of its own whose
# /var/mail is the case's directory.  Mailutils runs in inetd mode with a
# private configuration, Dovecot's pop3 pre-authenticated on stdio with a
# private configuration (through the unpacked doveconf, as Dovecot's own
# binaries re-execute it); logins go through pam_wrapper + pam_matrix.
#
# Each server lives through a site's history on a copy of the mailbox:
# first run (which may write its headers), pop3d's listing; a session that
# deletes messages (the first among them: it holds X-IMAPbase), a listing
# again; mail delivered while it still runs, its listing again; mail
# delivered after it last ran, which only pop3d lists (the digest, unless
# the message carries a valid header of the mode).  The listings must be
# equal, line for line, but for what pop3d cannot copy (pop3d_rule): an id
# RFC 1939 forbids gets the digest, identical ids get -2, -3.  The output
# ends with how many ids each comparison took, and how many those rules
# changed.  Needs root (popa3d drops privileges itself; the others switch
# to the mailbox's owner).
import glob
import os
import subprocess

ANCHOR_DIR = "/var/cache/pop3d-tests"
# The members of each package the runs need (dovecot-core is 18 MB
# unpacked; these are under 3).
ANCHOR_PKGS = {
    "popa3d": ["./usr/sbin/popa3d"],
    "mailutils-pop3d": ["./usr/sbin/pop3d"],
    "libmailutils9": ["./usr/lib/"],
    "libmu-dbm9": ["./usr/lib/"],
    "dovecot-core": ["./usr/bin/doveconf", "./usr/lib/dovecot/libdovecot.so*",
                     "./usr/lib/dovecot/libdovecot-storage.so*"],
    "dovecot-pop3d": ["./usr/lib/dovecot/pop3"],
}

# The templates of Dovecot's pop3_uidl_format that --uidl-format takes,
# each tested against Dovecot run with the same setting: Dovecot's default,
# UW ipop3d's format (Dovecot's documented setting for UW sites), Cyrus
# >= 2.1.4 and old Dovecot defaults, Cyrus <= 2.1.3 and Courier 1,
# Courier 2, and hex without padding.
FORMATS = [("default", "%08Xu%08Xv"), ("uw", "%08Xv%08Xu"), ("v.u", "%v.%u"),
           ("u", "%u"), ("v-u", "%v-%u"), ("Xu.Xv", "%Xu.%Xv")]

DATES = ["Mon Jan  1 %02d:%02d:00 2024" % (i // 60, i % 60) for i in range(200)]


class Fail(Exception):
    pass


def age(path):
    """Moves the mailbox's times 2 s back, as if the next program ran a
    while later (as it does at a real site): popa3d, and pop3d after a
    write with whole-second times, otherwise wait for the clock to pass the
    mtime, a second per run."""
    st = os.stat(path)
    t = st.st_mtime_ns - 2_000_000_000
    os.utime(path, ns=(t, t))


# ------------------------------------------------------------- mailboxes

def from_line(i, sender=b"sender@example.org"):
    return b"From %s %s\n" % (sender, DATES[i].encode())


def received(i, host=b"mx"):
    return (b"Received: from %s%d.example.net (%s%d.example.net [192.0.2.%d])\n"
            b"\tby mail.example.org (Postfix) with ESMTP id 4T%05dQ\n"
            b"\tfor <pop3t1@example.org>; Mon, 1 Jan 2024 00:%02d:00 +0000\n"
            % (host, i, host, i, i % 250 + 1, i, i % 60))


def common(i, subject):
    return (b"From: Sender %d <sender%d@example.org>\n"
            b"To: pop3t1@example.org\n"
            b"Subject: %s\n"
            b"Date: Mon, 1 Jan 2024 00:%02d:00 +0000\n"
            b"Message-ID: <m%d.edge@example.org>\n" % (i, i, subject, i % 60, i))


def edge_messages():
    """(header, body) pairs for the edges mailbox: the header fields the
    digest reads and skips, X-UIDL values valid, invalid and absent, a
    forged X-UID, duplicates, long and folded lines, CRLF, bodies with
    From lines.  Each header ends with its last line's LF."""
    m = []
    for i in range(1, 7):           # plain deliveries
        m.append((b"Return-Path: <sender%d@example.org>\n" % i + received(i) +
                  common(i, b"plain %d" % i), b"Plain message %d.\n" % i))
    # No Received: the digest takes Date and Message-ID.
    m.append((common(7, b"no Received"), b"Sent locally.\n"))
    m.append((b"Date: Mon, 1 Jan 2024 01:08:00 +0000\nSubject: date only\n",
              b"No Message-ID either.\n"))
    # No delivery header at all, twice: identical digests (-2).
    m.append((b"From: nobody\nSubject: bare 1\n", b"bare\n"))
    m.append((b"From: nobody\nSubject: bare 2\n", b"bare too\n"))
    # Several Received: the digest takes the first only.
    m.append((received(11, b"relay") + received(111, b"mx") +
              received(211, b"origin") + common(11, b"three hops"), b"hops\n"))
    m.append((received(12, b"relay") + received(111, b"mx") +
              common(111, b"same lower hops"), b"hops\n"))
    # Folded and long header lines, one longer than a scan block.
    m.append((b"Received: from mx13.example.net\n  by mail.example.org\n"
              b"\twith ESMTP\n   id FOLD13;\n\tMon, 1 Jan 2024 00:13:00 +0000\n"
              + common(13, b"folded Received"), b"folded\n"))
    m.append((b"Received: from mx14.example.net by mail.example.org " +
              b"x" * 3000 + b"; Mon, 1 Jan 2024 00:14:00 +0000\n" +
              common(14, b"long Received"), b"long\n"))
    m.append((received(15) + b"X-Filler: " + b"y" * 70000 + b"\n" +
              b"Subject: " + b"s" * 2000 + b"\n" +
              b"Delivered-To: pop3t1@example.org\n", b"huge header\n"))
    m.append((b"Delivered-To: pop3t1@example.org\nDelivered-To: alias@example.org\n"
              + received(16) + common(16, b"two Delivered-To"), b"dt\n"))
    m.append((b"X-Delivery-ID: qmail-17\n" + common(17, b"X-Delivery-ID"), b"q\n"))
    m.append((b"x-delivery-id: lower-18\n" + common(18, b"lower-case x-delivery-id"),
              b"q\n"))
    m.append((b"RECEIVED: from mx19.example.net by mail.example.org; "
              b"Mon, 1 Jan 2024 00:19:00 +0000\n" + common(19, b"upper case"), b"u\n"))
    m.append((b"received:from mx20.example.net by mail.example.org; "
              b"Mon, 1 Jan 2024 00:20:00 +0000\n" + common(20, b"no space"), b"n\n"))
    m.append((b"Received : from mx21.example.net (space before colon)\n" +
              common(21, b"not a Received"), b"s\n"))
    # Duplicates: the same delivery three times in a row, once far apart.
    dup = (received(22) + common(22, b"duplicate"), b"Delivered three times.\n")
    m += [dup, dup, dup]
    # X-UIDL: valid (as Qpopper writes them), invalid, absent.
    m.append((received(25) + b"X-UIDL: 2b9d6e0c1a8f4e7d9c3b5a1f0e2d4c6b\n" +
              common(25, b"valid X-UIDL"), b"x\n"))
    m.append((received(26) + b"X-UIDL: 17c.h!ok~\n" + common(26, b"valid odd X-UIDL"),
              b"x\n"))
    m.append((received(27) + b"X-UIDL: has a space\n" + common(27, b"X-UIDL space"),
              b"x\n"))
    m.append((received(28) + b"X-UIDL: " + b"7" * 71 + b"\n" +
              common(28, b"X-UIDL of 71"), b"x\n"))
    m.append((received(29) + b"X-UIDL:\n" + common(29, b"empty X-UIDL"), b"x\n"))
    m.append((received(30) + b"X-UIDL: caf\xe9\n" + common(30, b"8-bit X-UIDL"), b"x\n"))
    m.append((received(31) + b"X-UIDL: 2b9d6e0c1a8f4e7d9c3b5a1f0e2d4c6b\n" +
              common(31, b"repeated X-UIDL"), b"x\n"))
    m.append((received(32) + b"X-UIDL: first-of-two\nX-UIDL: second-of-two\n" +
              common(32, b"two X-UIDL"), b"x\n"))
    # X-UID/X-IMAPbase put there by a sender, before any server wrote them.
    m.append((received(33) + b"X-UID: 7\nX-IMAPbase: 1 99\n" +
              common(33, b"forged X-UID"), b"x\n"))
    m.append((received(34) + b"Status: RO\nX-Status: A\nX-Keywords: $Label1\n" +
              common(34, b"flags"), b"f\n"))
    m.append((received(35) + common(35, b"8-bit h\xe9ader"), b"8\n"))
    m.append(((received(36) + common(36, b"CRLF")).replace(b"\n", b"\r\n"),
              b"CRLF line ends.\r\n"))
    m.append((received(37) + common(37, b"From in body"),
              b"Hello\nFrom the body, not a separator\n>From escaped\n\n"
              b">From after a blank line\n"))
    m.append((received(38) + common(38, b"empty body"), b""))
    m.append(dup)
    m.append((received(40) + common(40, b"no final newline"), b"The end"))
    return m


def mbox(messages, first=0):
    """An mbox as an MTA writes it: From_ line, header, blank line, body,
    a blank line before the next From_ line."""
    out = b""
    for k, (head, body) in enumerate(messages):
        if out:
            out += b"\n"
        out += from_line(first + k) + head + b"\n" + body
    return out


def delivered_messages(first):
    """Mail that arrives after the old server last ran: plain, with a
    forged X-UIDL, with a forged X-UID (both copied from old messages)."""
    return [(received(first) + common(first, b"new plain"), b"new\n"),
            (received(first + 1) + b"X-UIDL: 2b9d6e0c1a8f4e7d9c3b5a1f0e2d4c6b\n" +
             common(first + 1, b"new with a copied X-UIDL"), b"new\n"),
            (received(first + 2) + b"X-UID: 3\n" +
             common(first + 2, b"new with a copied X-UID"), b"new\n")]


PSEUDO_BODY = (b"The IMAP server keeps the folder's data in this message; it is\n"
               b"not mail.\n")


def uw_mailbox():
    """A maildrop as UW imapd leaves it: the pseudo-message first (no
    Received: header), X-IMAP with UIDVALIDITY and the last UID, then
    messages with Status and X-UID headers."""
    out = (b"From MAILER-DAEMON Mon Jan  1 00:00:00 2024\n"
           b"Date: Mon, 1 Jan 2024 00:00:00 +0000\n"
           b"From: Mail System Internal Data <MAILER-DAEMON@mail.example.org>\n"
           b"Subject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\n"
           b"Message-ID: <1704067200@mail.example.org>\n"
           b"X-IMAP: 1704067200 0000000012\n"
           b"Status: RO\n\n" + PSEUDO_BODY)
    for i, uid in enumerate((3, 4, 7, 8, 9, 12), 1):
        out += b"\n" + from_line(i) + received(100 + i) + \
            common(100 + i, b"UW message %d" % i) + \
            b"Status: RO\nX-Status: \nX-Keywords:\nX-UID: %d\n\n" % uid + \
            b"Body %d.\n" % i
    return out


# ----------------------------------------------------------- the servers

class Anchors:
    """The unpacked servers and their shared set-up (PAM, configuration)."""

    def __init__(self, h):
        self.h = h
        self.dir = os.path.join(h.ENV.work, "anchors")
        self.root = os.path.join(self.dir, "root")
        self.versions = {}
        os.makedirs(self.root)
        os.chmod(self.dir, 0o755)
        for pkg, members in ANCHOR_PKGS.items():
            debs = sorted(glob.glob(os.path.join(ANCHOR_DIR, pkg + "_*.deb")))
            if not debs:
                raise Fail("no %s package in %s (tests/deps.sh fetches it)"
                           % (pkg, ANCHOR_DIR))
            v = subprocess.run(["dpkg-deb", "-f", debs[-1], "Version"],
                               capture_output=True, check=True, timeout=30)
            self.versions[pkg] = v.stdout.decode().strip()
            tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", debs[-1]],
                                   stdout=subprocess.PIPE)
            subprocess.run(["tar", "-x", "-C", self.root, "--wildcards"] + members,
                           stdin=tar.stdout, check=True, timeout=60)
            tar.stdout.close()
            if tar.wait(30) != 0:
                raise Fail("dpkg-deb --fsys-tarfile %s failed" % debs[-1])
        self.popa3d = os.path.join(self.root, "usr/sbin/popa3d")
        self.mailutils = os.path.join(self.root, "usr/sbin/pop3d")
        self.doveconf = os.path.join(self.root, "usr/bin/doveconf")
        self.dovecot = os.path.join(self.root, "usr/lib/dovecot/pop3")
        self.mu_libs = glob.glob(os.path.join(self.root, "usr/lib/*-linux-gnu"))[0]
        self.dc_libs = os.path.join(self.root, "usr/lib/dovecot")
        # popa3d's compiled-in user and chroot directory (its package's
        # postinst makes them).
        h.ensure_user("popa3d")
        os.makedirs("/var/lib/popa3d", exist_ok=True)
        os.chmod("/var/lib/popa3d", 0o755)
        # pam_matrix: one password file per service (it reads the first
        # line of a user, whose service field must match).
        self.pamdir = os.path.join(self.dir, "pam")
        os.mkdir(self.pamdir)
        matrix = h.find_lib("/usr/lib/*/pam_wrapper/pam_matrix.so")
        self.libpw = h.find_lib("/usr/lib/*/libpam_wrapper.so")
        if not (matrix and self.libpw):
            raise Fail("pam_wrapper or pam_matrix missing")
        for svc in ("popa3d", "mailutils"):
            db = os.path.join(self.pamdir, "passdb-" + svc)
            with open(db, "w") as f:
                f.write("%s:%s:%s\n" % (h.ENV.user, h.ENV.pw, svc))
            with open(os.path.join(self.pamdir, svc), "w") as f:
                for t in ("auth", "account"):
                    f.write("%s required %s passdb=%s\n" % (t, matrix, db))
        for p in os.listdir(self.pamdir):
            os.chmod(os.path.join(self.pamdir, p), 0o644)
        os.chmod(self.pamdir, 0o755)

    def env(self, **kw):
        e = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}
        e.update(kw)
        return e

    def pam_env(self):
        return self.env(PAM_WRAPPER="1", PAM_WRAPPER_SERVICE_DIR=self.pamdir,
                        PAM_WRAPPER_DISABLE_DEEPBIND="1")

    def check_runs(self):
        """Each unpacked binary starts (libraries found)."""
        for argv, env in (([self.mailutils, "--version"],
                           self.env(LD_LIBRARY_PATH=self.mu_libs)),
                          ([self.popa3d, "-V"], self.env()),
                          ([self.doveconf, "-c", "/dev/null", "-h", "-a"],
                           self.env(LD_LIBRARY_PATH=self.dc_libs))):
            p = subprocess.run(argv, capture_output=True, env=env, timeout=30,
                               stdin=subprocess.DEVNULL)
            if p.returncode != 0 and b"error while loading shared" in p.stderr:
                raise Fail("%s does not start: %s" % (argv[0], p.stderr[:200]))


class OldServer:
    """One old server on one case directory: sessions of USER, PASS (unless
    pre-authenticated), commands, QUIT."""
    name = ""
    preauth = False

    def __init__(self, h, an, case):
        self.h, self.an, self.case = h, an, case
        self.spool = os.path.join(case, "mail")
        self.nrun = 0

    def argv_env(self):
        raise NotImplementedError

    def session(self, cmds):
        """Runs one session: cmds are (command, multi-line) pairs after the
        login.  Returns the replies, each a list of lines (bytes, CRLF
        removed; a multi-line reply without its status line and dot)."""
        self.nrun += 1
        argv, env = self.argv_env()
        errpath = os.path.join(self.case, "stderr-%s-%d" % (self.name, self.nrun))
        s = self.h.Session(argv, env, errpath)
        try:
            def line(what):
                got = s.readline(self.h.EXIT_TIMEOUT)
                if not got or not got.endswith(b"\r\n"):
                    raise Fail("%s run %d: %s: got %r; stderr %r" % (
                        self.name, self.nrun, what, got, s.stderr()[-300:]))
                return got[:-2]

            def status(what):
                got = line(what)
                if not got.startswith(b"+OK"):
                    raise Fail("%s run %d: %s: %r" % (self.name, self.nrun, what, got))
                return got

            if not self.preauth:
                status("greeting")
                # One command at a time: popa3d's pre-login child reads
                # ahead and would lose what was pipelined after PASS.
                s.queue(b"USER %s\r\n" % self.h.ENV.user.encode())
                status("USER")
                s.queue(b"PASS %s\r\n" % self.h.ENV.pw.encode())
                status("PASS")
            out = []
            for cmd, multi in cmds + [("QUIT", False)]:
                s.queue(cmd.encode() + b"\r\n")
                status(cmd)
                rows = []
                while multi:
                    row = line(cmd)
                    if row == b".":
                        break
                    rows.append(row[1:] if row.startswith(b"..") else row)
                out.append(rows)
            s.close_in()
            rest = s.read_rest()
            if rest:
                raise Fail("%s: output after QUIT: %r" % (self.name, rest[:100]))
            rc = s.wait()
            if rc != 0:
                raise Fail("%s run %d exited %r; stderr %r" % (
                    self.name, self.nrun, rc, s.stderr()[-300:]))
            age(os.path.join(self.spool, self.h.ENV.user))
            return out
        finally:
            if s.rc is None:
                s.kill()

    def uidl(self, dele=()):
        """The UIDL listing ("n id" lines), then DELE of the numbers given."""
        out = self.session([("UIDL", True)] + [("DELE %d" % n, False) for n in dele])
        return out[0]


class Popa3d(OldServer):
    name = "popa3d"

    def argv_env(self):
        # /var/mail of its own in a mount namespace; LD_PRELOAD only for
        # popa3d (pam_wrapper in sh and mount would be wasted).
        script = ('mount --bind "$1" /var/mail && '
                  'exec env LD_PRELOAD="$2" "$0"')
        return (["unshare", "-m", "sh", "-c", script, self.an.popa3d,
                 self.spool, self.an.libpw], self.an.pam_env())


class Mailutils(OldServer):
    name = "mailutils"

    def __init__(self, h, an, case):
        super().__init__(h, an, case)
        self.conf = os.path.join(case, "mailutils.conf")
        with open(self.conf, "w") as f:
            f.write("pam { service mailutils; };\n"
                    "auth { authentication pam; authorization system; };\n"
                    "mailbox { mail-spool %s; mailbox-type mbox; };\n"
                    "locking { type kernel; };\n"
                    "logging { syslog no; };\n" % self.spool)

    def argv_env(self):
        env = self.an.pam_env()
        env.update(LD_LIBRARY_PATH=self.an.mu_libs, LD_PRELOAD=self.an.libpw)
        return [self.an.mailutils, "-i", "--config-file", self.conf], env


class Dovecot(OldServer):
    name = "dovecot"
    preauth = True

    def __init__(self, h, an, case, fmt=None):
        super().__init__(h, an, case)
        u = h.ENV.u1
        self.home = os.path.join(case, "dovecot-home")
        self.index = os.path.join(case, "dovecot-index")
        run = os.path.join(case, "dovecot-run")
        for d in (self.home, self.index, run):
            os.makedirs(d, exist_ok=True)
            os.chown(d, u.pw_uid, u.pw_gid)
        self.conf = os.path.join(case, "dovecot.conf")
        with open(self.conf, "w") as f:
            f.write("base_dir = %s\n"
                    "protocols = pop3\n"
                    "ssl = no\n"
                    "log_path = /dev/stderr\n"
                    "default_login_user = nobody\n"
                    "default_internal_user = nobody\n"
                    "first_valid_uid = 1\n"
                    "mail_location = mbox:%s/mail:INBOX=%s/%%u:INDEX=%s\n"
                    "mbox_read_locks = fcntl\n"
                    "mbox_write_locks = fcntl\n"
                    % (run, self.home, self.spool, self.index))
            if fmt is not None:
                f.write("pop3_uidl_format = %s\n" % fmt)

    def argv_env(self):
        u = self.h.ENV.u1
        env = self.an.env(USER=u.pw_name, HOME=self.home,
                          LD_LIBRARY_PATH=self.an.dc_libs)
        return (["setpriv", "--reuid=%d" % u.pw_uid, "--regid=%d" % u.pw_gid,
                 "--clear-groups", self.an.doveconf, "-c", self.conf, "-e",
                 self.an.dovecot], env)


# ------------------------------------------------------------- the cases

def new_case(h, data):
    """A case directory whose maildrop of $USER holds data."""
    case = h.ENV.new_case("root")
    path = os.path.join(case, "mail", h.ENV.user)
    with open(path, "wb") as f:
        f.write(data)
    os.chown(path, h.ENV.u1.pw_uid, h.ENV.u1.pw_gid)
    os.chmod(path, 0o600)
    age(path)
    return case, path


def list_uidl(h, case, mode, fmt=None, state="state"):
    """`pop3d --list-uidl` as an administrator runs it (as root)."""
    sdir = os.path.join(case, state)
    os.makedirs(sdir, mode=0o700, exist_ok=True)
    argv = [h.ENV.pop3d, "--mailbox", os.path.join(case, "mail", "%u"),
            "--state-dir", sdir, "--uidl", mode]
    if fmt is not None:
        argv += ["--uidl-format", fmt]
    argv += ["--list-uidl", h.ENV.user]
    p = subprocess.run(argv, capture_output=True, timeout=h.EXIT_TIMEOUT,
                       env=h.ENV.session_env(False), stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise Fail("pop3d --list-uidl exited %d: %r" % (p.returncode, p.stderr[-300:]))
    return p.stdout.split(b"\n")[:-1] if p.stdout.endswith(b"\n") else \
        p.stdout.split(b"\n")


def diff(old, new, what):
    """Fails with the first differing lines of two listings."""
    if old == new:
        return
    bad = [(i + 1, a, b) for i, (a, b) in enumerate(zip(old, new)) if a != b]
    raise Fail("%s: %d ids vs %d, %d differ%s" % (
        what, len(old), len(new), len(bad),
        "".join("; line %d: old %r, pop3d %r" % d for d in bad[:3])))


def ids(listing):
    return [row.split(b" ", 1)[1] if b" " in row else b"" for row in listing]


def valid_id(u):
    """RFC 1939: 1 to 70 characters 0x21..0x7E."""
    return 1 <= len(u) <= 70 and all(0x21 <= c <= 0x7e for c in u)


def uniquify(id_list):
    """pop3d's rule for identical ids (DESIGN 6): the first keeps its id,
    later ones get -2, -3, ... in file order, skipping ids taken by any
    message; the base is cut so that the whole stays within 70."""
    taken, later = set(), []
    for u in id_list:
        later.append(u in taken)
        taken.add(u)
    nxt, out = {}, []
    for u, dup in zip(id_list, later):
        if not dup:
            out.append(u)
            continue
        k = nxt.get(u, 2)
        while True:
            tail = b"-%d" % k
            cand = u[:70 - len(tail)] + tail
            if cand not in taken:
                break
            k += 1
        taken.add(cand)
        nxt[u] = k + 1
        out.append(cand)
    return out


def pop3d_rule(old_ids, digests, counts):
    """What pop3d must list where the old server listed old_ids: the same
    ids, except that an invalid one gets the digest (pop3d cannot send
    it: RFC 1939) and identical ones are told apart (uniquify).  digests:
    pop3d's digest listing of the same messages.  counts gets how many ids
    each exception changed."""
    mid = []
    for u, d in zip(old_ids, digests):
        if valid_id(u):
            mid.append(u)
        else:
            mid.append(d[:16])          # the digest, without a suffix
            counts["invalid, so the digest"] = counts.get(
                "invalid, so the digest", 0) + 1
    out = uniquify(mid)
    n = sum(a != b for a, b in zip(mid, out))
    if n:
        counts["identical, so -N"] = counts.get("identical, so -N", 0) + n
    return renumber(out)


def renumber(id_list):
    return [b"%d %s" % (i, u) for i, u in enumerate(id_list, 1)]


NOTES = []


def compared(server, mailbox, n, counts=None, new=0):
    """Notes how many ids were compared, and how many differ by pop3d's
    rules (new: how many of them the old server never listed)."""
    parts = []
    if new:
        parts.append("%d its last listing, %d delivered after it"
                     % (n - new, new))
    if counts:
        parts.append("%d as the old server listed them" % (n - new - sum(
            v for k, v in counts.items())) if not new else "")
        parts += ["%d %s" % (v, k) for k, v in sorted(counts.items())]
    parts = [p for p in parts if p]
    NOTES.append("%s/%s: %d ids%s" % (server, mailbox, n,
                                      " (%s)" % "; ".join(parts) if parts else ""))


def check(h, case, mode, old, what, fmt=None, skip_first=False):
    """pop3d's listing against the old server's, under pop3d_rule; returns
    the counts of exceptions.  skip_first: the old server listed UW's
    pseudo-message as message 1, which pop3d hides."""
    mine = list_uidl(h, case, mode, fmt)
    old_ids = ids(old)[1:] if skip_first else ids(old)
    digests = old_ids           # only read where an id is invalid
    if not all(valid_id(u) for u in old_ids):
        digests = ids(list_uidl(h, case, "digest", state="state-digest"))
    counts = {}
    diff(pop3d_rule(old_ids, digests, counts), mine, what)
    return counts


def history(h, cls, label, mode, data, dele, **kw):
    """The site's history with one old server, as steps (name, callable):
    its first run (it may write its headers), compared with pop3d; a run
    that deletes, a listing, compared; mail delivered while it still runs,
    its listing, compared; mail delivered after it last ran, which only
    pop3d lists."""
    st = {}
    fmt = kw.get("fmt")

    def first():
        case, path = new_case(h, data)
        srv = cls(h, st["an"], case, **kw)
        old = srv.uidl()
        if len(old) < 2:
            raise Fail("%s listed %d messages" % (srv.name, len(old)))
        st.update(case=case, path=path, srv=srv, last=old)
        counts = check(h, case, mode, old, "first run", fmt)
        compared(srv.name, label, len(old), counts)

    def deletions():
        srv, case = st["srv"], st["case"]
        again = srv.uidl(dele)
        diff(st["last"], again, "%s's second run" % srv.name)
        after = srv.uidl()
        keep = [u for k, u in enumerate(ids(again), 1) if k not in dele]
        if ids(after) != keep:
            raise Fail("%s changed the ids of kept messages: %r" % (srv.name, after[:3]))
        counts = check(h, case, mode, after, "after DELE %s" %
                       ",".join(map(str, dele)), fmt)
        st["last"] = after
        compared(srv.name, label + "-after-dele", len(after), counts)

    def deliver(first):
        new = delivered_messages(first)
        with open(st["path"], "ab") as f:
            f.write(b"\n" + mbox(new, first))
        age(st["path"])
        return new

    def while_running():
        srv, case = st["srv"], st["case"]
        deliver(60)
        old = srv.uidl()
        if ids(old)[:len(st["last"])] != ids(st["last"]):
            raise Fail("%s changed the ids of old messages: %r" % (srv.name, old[:3]))
        counts = check(h, case, mode, old, "after a delivery and a run", fmt)
        st["last"] = old
        compared(srv.name, label + "-delivered-while-running", len(old), counts)

    def after():
        case = st["case"]
        new = deliver(70)
        mine = list_uidl(h, case, mode, fmt)
        digests = ids(list_uidl(h, case, "digest", state="state-digest"))
        # The new messages: their X-UIDL header in x-uidl mode (a sender's
        # copy is taken, and told apart), else the digest.
        new_ids = []
        for (head, _), d in zip(new, digests[len(st["last"]):]):
            x = [l[7:].strip() for l in head.split(b"\n")
                 if l.startswith(b"X-UIDL:")]
            new_ids.append(x[0] if mode == "x-uidl" and x and valid_id(x[0])
                           else d[:16])
        counts = {}
        want = pop3d_rule(ids(st["last"]) + new_ids, digests, counts)
        diff(want, mine, "after delivery (old ids, then the new ones')")
        compared(st["srv"].name, label + "-delivered-after", len(mine), counts,
                 new=len(new))

    return [("first-run", first), ("after-deletions", deletions),
            ("delivered-while-running", while_running),
            ("delivered-after", after)], st


class Lazy:
    """The anchors, unpacked when a wanted case first needs them; their
    failure fails that case and every later one."""

    def __init__(self, h):
        self.h, self.an, self.error = h, None, None

    def get(self):
        if self.error:
            raise Fail("anchors: " + self.error)
        if self.an is None:
            try:
                an = Anchors(self.h)
                an.check_runs()
            except (Fail, OSError, subprocess.SubprocessError) as e:
                self.error = "%s: %s" % (type(e).__name__, e)
                raise Fail("anchors: " + self.error)
            self.an = an
            print("    # anchors: %s" % ", ".join(
                "%s %s" % kv for kv in sorted(an.versions.items())), flush=True)
        return self.an


def run_group(h, prefix, steps, st, lazy):
    """Runs the steps in order (all of them when any is wanted: each builds
    on the one before); once one fails the later ones fail for that
    reason."""
    if not any(h.wanted(prefix + "/" + name) for name, _ in steps):
        return
    broken = None
    for name, fn in steps:
        full = prefix + "/" + name
        if broken:
            h.report(full, False, "not run: " + broken)
            continue
        try:
            st["an"] = lazy.get()
            fn()
            h.report(full, True)
        except (Fail, h.Fail, OSError, subprocess.SubprocessError) as e:
            broken = "%s failed" % name
            h.report(full, False, "%s: %s" % (type(e).__name__, e),
                     h.diag_for(h.ENV.work, full))


def single(h, name, lazy, fn):
    if not h.wanted(name):
        return
    try:
        fn(lazy.get())
        h.report(name, True)
    except (Fail, h.Fail, OSError, subprocess.SubprocessError) as e:
        h.report(name, False, "%s: %s" % (type(e).__name__, e),
                 h.diag_for(h.ENV.work, name))


def tests(h):
    if not h.ROOT:
        if h.wanted("migrate/"):
            print("    # migrate: needs root (popa3d, Mailutils), not run",
                  flush=True)
        return
    NOTES.clear()
    lazy = Lazy(h)
    edges = mbox(edge_messages())
    n = len(edge_messages())
    dele = (1, 2, 9, 23, n)

    for cls, mode in ((Popa3d, "digest"), (Mailutils, "x-uidl"), (Dovecot, "x-uid")):
        steps, st = history(h, cls, "edges", mode, edges, dele)
        if cls is Popa3d:       # every id is a digest: popa3d lists them too
            steps = steps[:3]
        run_group(h, "migrate/%s/edges" % cls.name, steps, st, lazy)

    # The UW maildrop: Dovecot and Mailutils read UW's headers and hide
    # its pseudo-message; popa3d lists it as message 1 (no client of a
    # popa3d site can rely on it: UW's IMAP rewrites it), the rest must
    # agree.
    uw = uw_mailbox()

    for cls, mode in ((Popa3d, "digest"), (Mailutils, "x-uidl"), (Dovecot, "x-uid")):
        def pseudo(an, cls=cls, mode=mode):
            case, _ = new_case(h, uw)
            old = cls(h, an, case).uidl()
            # Dovecot hides the pseudo-message as pop3d does; popa3d and
            # Mailutils list it as message 1.
            shown = cls is not Dovecot
            if len(old) != 6 + shown:
                raise Fail("%s listed %d messages, expected %d" % (
                    cls.name, len(old), 6 + shown))
            counts = check(h, case, mode, old, "UW maildrop", skip_first=shown)
            compared(cls.name, "uw-pseudo", 6, counts)
        single(h, "migrate/%s/uw-pseudo" % cls.name, lazy, pseudo)

    # Dovecot sites that changed pop3_uidl_format: the same template on
    # both sides, on the edges mailbox after Dovecot's first run.
    for label, fmt in FORMATS:
        def fmt_case(an, fmt=fmt, label=label):
            case, _ = new_case(h, edges)
            old = Dovecot(h, an, case, fmt=fmt).uidl()
            counts = check(h, case, "x-uid", old, "pop3_uidl_format %s" % fmt, fmt)
            compared("dovecot", "edges-format-" + label, len(old), counts)
        single(h, "migrate/dovecot/format-" + label, lazy, fmt_case)

    for line in NOTES:
        print("    # compared " + line, flush=True)
