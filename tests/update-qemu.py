#!/usr/bin/env python3
"""A/B update tests under QEMU: update N -> N+1, rollback of an image that fails its health
check, fallback from a hung trial boot (watchdog), and power cuts (SIGKILL of QEMU) at random
points of an install. Driven by tests/update-qemu-test.sh and scripts/powercut-update.sh;
python3 standard library only.

The guest has no shell. The install is done by the image's `update-test` service
(`sphere-slots install --from-cmdline`, enabled only by `sphere.update_test=1` on the kernel
command line, which also carries `sphere.test_update=SIZE:SHA256:VERSION`): it waits until the running slot is committed, streams the image
from a read-only virtio disk (serial sphere-update) into the inactive slot, verifies it, puts
it on trial and asks init for a reboot. QEMU runs with -no-reboot, so every reboot ends QEMU
and this script starts the next boot, as a boot loader would. The boot-state record is also
read from the host between boots (`sphere-slots --bootenv DISK check --json`).

Every check prints `ok - ...` or `FAIL - ...`; the last line is "N passed, M failed".
"""

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MILESTONE = re.compile(r"sphere-init: milestone (\S+)((?: [^ =]+=\S+)*) t=")
SERVICE = re.compile(r"\[update-test\] sphere-slots: (\S+)(.*)")
HOST_T = re.compile(r"^\[\s*([0-9.]+)\]")


def fields(text):
    out = {}
    for part in text.split():
        key, _, value = part.partition("=")
        out[key] = value
    return out


class Boot:
    """One QEMU run: its console events, in order."""

    def __init__(self, name, log):
        self.name = name
        self.log = log
        self.events = []  # (host_seconds, kind, name, fields)
        self.killed = False
        self.status = None
        self.cut_after = None  # seconds after install-start when killed
        self.cut_bytes = None  # last progress seen before the cut

    def parse_line(self, line):
        m = HOST_T.match(line)
        t = float(m.group(1)) if m else 0.0
        m = MILESTONE.search(line)
        if m:
            self.events.append((t, "milestone", m.group(1), fields(m.group(2))))
            return
        m = SERVICE.search(line)
        if m:
            name, rest = m.group(1), m.group(2).strip()
            if name == "progress":
                done = rest.split("/")[0]
                self.events.append((t, "service", "progress", {"done": done}))
            else:
                self.events.append((t, "service", name, fields(rest)))
            return
        if "sphere-slots:" in line and "[update-test]" in line:
            self.events.append((t, "service", "error", {"text": line.strip()}))

    def first(self, name):
        for event in self.events:
            if event[2] == name:
                return event[3]
        return None

    def has(self, name):
        return self.first(name) is not None

    def summary(self):
        sel = self.first("slot-selected") or {}
        booted = self.first("slot-booted") or {}
        return "slot={} mode={} version={} {}".format(
            sel.get("slot", "?"), sel.get("mode", "?"), booted.get("version", "?"),
            "killed" if self.killed else f"exit={self.status}")


