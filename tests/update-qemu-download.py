#!/usr/bin/env python3
"""Power cuts while sphere-updated itself downloads and installs an OS update, under QEMU.

The device runs the real update path: `sphere-updated install` (TUF refresh with tough, then a
resumable HTTPS download streamed straight into the inactive slot, hash checked, slot put on
trial, reboot) against a real TUF repository made by `sphere update repo` and served from the
host by tests/update-server.py over HTTPS (a test CA; the guest reaches it at 10.0.2.100:8443
through a QEMU guestfwd that runs socat per connection). QEMU is SIGKILLed (the power cut) at a
random moment after init starts the update service; every cut is logged with the phase it hit
(metadata, download at byte N, verify/commit, reboot) from the device's console and the
server's transfer log. At each cut the next boot must come up on a good slot, and the update is
retried until it completes; a download cut after a checkpoint must resume (HTTP Range) at or
after that checkpoint, never re-using bytes past it. Versions only go up (anti-rollback): each
committed update publishes the next version.

The images are the QEMU image's rootfs.erofs with VERSION_ID=N, sphere-updated (cross-built),
its configuration, the repository's root and the test CA, and an `updated-test` service
(enabled by `sphere.updated_test=1` on the kernel command line).

Usage: tests/update-qemu-download.py --image-dir DIR --boot-dir DIR --tool SPHERE_SLOTS
           --sphere SPHERE_CLI --updated-bin ARMV7_SPHERE_UPDATED --work DIR [--cuts N] [--seed S]
Prints `ok - ...`/`FAIL - ...` and "N passed, M failed" last.
"""

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.dont_write_bytecode = True  # no tests/__pycache__ in the checkout from loading update-qemu.py
_spec = importlib.util.spec_from_file_location("update_qemu", os.path.join(HERE, "update-qemu.py"))
uq = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(uq)

GUEST_ADDR, GUEST_PORT = "10.0.2.100", 8443
SERVICE = "updated-test"
START_MARKER = f"milestone daemon-start name={SERVICE} "
# sphere-updated's download checkpoint and read buffer (daemons/sphere-updated/src/download.rs
# CHECKPOINT_BYTES, BUFFER_BYTES): a checkpoint is taken at the first write that is CHECKPOINT
# past the previous one, so consecutive checkpoints are at most CHECKPOINT + BUFFER apart.
CHECKPOINT = 4 << 20
BUFFER = 256 << 10
PROGRESS = re.compile(r"\[updated-test\] sphere-updated: (\S+): (\d+)% \((\d+)/(\d+) bytes\)")
RESUMING = re.compile(r"\[updated-test\] sphere-updated: resuming (\S+) at byte (\d+)")
INSTALLED = re.compile(r"\[updated-test\] installed release ([^:\s]+)")
ERROR = re.compile(r"\[updated-test\] sphere-updated: error: (.*)")


class Run:
    """What one boot's update service did, from the console log and the server log."""

    def __init__(self, log_path, server_events):
        self.progress = []  # (target, done, total)
        self.resumed = None  # (target, offset)
        self.installed = None
        self.reboot = False
        self.error = None
        with open(log_path, errors="replace") as f:
            for line in f:
                if m := PROGRESS.search(line):
                    self.progress.append((m.group(1), int(m.group(3)), int(m.group(4))))
                elif m := RESUMING.search(line):
                    self.resumed = (m.group(1), int(m.group(2)))
                elif m := INSTALLED.search(line):
                    self.installed = m.group(1)
                elif "[updated-test] sphere-updated: reboot requested" in line \
                        or "milestone shutdown-start action=reboot by=control-socket" in line:
                    # Init may stop the service before its own line reaches the console.
                    self.reboot = True
                elif m := ERROR.search(line):
                    self.error = m.group(1).strip()
        targets = [e for e in server_events if "/targets/" in e["path"]]
        self.requests = [e for e in targets if e["event"] == "begin"]
        self.ranged = [e for e in self.requests if e.get("range")]
        # How far the server got with the last target transfer (bytes handed to the socket).
        self.served = 0
        for e in targets:
            if e["event"] in ("sent", "broken", "done", "dropped"):
                self.served = e["start"] + e["sent"]
            elif e["event"] == "begin":
                self.served = e["start"]

    def phase(self):
        if self.reboot or self.installed:
            return "reboot (installed, slot on trial)"
        if self.progress and self.progress[-1][1] == self.progress[-1][2]:
            return "verify/commit (downloaded, hash check and record write)"
        if self.progress or self.requests:
            return "download"
        return "metadata (TUF refresh)"


