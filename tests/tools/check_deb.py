#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Check the Debian package that `make deb` left in DIR (build/deb).

    check_deb.py DIR

Looks at the package as dpkg will: its file list (dpkg-deb -c), its
control files (conffiles, maintainer scripts, Depends), the files
themselves (extracted into a temporary directory: the binaries run, the
shipped configuration passes -t, the man pages render, the unit starts
/usr/bin/tusknetd as the package's user), and lintian (no error). As root,
it also installs, reinstalls, removes and purges the package with dpkg in a
private mount namespace whose / is an overlay on a tmpfs (this machine's
file system, users and dpkg database are not changed) and checks what each
step did.

Prints one line per check and a closing "deb-check: N passed, N failed";
exit status 0 when every check passed, 1 otherwise, 2 usage.
"""
import glob
import gzip
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# What the package must ship (it may ship more: every file under /etc is
# then checked to be a conffile, and nothing may be under /usr/local).
REQUIRED = {
    "usr/bin/tusknetd": 0o755,
    "usr/bin/tusknetctl": 0o755,
    "lib/systemd/system/tusknetd.service": 0o644,
    "lib/systemd/system/tusknetd.socket": 0o644,
    "lib/systemd/system/tusknetd.service.d/tusknetd-user.conf": 0o644,
    "usr/lib/sysusers.d/tusknetd.conf": 0o644,
    "etc/tusknetd/tusknetd.conf": 0o644,
    "usr/share/man/man8/tusknetd.8.gz": 0o644,
    "usr/share/man/man8/tusknetctl.8.gz": 0o644,
    "usr/share/man/man5/tusknetd.conf.5.gz": 0o644,
    "usr/share/bash-completion/completions/tusknetctl": 0o644,
    "usr/share/doc/tusknetd/copyright": 0o644,
    "usr/share/doc/tusknetd/changelog.Debian.gz": 0o644,
    "usr/share/doc/tusknetd/README.md.gz": 0o644,
}
for sub in ("www", "examples"):
    for f in sorted((REPO / "conf" / sub).rglob("*")):
        if f.is_file():
            REQUIRED[f"usr/share/tusknetd/{sub}/{f.relative_to(REPO / 'conf' / sub)}"] = 0o644


class Checks:
    def __init__(self):
        self.passed = self.failed = 0

    def check(self, ok, what, detail=""):
        if ok:
            self.passed += 1
            print(f"ok   {what}")
        else:
            self.failed += 1
            print(f"FAIL {what}" + (f"\n     {detail}" if detail else ""))
        return ok


def run(*argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, **kw)


def contents(deb):
    """{path: (mode, owner)} of the regular files in DEB."""
    out = {}
    for line in run("dpkg-deb", "-c", deb).stdout.splitlines():
        # -rwxr-xr-x root/root    123456 2026-12-06 14:00 ./usr/bin/tusknetd
        m = re.match(r"^(\S+) (\S+)\s+\d+ \S+ \S+ \./(.*?)(?: -> .*)?$", line)
        if m and m.group(1).startswith("-"):
            perms = m.group(1)[1:]
            mode = sum(1 << (8 - i) for i, c in enumerate(perms) if c not in "-")
            out[m.group(3)] = (mode, m.group(2))
    return out


# Run in `unshare -m` with the .deb as $1 and an empty directory as $2:
# every write lands in the tmpfs mounted there.
INSTALL_SCRIPT = r"""
set -e
t=$2
mount -t tmpfs tmpfs "$t"
mkdir "$t/upper" "$t/work" "$t/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$t/upper,workdir=$t/work" "$t/root"
mount -t proc proc "$t/root/proc"
mount --rbind /dev "$t/root/dev"
mount -t tmpfs tmpfs "$t/root/run"
mount -t tmpfs tmpfs "$t/root/tmp"
cp "$1" "$t/root/tmp/tusknetd.deb"
exec chroot "$t/root" /bin/sh -ec '
  echo "@user-before $(getent passwd tusknetd || echo none)"
  dpkg -i /tmp/tusknetd.deb >/dev/null
  echo "@user $(getent passwd tusknetd)"
  echo "@group $(getent group tusknetd)"
  echo "@enabled $(readlink /etc/systemd/system/multi-user.target.wants/tusknetd.service || echo none)"
  echo "@socket-enabled $(ls /etc/systemd/system/sockets.target.wants/ 2>/dev/null | grep -c tusknetd || true)"
  echo "@check $(runuser -u tusknetd -- tusknetd -t -c /etc/tusknetd/tusknetd.conf 2>&1 | tail -1)"
  echo "@man $(man -w tusknetd tusknetctl tusknetd.conf | tr "\n" " ")"
  echo "# edited by the administrator" >> /etc/tusknetd/tusknetd.conf
  dpkg -i /tmp/tusknetd.deb >/dev/null
  echo "@kept $(tail -1 /etc/tusknetd/tusknetd.conf)"
  dpkg -r tusknetd >/dev/null
  echo "@removed $(ls /usr/bin/tusknetd 2>/dev/null || echo gone) $(ls /etc/tusknetd)"
  dpkg --purge tusknetd >/dev/null
  echo "@purged $(ls /etc/tusknetd 2>/dev/null || echo gone) $(ls /etc/systemd/system/multi-user.target.wants/tusknetd.service 2>/dev/null || echo unlinked)"
'
"""


def install_checks(c, deb):
    if os.geteuid() != 0:
        print("skip install, reinstall, remove, purge with dpkg (needs root)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        r = run("unshare", "-m", "sh", "-ec", INSTALL_SCRIPT, "sh", os.path.abspath(deb), tmp)
    got = dict(l[1:].split(" ", 1) for l in r.stdout.splitlines() if l.startswith("@") and " " in l)
    detail = f"exit {r.returncode}\n{r.stdout}{r.stderr}"
    if not c.check(r.returncode == 0 and len(got) == 10, "dpkg -i, reinstall, -r, --purge in an overlay", detail):
        return
    c.check(got["user-before"] == "none" and re.fullmatch(r"tusknetd:x:\d+:\d+:[^:]*:/nonexistent:/usr/sbin/nologin",
                                                          got["user"]) is not None
            and got["group"].startswith("tusknetd:x:"), "installing creates the system user and group tusknetd",
            detail)
    c.check(got["enabled"] == "/lib/systemd/system/tusknetd.service" and got["socket-enabled"] == "0",
            "installing enables tusknetd.service, not tusknetd.socket", detail)
    c.check(got["check"] == "tusknetd: configuration /etc/tusknetd/tusknetd.conf is valid",
            "the installed configuration passes -t as the user tusknetd", detail)
    c.check(got["man"].split() == ["/usr/share/man/man8/tusknetd.8.gz", "/usr/share/man/man8/tusknetctl.8.gz",
                                   "/usr/share/man/man5/tusknetd.conf.5.gz"], "man finds the three pages", detail)
    c.check(got["kept"] == "# edited by the administrator", "reinstalling keeps the edited conffile", detail)
    c.check(got["removed"] == "gone tusknetd.conf" and got["purged"] == "gone unlinked",
            "remove keeps the configuration, purge removes it and the enable link", detail)


def main(argv):
    if len(argv) != 2:
        sys.stderr.write(f"usage: {argv[0]} DIR\n")
        return 2
    c = Checks()
    debs = [d for d in glob.glob(os.path.join(argv[1], "tusknetd_*.deb"))]
    if not c.check(len(debs) == 1, "one tusknetd_*.deb in " + argv[1], f"found {debs}"):
        print(f"deb-check: {c.passed} passed, {c.failed} failed")
        return 1
    deb = debs[0]
    version = run("dpkg-deb", "-f", deb, "Version").stdout.strip()
    upstream = version.rsplit("-", 1)[0]

    files = contents(deb)
    missing = sorted(set(REQUIRED) - set(files))
    c.check(not missing, "ships daemon, tusknetctl, units, user, config, man pages, completion, site, examples",
            f"missing: {missing}")
    wrong = sorted(f"{p} {oct(files[p][0])}" for p, m in REQUIRED.items() if p in files and files[p][0] != m)
    c.check(not wrong, "file modes (0755 programs, 0644 the rest)", f"wrong: {wrong}")
    owners = sorted({o for _, o in files.values()})
    c.check(owners == ["root/root"], "every file owned by root/root", f"owners: {owners}")
    local = sorted(p for p in files if p.startswith("usr/local/"))
    c.check(not local, "nothing under /usr/local", f"{local}")

    with tempfile.TemporaryDirectory() as tmp:
        root, ctrl = Path(tmp, "root"), Path(tmp, "control")
        run("dpkg-deb", "-x", deb, str(root))
        run("dpkg-deb", "-e", deb, str(ctrl))
        conffiles = (ctrl / "conffiles").read_text().split() if (ctrl / "conffiles").exists() else []
        etc = sorted("/" + p for p in files if p.startswith("etc/"))
        c.check("/etc/tusknetd/tusknetd.conf" in conffiles and sorted(conffiles) == etc,
                "every file under /etc is a conffile, /etc/tusknetd/tusknetd.conf among them",
                f"conffiles {conffiles}, files under /etc {etc}")

        depends = run("dpkg-deb", "-f", deb, "Depends").stdout
        need = ["libevent-2.1", "libssl3", "libwebsockets", "libyaml", "libsystemd0", "libhttp-parser",
                "zlib1g", "systemd | systemd-standalone-sysusers"]
        c.check(all(n in depends for n in need), "Depends: the shared libraries and systemd-sysusers",
                f"Depends: {depends.strip()}")

        postinst = (ctrl / "postinst").read_text() if (ctrl / "postinst").exists() else ""
        prerm = (ctrl / "prerm").read_text() if (ctrl / "prerm").exists() else ""
        sysusers = postinst.find("systemd-sysusers")
        enable = postinst.find("deb-systemd-helper enable 'tusknetd.service'")
        start = postinst.find("deb-systemd-invoke start 'tusknetd.service'")
        c.check(0 <= sysusers < enable < start, "postinst: creates the user, then enables and starts the service",
                postinst)
        c.check("restart" not in postinst and not (ctrl / "preinst").exists(),
                "an upgrade restarts nothing (no preinst stop, no restart in postinst)", postinst)
        # --no-enable: the socket is enabled again on upgrades only if the
        # administrator had enabled it (was-enabled), never on installation
        sock = postinst[postinst.find("'tusknetd.socket'") - 300:]
        c.check("deb-systemd-helper debian-installed 'tusknetd.socket'" in sock
                and sock.find("debian-installed 'tusknetd.socket'") < sock.find("enable 'tusknetd.socket'")
                and "start 'tusknetd.socket'" not in postinst,
                "the socket unit is neither enabled nor started on installation", postinst)
        c.check('[ "$1" = remove ]' in prerm and "deb-systemd-invoke stop 'tusknetd.service'" in prerm,
                "prerm stops the service on removal only", prerm)

        unit = (root / "lib/systemd/system/tusknetd.service").read_text()
        c.check("\nExecStart=/usr/bin/tusknetd -c /etc/tusknetd/tusknetd.conf\n" in unit
                and "/usr/local" not in unit, "the unit starts /usr/bin/tusknetd")
        c.check(re.search(r"^Documentation=.*man:tusknetd\(8\).*man:tusknetd\.conf\(5\)", unit, re.M) is not None,
                "the unit's Documentation= names the man pages")
        dropin = (root / "lib/systemd/system/tusknetd.service.d/tusknetd-user.conf").read_text()
        sysu = (root / "usr/lib/sysusers.d/tusknetd.conf").read_text()
        c.check("\nUser=tusknetd\n" in dropin and re.search(r"^u tusknetd ", sysu, re.M) is not None,
                "the package's user tusknetd (sysusers.d) runs the service (drop-in User=)", dropin + sysu)

        v = run(str(root / "usr/bin/tusknetd"), "-V")
        c.check(v.returncode == 0 and v.stdout == f"tusknetd {upstream}\n",
                f"packaged tusknetd -V says {upstream}", f"{v.stdout!r} {v.stderr!r}")
        v = run(str(root / "usr/bin/tusknetctl"), "-V")
        c.check(v.returncode == 0 and upstream in v.stdout, "packaged tusknetctl -V runs", f"{v.stdout!r}")
        # the shipped config serves /usr/share/tusknetd/www: point it into the extracted tree
        conf = (root / "etc/tusknetd/tusknetd.conf").read_text()
        staged = Path(tmp, "staged.conf")
        staged.write_text(conf.replace('"/usr/share/tusknetd/www"', f'"{root}/usr/share/tusknetd/www"')
                          .replace('"/run/tusknetd/control.sock"', f'"{tmp}/control.sock"'))
        t = run(str(root / "usr/bin/tusknetd"), "-t", "-c", str(staged))
        c.check('"/usr/share/tusknetd/www"' in conf and t.returncode == 0,
                "the shipped configuration serves the shipped site and passes -t", t.stderr)

        for page in ("man8/tusknetd.8.gz", "man8/tusknetctl.8.gz", "man5/tusknetd.conf.5.gz"):
            text = gzip.decompress((root / "usr/share/man" / page).read_bytes())
            r = subprocess.run(["groff", "-ww", "-z", "-man"], input=text, capture_output=True, timeout=60)
            c.check(r.returncode == 0 and r.stderr == b"", f"{page} renders without warnings",
                    r.stderr.decode(errors="replace"))

        comp = root / "usr/share/bash-completion/completions/tusknetctl"
        c.check(comp.read_bytes() == (REPO / "completion" / "tusknetctl").read_bytes(),
                "the bash completion is completion/tusknetctl")

    install_checks(c, deb)

    changes = glob.glob(os.path.join(argv[1], "tusknetd_*.changes"))
    lint = run("lintian", "--info", *(changes or [deb]))
    tags = [l for l in lint.stdout.splitlines() if re.match(r"^[EWIPX]: ", l)]
    errors = [l for l in tags if l.startswith("E: ")]
    for l in tags:
        print(f"     lintian {l}")
    c.check(not errors and lint.returncode == 0, "lintian reports no error", "\n".join(errors) + lint.stderr)

    print(f"deb-check: {c.passed} passed, {c.failed} failed")
    return 0 if c.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