class Harness:
    def __init__(self, args):
        self.args = args
        self.work = args.work
        self.passed = 0
        self.failed = 0
        self.boots = 0
        self.rng = random.Random(args.seed)
        self.tool = args.tool
        self.disk = os.path.join(self.work, "ab.img")
        self.images = {}

    # --- reporting ---------------------------------------------------------------------------
    def check(self, ok, what, detail=""):
        if ok:
            self.passed += 1
            print(f"ok   - {what}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL - {what}{': ' + detail if detail else ''}", flush=True)
        return ok

    # --- images ------------------------------------------------------------------------------
    def make_variant(self, name, version, services=(), boot_timeout_ms=15000, pad_mib=0):
        """rootfs.erofs with VERSION_ID=version, extra init.json services, a boot timeout and
        optional incompressible padding (so an install takes long enough to be cut)."""
        tree = os.path.join(self.work, "tree-" + name)
        shutil.rmtree(tree, ignore_errors=True)
        subprocess.run(["fsck.erofs", f"--extract={tree}", os.path.join(self.args.image_dir, "rootfs.erofs")],
                       check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(tree, "etc/os-release"), "a") as f:
            f.write(f"VERSION_ID={version}\n")
        init_path = os.path.join(tree, "etc/sphere/init.json")
        with open(init_path) as f:
            init = json.load(f)
        init["boot_timeout_ms"] = boot_timeout_ms
        init["services"].extend(services)
        with open(init_path, "w") as f:
            json.dump(init, f, indent=2)
        if pad_mib:
            os.makedirs(os.path.join(tree, "usr/share"), exist_ok=True)
            with open(os.path.join(tree, "usr/share/update-test.pad"), "wb") as f:
                f.write(random.Random(version).randbytes(pad_mib << 20))
        self.customize_tree(tree)
        image = os.path.join(self.work, name + ".erofs")
        subprocess.run(["mkfs.erofs", "--quiet", "-zlz4hc,12", "-T0", "--all-root", image, tree], check=True)
        shutil.rmtree(tree)
        data = open(image, "rb").read()
        self.images[name] = {"path": image, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                             "version": str(version)}
        return self.images[name]

    def customize_tree(self, tree):
        """Hook for subclasses (tests/update-qemu-download.py adds sphere-updated and its config)."""

    def fresh_disk(self, rootfs_a, version_a):
        out = subprocess.run([os.path.join(REPO, "scripts/make-ab-disk.sh"), "--out", self.disk, "--rootfs-a",
                              rootfs_a, "--version-a", version_a], check=True, stdout=subprocess.PIPE, text=True)
        self.bootenv_offset = out.stdout.split()[-1]  # its last line: the bootenv partition's offset

    def record(self):
        """The boot-state record as the host reads it from the disk image (None if invalid)."""
        out = subprocess.run([self.tool, "--bootenv", self.disk, "--bootenv-offset", self.bootenv_offset, "--json", "check"],
                             capture_output=True, text=True)
        if out.returncode != 0:
            return None
        return json.loads(out.stdout)

    # --- booting ------------------------------------------------------------------------------
    def boot(self, name, update=None, command=None, kill_after_install=None, timeout=90, append=(),
             start_marker="[update-test] sphere-slots: install-start", run_args=()):
        """One QEMU run. With `kill_after_install`, QEMU is killed that many seconds after the
        console shows `start_marker`. `run_args`: more scripts/run-qemu.sh options."""
        self.boots += 1
        log = os.path.join(self.work, f"{self.boots:03d}-{name}.log")
        cmd = [os.path.join(REPO, "scripts/run-qemu.sh"), "--image-dir", self.args.boot_dir, "--disk", self.disk,
               "--quiet", "--log", log, "--timeout", str(timeout), *run_args]
        for word in append:
            cmd += ["--append", word]
        extra = []
        if update:
            # sphere.update_test=1 enables the image's update-test service, which reads the rest.
            cmd += ["--append", "sphere.update_test=1",
                    "--append", f"sphere.test_update={update['size']}:{update['sha256']}:{update['version']}"]
            extra = ["-drive", f"if=none,id=upd,file={update['path']},format=raw,readonly=on",
                     "-device", "virtio-blk-device,drive=upd,serial=sphere-update"]
        if command:
            cmd += ["--command", command]
        if extra:
            cmd += ["--"] + extra
        boot = Boot(name, log)
        stderr = open(log + ".stderr", "w")
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
        pos = 0
        partial = ""
        install_seen_at = None
        deadline = time.monotonic() + timeout + 30
        while True:
            status = proc.poll()
            try:
                with open(log, errors="replace") as f:
                    f.seek(pos)
                    chunk = f.read()
                    pos = f.tell()
            except FileNotFoundError:
                chunk = ""
            lines = (partial + chunk).split("\n")
            partial = lines.pop()
            for line in lines:
                boot.parse_line(line)
                if install_seen_at is None and start_marker in line:
                    install_seen_at = time.monotonic()
            if status is not None:
                boot.status = status
                break
            if kill_after_install is not None and install_seen_at is not None \
                    and time.monotonic() >= install_seen_at + kill_after_install:
                os.killpg(proc.pid, signal.SIGKILL)  # the power cut: QEMU and its helpers, no flush
                proc.wait()
                self.wait_group_gone(proc.pid)
                boot.killed = True
                boot.cut_after = kill_after_install
                progress = [e[3]["done"] for e in boot.events if e[2] == "progress"]
                boot.cut_bytes = int(progress[-1]) if progress else 0
                break
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                boot.status = "hung"
                break
            time.sleep(0.01)
        stderr.close()
        if partial:
            boot.parse_line(partial)
        print(f"#    boot {self.boots} {name}: {boot.summary()}", flush=True)
        return boot

    @staticmethod
    def wait_group_gone(pgid):
        """Until every process of the killed run (QEMU is a grandchild) is gone: the next QEMU
        would otherwise find the disk image still locked by the dying one."""
        for _ in range(1000):
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.01)

    def boot_ok(self, boot, version=None, slot=None):
        """The boot reached a good slot: root mounted, slot-booted, boot-complete."""
        booted = boot.first("slot-booted") or {}
        # Up: boot-complete, or the install service already running (a cut can come before
        # init reports boot-complete, which waits for that service's readiness grace).
        up = boot.has("boot-complete") or boot.has("install-start")
        ok = boot.has("root-mounted") and up and booted.get("version") in self.good_versions
        if version is not None:
            ok = ok and booted.get("version") == version
        if slot is not None:
            ok = ok and booted.get("slot") == slot
        return ok

    # --- scenarios ---------------------------------------------------------------------------
    def update_n_to_n1(self):
        v1, v2 = self.images["v1"], self.images["v2"]
        b = self.boot("install-v2", update=v2)
        done = b.first("install-done") or {}
        self.check(self.boot_ok(b, "1", "a") and done.get("target") == "b" and b.status == 0,
                   "update N->N+1: running version 1 in slot a, image streamed into slot b, reboot requested",
                   b.summary())
        self.install_seconds = None
        starts = [e[0] for e in b.events if e[2] == "install-start"]
        ends = [e[0] for e in b.events if e[2] == "install-done"]
        if starts and ends:
            self.install_seconds = ends[0] - starts[0]
            print(f"#    install of {v2['size']} bytes took {self.install_seconds:.2f} s (console time)")
        rec = self.record()
        st = rec and rec["state"]
        self.check(st and st["slot"] == "b" and st["upgrade_available"] and st["bootcount"] == 0
                   and st["versions"][1] == "2", "record after install: slot b on trial, 0 attempts used",
                   json.dumps(st))
        b = self.boot("trial-v2", command="poweroff")
        sel = b.first("slot-selected") or {}
        self.check(sel.get("mode") == "trial" and sel.get("attempt") == "1" and self.boot_ok(b, "2", "b"),
                   "next boot tries slot b (attempt 1 of 3) and runs version 2", b.summary())
        self.check(b.has("slot-committed"), "health check passed: slot b committed")
        b = self.boot("committed-v2", command="poweroff")
        sel = b.first("slot-selected") or {}
        self.check(sel.get("mode") == "normal" and self.boot_ok(b, "2", "b")
                   and (b.first("slot-booted") or {}).get("committed") == "yes",
                   "following boot: slot b, normal (committed), version 2", b.summary())
        st = (self.record() or {}).get("state", {})
        self.check(st.get("good_slot") == "b" and not st.get("upgrade_available"),
                   "record: good slot b, committed", json.dumps(st))

    def rollback(self, image_name, what, append=()):
        """Install a broken image into the inactive slot; it must fail its trials and the device
        must come back to the running version by itself."""
        bad = self.images[image_name]
        before = (self.record() or {}).get("state", {})
        good_slot, good_version = before.get("good_slot"), before.get("versions", [None, None])
        good_version = good_version[0 if good_slot == "a" else 1]
        b = self.boot(f"install-{image_name}", update=bad, append=append)
        self.check(b.has("install-done") and b.status == 0, f"{what}: image {bad['version']} installed", b.summary())
        trials = 0
        fell_back = None
        for attempt in range(1, 6):
            # poweroff at boot-complete ends the fallback boot; on a failing trial the health
            # check's reboot request comes first, and a hung trial never reaches boot-complete.
            b = self.boot(f"{image_name}-boot{attempt}", append=append, command="poweroff", timeout=120)
            sel = b.first("slot-selected") or {}
            if sel.get("mode") == "trial":
                trials += 1
                reason = "health-failed" if b.has("health-failed") else (
                    "trial-timeout" if b.has("trial-timeout") else "none")
                print(f"#    trial {trials}: version {(b.first('slot-booted') or {}).get('version')}, ended by {reason}")
                if image_name == "bad":
                    self.check(b.has("health-failed") and not b.has("slot-committed"),
                               f"{what}: trial {trials} fails its health check and reboots", b.summary())
                else:
                    self.check(b.has("trial-timeout") and not b.has("slot-committed"),
                               f"{what}: trial {trials} hangs and the watchdog reboots it", b.summary())
                continue
            fell_back = b
            break
        self.check(trials == 3, f"{what}: exactly bootlimit=3 trial boots", f"{trials}")
        ok = fell_back is not None and (fell_back.first("slot-selected") or {}).get("mode") == "fallback" \
            and self.boot_ok(fell_back, good_version, good_slot)
        self.check(ok, f"{what}: rolled back by itself to slot {good_slot} version {good_version}",
                   fell_back.summary() if fell_back else "no fallback boot")
        st = (self.record() or {}).get("state", {})
        self.check(st.get("slot") == good_slot and not st.get("upgrade_available")
                   and st.get("failed_slot") == ("a" if good_slot == "b" else "b"),
                   f"{what}: record says slot {good_slot} committed, other slot failed", json.dumps(st))

    def power_cuts(self, cuts):
        """Chain of boots: each boot must come up on a good slot and starts (or retries) an
        update to the other good version; QEMU is killed at a random moment of the install."""
        if self.install_seconds is None:
            # Calibrate: one uninterrupted install measures how long the window to cut in is.
            st = (self.record() or {}).get("state", {})
            running = st.get("versions", ["", ""])[0 if st.get("slot") == "a" else 1]
            b = self.boot("calibrate", update=self.images["v1" if running == "2" else "v2"])
            starts = [e[0] for e in b.events if e[2] == "install-start"]
            ends = [e[0] for e in b.events if e[2] == "install-done"]
            self.check(bool(starts and ends), "calibration install completed", b.summary())
            if starts and ends:
                self.install_seconds = ends[0] - starts[0]
        window = max(self.install_seconds or 2.0, 0.5)
        print(f"#    power cuts: {cuts}, random points in [0, {window * 1.1:.2f}] s after install-start, "
              f"seed {self.args.seed}")
        done_cuts = 0
        completed = 0
        bad_boots = 0
        invalid_records = 0
        attempts = 0
        while done_cuts < cuts and attempts < cuts * 3:
            attempts += 1
            st = (self.record() or {}).get("state")
            if st is None:
                invalid_records += 1
                self.check(False, f"cut {done_cuts}: boot-state record readable from the host")
                break
            running = st["versions"][0 if st["slot"] == "a" else 1]
            offer = self.images["v1" if running == "2" else "v2"]
            delay = self.rng.uniform(0, window * 1.1)
            b = self.boot(f"cut{done_cuts + 1}", update=offer, kill_after_install=delay, timeout=90)
            if not self.boot_ok(b):
                bad_boots += 1
                self.check(False, f"boot before cut {done_cuts + 1} came up on a good slot", b.summary())
                break
            if b.killed:
                done_cuts += 1
                print(f"#    cut {done_cuts}: {delay:.3f} s after install-start, last progress "
                      f"{b.cut_bytes} of {offer['size']} bytes")
            elif b.has("install-done"):
                completed += 1  # the cut came after the install had finished: update completed
        self.check(done_cuts >= cuts, f"{done_cuts} power cuts during installs ({completed} installs finished "
                   f"between cuts), every following boot came up on a good slot")
        self.check(bad_boots == 0 and invalid_records == 0, "the record stayed valid across every cut")
        # Finish: one uninterrupted update must complete and commit.
        st = (self.record() or {}).get("state", {})
        running = st.get("versions", ["", ""])[0 if st.get("slot") == "a" else 1]
        offer = self.images["v1" if running == "2" else "v2"]
        b = self.boot("after-cuts-install", update=offer)
        self.check(b.has("install-done") and self.boot_ok(b), "after the cuts the update can be finished",
                   b.summary())
        b = self.boot("after-cuts-trial", command="poweroff")
        self.check(self.boot_ok(b, offer["version"]) and b.has("slot-committed"),
                   f"and the device then boots version {offer['version']} and commits it", b.summary())
        return done_cuts

    def run(self):
        start = time.monotonic()
        os.makedirs(self.work, exist_ok=True)
        pad = self.args.pad_mib
        self.make_variant("v1", 1, pad_mib=pad)
        self.make_variant("v2", 2, pad_mib=pad)
        self.good_versions = {"1", "2"}
        # Exits at once, forever: never prints its ready line, so it never counts as up.
        broken = {"name": "broken", "path": "/sbin/init", "args": ["--check-config", "/nonexistent"],
                  "ready_line": "READY=1", "backoff_initial_ms": 200}
        if "rollback" in self.args.scenarios:
            self.make_variant("bad", 3, services=[broken], boot_timeout_ms=6000)
        if "hung" in self.args.scenarios:
            self.make_variant("hung", 4, services=[broken], boot_timeout_ms=600000)
        print(f"#    images: " + ", ".join(f"{k} {v['size']} bytes" for k, v in self.images.items()))
        self.fresh_disk(self.images["v1"]["path"], "1")
        self.install_seconds = None
        if "update" in self.args.scenarios:
            self.update_n_to_n1()
        if "rollback" in self.args.scenarios:
            self.rollback("bad", "rollback on failed health check")
        if "hung" in self.args.scenarios:
            self.rollback("hung", "rollback of a hung boot", append=("sphere.trial_timeout=12",))
        cuts = 0
        if self.args.cuts:
            cuts = self.power_cuts(self.args.cuts)
        elapsed = time.monotonic() - start
        print(f"#    {self.boots} boots, {cuts} power cuts, {elapsed:.0f} s")
        print(f"{self.passed} passed, {self.failed} failed")
        return 0 if self.failed == 0 else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-dir", required=True, help="build-image.sh output (rootfs.erofs, zImage, ...)")
    parser.add_argument("--boot-dir", required=True, help="zImage, initramfs.cpio.zst, cmdline.txt to boot")
    parser.add_argument("--tool", required=True, help="host build of sphere-slots")
    parser.add_argument("--work", required=True)
    parser.add_argument("--cuts", type=int, default=30)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--pad-mib", type=int, default=8, help="incompressible padding per update image")
    parser.add_argument("--scenarios", default="update,rollback,hung",
                        help="comma list of update, rollback, hung (power cuts: --cuts)")
    args = parser.parse_args()
    args.scenarios = set(args.scenarios.split(",")) if args.scenarios else set()
    sys.exit(Harness(args).run())


if __name__ == "__main__":
    main()