class DownloadHarness(uq.Harness):
    def __init__(self, args):
        super().__init__(args)
        self.web = os.path.join(self.work, "web")
        self.tuf = os.path.join(self.work, "repo")
        self.keys = os.path.join(self.work, "keys")
        self.server_log = os.path.join(self.work, "server.jsonl")
        self.server_pos = 0
        self.server = None
        self.published = []  # versions in the repository
        self.service = {"name": SERVICE, "path": "/usr/bin/sphere-updated",
                        "args": ["install", "--wait-committed", "300", "--reboot"],
                        "restart": "never", "only_if_cmdline": "sphere.updated_test"}

    # --- host side ---------------------------------------------------------------------------
    def sh(self, *cmd):
        return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True).stdout

    def make_ca(self):
        w = self.work
        self.sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", f"{w}/ca.key", "-out", f"{w}/ca.pem", "-days", "2", "-subj", "/CN=opensphere-test-ca")
        self.sh("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", f"{w}/server.key", "-out", f"{w}/server.csr", "-subj", f"/CN={GUEST_ADDR}")
        with open(f"{w}/ext.cnf", "w") as f:
            f.write(f"subjectAltName=IP:{GUEST_ADDR},IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
        self.sh("openssl", "x509", "-req", "-in", f"{w}/server.csr", "-CA", f"{w}/ca.pem", "-CAkey", f"{w}/ca.key",
                "-CAcreateserial", "-out", f"{w}/server.pem", "-days", "2", "-extfile", f"{w}/ext.cnf")

    def start_server(self):
        os.makedirs(self.web, exist_ok=True)
        port_file = os.path.join(self.work, "port")
        self.server = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "update-server.py"), self.web, "--cert", f"{self.work}/server.pem",
             "--key", f"{self.work}/server.key", "--port-file", port_file, "--log", self.server_log],
            stderr=subprocess.DEVNULL)
        for _ in range(100):
            if os.path.exists(port_file):
                break
            time.sleep(0.05)
        port = open(port_file).read().strip()
        # guestfwd "cmd:" runs socat for EACH guest connection (the "tcp:" form is a single
        # connection made when QEMU starts; the updater opens one per request).
        self.fwd = ["--guestfwd", f"tcp:{GUEST_ADDR}:{GUEST_PORT}-cmd:socat STDIO TCP:127.0.0.1:{port}"]

    def server_events(self):
        """Server log lines since the last call."""
        events = []
        if os.path.exists(self.server_log):
            with open(self.server_log) as f:
                f.seek(self.server_pos)
                data = f.read()
            complete, _, _ = data.rpartition("\n")
            self.server_pos += len(complete) + (1 if complete else 0)
            events = [json.loads(line) for line in complete.split("\n") if line]
        return events

    def customize_tree(self, tree):
        shutil.copy(self.args.updated_bin, os.path.join(tree, "usr/bin/sphere-updated"))
        os.chmod(os.path.join(tree, "usr/bin/sphere-updated"), 0o755)
        etc = os.path.join(tree, "etc/sphere")
        shutil.copy(os.path.join(self.tuf, "metadata/1.root.json"), os.path.join(etc, "update-root.json"))
        shutil.copy(os.path.join(self.work, "ca.pem"), os.path.join(etc, "update-ca.pem"))
        config = {
            "metadata_url": f"https://{GUEST_ADDR}:{GUEST_PORT}/metadata/",
            "targets_url": f"https://{GUEST_ADDR}:{GUEST_PORT}/targets/",
            "trusted_root": "/etc/sphere/update-root.json",
            "ca_certificates": "/etc/sphere/update-ca.pem",
            "hardware": "qemu-a7",
            "state_dir": "/data/sphere/updated",
            "m4_dir": "/data/sphere/m4",
            "download": {"max_attempts": 4, "backoff_base_ms": 500, "backoff_max_ms": 2000,
                         "stall_timeout_secs": 15},
        }
        with open(os.path.join(etc, "updated.json"), "w") as f:
            json.dump(config, f, indent=2)

    def build_version(self, version):
        info = self.make_variant(f"v{version}", version, services=[self.service], pad_mib=self.args.pad_mib)
        self.good_versions.add(str(version))
        return info

    def publish(self, version):
        """Adds OS image `version` (release r<version>) to the repository and publishes it."""
        info = self.images.get(f"v{version}") or self.build_version(version)
        self.sh(self.args.sphere, "update", "repo", "add-target", self.tuf, info["path"], "--name",
                f"os-{version}.img", "--kind", "os-image", "--version", str(version), "--hardware", "qemu-a7",
                "--release", f"r{version}", "--keys", self.keys)
        for entry in os.listdir(self.web):
            path = os.path.join(self.web, entry)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        self.sh(self.args.sphere, "update", "repo", "publish", self.tuf, self.web)
        self.published.append(version)
        print(f"#    published os-{version}.img ({info['size']} bytes) as release r{version}", flush=True)

    # --- boots -------------------------------------------------------------------------------
    def boot_ok(self, boot, version=None, slot=None):
        booted = boot.first("slot-booted") or {}
        started = any(e[2] == "daemon-start" and e[3].get("name") == SERVICE for e in boot.events)
        ok = boot.has("root-mounted") and (boot.has("boot-complete") or started) \
            and booted.get("version") in self.good_versions
        if version is not None:
            ok = ok and booted.get("version") == str(version)
        if slot is not None:
            ok = ok and booted.get("slot") == slot
        return ok

    def update_boot(self, name, kill_after=None, timeout=150):
        self.server_events()  # skip what earlier boots left
        b = self.boot(name, kill_after_install=kill_after, timeout=timeout, append=("sphere.updated_test=1",),
                      start_marker=START_MARKER, run_args=self.fwd)
        time.sleep(0.2)  # the server logs the broken transfer when its write fails
        return b, Run(b.log, self.server_events())

    def trial_boot(self, version):
        """A slot on trial boots; its health check must commit it; then the next version is published."""
        b = self.boot(f"trial-v{version}", command="poweroff", run_args=self.fwd)
        ok = self.check(self.boot_ok(b, version) and b.has("slot-committed"),
                        f"version {version} boots on trial and commits", b.summary())
        if ok and version + 1 not in self.published:
            self.publish(version + 1)
        return ok

    def record_state(self):
        return (self.record() or {}).get("state")

    def running_version(self, st):
        return int(st["versions"][0 if st["slot"] == "a" else 1])

    # --- scenarios ---------------------------------------------------------------------------
    def first_update(self):
        """Update N -> N+1 through sphere-updated over HTTPS, uncut; measures the window."""
        b, run = self.update_boot("dl-install-v2")
        starts = [e[0] for e in b.events if e[2] == "daemon-start" and e[3].get("name") == SERVICE]
        last = b.events[-1][0] if b.events else 0
        ok = self.check(run.installed == "r2" and run.reboot and b.status == 0 and self.boot_ok(b, 1, "a"),
                        "sphere-updated installs release r2 from the HTTPS TUF repository and asks for a reboot",
                        f"{b.summary()} installed={run.installed} error={run.error}")
        whole = [e for e in run.requests if e["start"] == 0 and not e.get("range")]
        self.check(len(whole) == 1 and not run.ranged, "one whole download of the target (no Range needed)",
                   json.dumps(run.requests))
        if starts:
            self.window = max(last - starts[0], 2.0)
            size = self.images["v2"]["size"]
            print(f"#    service start to power-off: {self.window:.1f} s (console time) for {size} bytes", flush=True)
        return ok and self.trial_boot(2)

    def power_cuts(self, cuts):
        window = getattr(self, "window", 30.0)
        print(f"#    download power cuts: {cuts}, random points in [0, {window * 1.05:.1f}] s after the update "
              f"service starts, seed {self.args.seed}", flush=True)
        done = 0
        attempts = 0
        phases = {}
        resumes = 0
        resume_checks = 0
        completed = 0
        expect_resume = None  # (target, minimum offset, most written) after a download cut
        while done < cuts and attempts < cuts * 3:
            attempts += 1
            st = self.record_state()
            if st is None:
                self.check(False, f"cut {done}: boot-state record readable from the host")
                break
            if st["upgrade_available"]:
                if not self.trial_boot(int(st["versions"][0 if st["slot"] == "a" else 1])):
                    break
                expect_resume = None
                continue
            running = self.running_version(st)
            if running + 1 not in self.published:
                self.publish(running + 1)
            delay = self.rng.uniform(0, window * 1.05)
            b, run = self.update_boot(f"dlcut{done + 1}", kill_after=delay)
            if not self.check(self.boot_ok(b, running), f"boot {self.boots} came up on committed version {running}",
                              b.summary()):
                break
            if run.error:
                self.check(False, f"boot {self.boots}: update service failed", run.error)
                break
            if run.resumed:
                resumes += 1
            if expect_resume:
                target, minimum, served = expect_resume
                got = run.resumed[1] if run.resumed and run.resumed[0] == target else 0
                server = [e["start"] for e in run.ranged]
                if run.requests or run.resumed:
                    resume_checks += 1
                    # Nothing lost: at or past the last durable checkpoint. Nothing invented:
                    # not past what the server had sent. The device and server agree (Range).
                    self.check(minimum <= got <= served and got in server,
                               f"the cut download resumed at byte {got} with a Range request (last durable "
                               f"checkpoint >= {minimum}, server had sent {served}; Range starts {server})")
                    expect_resume = None
            if b.killed:
                done += 1
                phase = run.phase()
                key = phase.split(" ")[0]
                phases[key] = phases.get(key, 0) + 1
                written = run.progress[-1][1] if run.progress else (run.resumed[1] if run.resumed else 0)
                total = self.images[f"v{running + 1}"]["size"]
                print(f"#    cut {done}: {delay:.2f} s after service start, phase {phase}; device wrote "
                      f"{written} of {total} bytes (last progress line), server had sent up to byte {run.served}"
                      f"{', resumed at ' + str(run.resumed[1]) if run.resumed else ''}", flush=True)
                if key == "download":
                    # Durable at the cut: the checkpoint this boot started from (a resume saves
                    # it again at once), and every checkpoint up to the second-to-last progress
                    # line (progress is printed before the checkpoint of the same write, so the
                    # last line's may not have been made). The newest of those is at most
                    # CHECKPOINT + BUFFER before that line.
                    start = run.resumed[1] if run.resumed else 0
                    before = run.progress[-2][1] if len(run.progress) >= 2 else start
                    minimum = max(start, before - CHECKPOINT - BUFFER)
                    if minimum > 0:
                        expect_resume = (f"os-{running + 1}.img", minimum, run.served)
            elif run.installed:
                completed += 1
                print(f"#    boot {self.boots}: install of r{running + 1} completed before the cut "
                      f"({delay:.2f} s){', resumed at ' + str(run.resumed[1]) if run.resumed else ''}", flush=True)
            else:
                self.check(False, f"boot {self.boots}: neither cut nor installed", b.summary())
                break
        self.check(done >= cuts, f"{done} power cuts during sphere-updated's download and install "
                   f"({completed} updates finished between cuts), each next boot on a good slot")
        print(f"#    cuts by phase: " + ", ".join(f"{k} {v}" for k, v in sorted(phases.items())), flush=True)
        print(f"#    downloads resumed with HTTP Range after a cut: {resumes}; resume offsets checked: "
              f"{resume_checks}", flush=True)
        self.check(resumes >= 1 or done < 4, f"at least one download resumed with a Range request ({resumes})")
        # Finish: the pending update must complete uncut, boot and commit.
        st = self.record_state() or {}
        if st.get("upgrade_available"):
            self.trial_boot(self.running_version(st))
            st = self.record_state() or {}
        running = self.running_version(st)
        if running + 1 not in self.published:
            self.publish(running + 1)
        b, run = self.update_boot("dl-after-cuts")
        self.check(run.installed == f"r{running + 1}" and run.reboot and b.status == 0,
                   f"after the cuts the update to version {running + 1} finishes",
                   f"{b.summary()} error={run.error}")
        b = self.boot(f"dl-after-cuts-trial", command="poweroff", run_args=self.fwd)
        self.check(self.boot_ok(b, running + 1) and b.has("slot-committed"),
                   f"and version {running + 1} boots and commits", b.summary())
        return done, phases, resumes

    def run(self):
        start = time.monotonic()
        os.makedirs(self.work, exist_ok=True)
        self.good_versions = set()
        self.make_ca()
        self.sh(self.args.sphere, "update", "repo", "init", self.tuf, "--keys", self.keys)
        self.start_server()
        try:
            self.build_version(1)
            self.fresh_disk(self.images["v1"]["path"], "1")
            self.publish(2)
            cuts = 0
            if self.first_update() and self.args.cuts:
                cuts, _, _ = self.power_cuts(self.args.cuts)
        finally:
            self.server.terminate()
            self.server.wait()
        print(f"#    {self.boots} boots, {cuts} download/install power cuts, {time.monotonic() - start:.0f} s")
        print(f"{self.passed} passed, {self.failed} failed")
        return 0 if self.failed == 0 else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-dir", required=True, help="build-image.sh output (rootfs.erofs, zImage, ...)")
    parser.add_argument("--boot-dir", required=True, help="zImage, initramfs.cpio.zst, cmdline.txt to boot")
    parser.add_argument("--tool", required=True, help="host build of sphere-slots (reads the record)")
    parser.add_argument("--sphere", required=True, help="host build of the sphere CLI (repository tooling)")
    parser.add_argument("--updated-bin", required=True, help="armv7 build of sphere-updated for the image")
    parser.add_argument("--work", required=True)
    parser.add_argument("--cuts", type=int, default=10)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--pad-mib", type=int, default=8, help="incompressible padding per update image")
    args = parser.parse_args()
    sys.exit(DownloadHarness(args).run())


if __name__ == "__main__":
    main()
