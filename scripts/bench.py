#!/usr/bin/env python3
"""The unionfs benchmark: one layer stack, mounted by every union filesystem in one run.

Builds its fixtures (a source-tree-like layer of 21k files in 1.3k directories, a layer of
overrides with whiteouts and opaque directories on top, a 1 GiB and a 256 MiB file below),
then for each system -- plain ext4 (a merged copy), kernel overlayfs, fuse-overlayfs 1.x,
fuse-overlayfs 2.0, unionfs-fuse, unionfs (on FUSE over io_uring where bench.sh switched
the kernel's fuse.enable_uring on, its default then; also on /dev/fuse, and without
passthrough) -- times every workload, each the median of --reps runs. Cold runs get a fresh
mount and dropped caches each time; warm runs reuse one mount after a priming run; the
systems take turns run by run. Prints a markdown table of times
and of ratios to kernel overlayfs and to both fuse-overlayfs, reports each daemon's resident
memory after all workloads, and writes results.json, results.md and an SVG chart of the
ratios. Two rows are latencies, not times of work: 200 first lookups while a 1 GiB copy-up
runs (whether slow requests hold up quick ones), and, for `unionfs-watch` alone (`-o watch`,
with --systems), how soon a file made in a lower layer shows in the mount. Needs root (kernel
overlayfs, drop_caches). Run it through scripts/bench.sh.
"""

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time

SYSTEMS = ["ext4", "kernel", "fo1", "fo2", "unionfs-fuse", "unionfs", "unionfs-nouring", "unionfs-nopt", "kernel-mc",
           "unionfs-mc",
           "unionfs-uring", "unionfs-noprefetch", "unionfs-volatile", "unionfs-base", "unionfs-base-nopt", "unionfs-watch"]
# Measured only when asked for with --systems (the metadata-only copy-up comparison,
# unionfs on FUSE over io_uring where the kernel offers it,
# unionfs without reading directories ahead, unionfs without fsync of copied-up data as
# fuse-overlayfs copies up).
EXTRA = {"kernel-mc", "unionfs-mc", "unionfs-uring", "unionfs-noprefetch", "unionfs-volatile",
         "unionfs-base", "unionfs-base-nopt", "unionfs-watch"}
LABEL = {
    "ext4": "ext4 (merged copy)",
    "kernel": "kernel overlayfs",
    "fo1": "fuse-overlayfs 1.x",
    "fo2": "fuse-overlayfs 2.0",
    "unionfs-fuse": "unionfs-fuse",
    "unionfs": "unionfs",
    "unionfs-nouring": "unionfs -o nouring",
    "unionfs-nopt": "unionfs -o nopassthrough",
    "kernel-mc": "kernel overlayfs -o metacopy=on",
    "unionfs-mc": "unionfs -o metacopy=on",
    "unionfs-uring": "unionfs -o uring",
    "unionfs-noprefetch": "unionfs -o noprefetch",
    "unionfs-volatile": "unionfs -o volatile",
    "unionfs-base": "unionfs (--base build)",
    "unionfs-base-nopt": "unionfs -o nopassthrough (--base build)",
    "unionfs-watch": "unionfs -o watch",
}
DAEMONS = {"fo1": "fuse-overlayfs", "fo2": "fuse-overlayfs", "unionfs-fuse": "unionfs-fuse",
           "unionfs": "unionfs", "unionfs-nouring": "unionfs", "unionfs-nopt": "unionfs", "unionfs-mc": "unionfs",
           "unionfs-uring": "unionfs", "unionfs-noprefetch": "unionfs",
           "unionfs-volatile": "unionfs", "unionfs-base": "unionfs", "unionfs-base-nopt": "unionfs",
           "unionfs-watch": "unionfs"}
BIG = 1 << 30
MID = 256 << 20


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def sh(cmd, check=True, **kw):
    return subprocess.run(cmd, shell=True, check=check, **kw)


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


# The "cold" regime: "cold" drops every cache before each run (the layers are read from the
# disk: what a machine with a slow disk, or a first start, pays); "warm" keeps the layer
# directories' page and dentry caches warm and starts each run on a fresh mount, so only the
# union's own caches are cold (what a machine with a fast disk, or a second container of an
# image, pays). --layer-cache chooses.
LAYER_CACHE = "cold"


def cold_start(fx):
    """Before a "cold" run: drop every cache, or warm the layers' (the mount is fresh)."""
    if LAYER_CACHE == "cold":
        drop_caches()
    else:
        sh(f"find {fx} -type f -print0 | xargs -0 cat >/dev/null; ls -lR {fx} >/dev/null")


# ---------------------------------------------------------------- fixtures

def write_file(path, size, rng):
    with open(path, "wb") as f:
        f.write(rng.randbytes(size))


def build_fixtures(base):
    """Layers l1 (overrides, top), l2 (source tree), l3 (big files); a tarball to untar."""
    fx = os.path.join(base, "fixture")
    done = os.path.join(fx, ".done")
    if os.path.exists(done):
        return fx
    shutil.rmtree(fx, ignore_errors=True)
    rng = random.Random(42)
    l1, l2, l3 = (os.path.join(fx, n) for n in ("l1", "l2", "l3"))
    log("building fixtures in " + fx)
    files = []
    for a in range(12):
        for b in range(10):
            for c in range(10):
                d = os.path.join(l2, "src", f"m{a:02}", f"p{b}", f"q{c}")
                os.makedirs(d)
                for i in range(18):
                    p = os.path.join(d, f"file_{i:02}.{rng.choice(['rs', 'c', 'h', 'py', 'md'])}")
                    # Source-like sizes: mostly a few KiB, some larger.
                    write_file(p, min(int(rng.lognormvariate(8.3, 0.9)), 256 << 10), rng)
                    files.append(os.path.relpath(p, l2))
    log(f"  l2: {len(files)} files")
    # Overrides: new versions of 2000 files, 200 whiteouts, 6 opaque directories.
    picks = rng.sample(files, 2200)
    for rel in picks[:2000]:
        p = os.path.join(l1, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        write_file(p, rng.randint(100, 8000), rng)
    for rel in picks[2000:]:
        p = os.path.join(l1, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        os.mknod(p, 0o600 | 0o020000, os.makedev(0, 0))
    for a in range(6):
        d = os.path.join(l1, "src", f"m{a:02}", "p9", "q9")
        os.makedirs(d, exist_ok=True)
        os.setxattr(d, "trusted.overlay.opaque", b"y")
        write_file(os.path.join(d, "replaced.rs"), 3000, rng)
    os.makedirs(os.path.join(l3, "data"))
    block = rng.randbytes(1 << 20)
    for name, size in (("big1g", BIG), ("big256m", MID)):
        with open(os.path.join(l3, "data", name), "wb") as f:
            for _ in range(size >> 20):
                f.write(block)
    # The tarball: 3 top-level modules (about 5.4k files).
    sh(f"tar -C {l2}/src -cf {fx}/untar.tar m09 m10 m11")
    open(done, "w").close()
    return fx


def lowers(fx):
    return [os.path.join(fx, n) for n in ("l1", "l2", "l3")]


def ext4_pristine(base, fx):
    """The merged tree as a plain directory, copied from a read-only kernel overlay mount."""
    dst = os.path.join(base, "ext4-pristine")
    if os.path.exists(os.path.join(base, ".ext4-done")):
        return dst
    shutil.rmtree(dst, ignore_errors=True)
    m = os.path.join(base, "ro-mnt")
    os.makedirs(m, exist_ok=True)
    sh(f"mount -t overlay overlay -o ro,lowerdir={':'.join(lowers(fx))} {m}")
    try:
        sh(f"cp -a {m} {dst}")
    finally:
        sh(f"umount {m}")
    open(os.path.join(base, ".ext4-done"), "w").close()
    return dst


# ---------------------------------------------------------------- mounts

class Scratch:
    """A fresh ext4 filesystem (a loop device) for one system's uppers, work dirs and writes:
    every system starts from the same empty filesystem, so one system's deletions cannot slow
    the next one's inode allocation."""

    def __init__(self, base, name):
        self.img, self.dir = os.path.join(base, f"scratch-{name}.img"), os.path.join(base, f"scratch-{name}")

    def fresh(self):
        self.close()
        os.makedirs(self.dir, exist_ok=True)
        with open(self.img, "wb") as f:
            f.truncate(16 << 30)
        sh(f"mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 {self.img}")
        sh(f"mount -o loop {self.img} {self.dir}")
        return self.dir

    def close(self):
        if os.path.ismount(self.dir):
            sh(f"umount {self.dir}")
        if os.path.exists(self.img):
            os.remove(self.img)


class Mount:
    """One mount of the stack by one system, on a fresh upper."""

    def __init__(self, system, base, fx, tools):
        self.system, self.base, self.fx, self.tools = system, base, fx, tools
        run = os.path.join(tools["scratch"], "run")
        self.upper, self.work, self.mnt = (os.path.join(run, n) for n in ("upper", "work", "mnt"))
        self.pid = None

    def __enter__(self):
        run = os.path.dirname(self.mnt)
        if os.path.ismount(self.mnt):
            sh(f"umount -l {self.mnt}", check=False)
        shutil.rmtree(run, ignore_errors=True)
        # Give what the last run wrote back to the host disk: the scratch images are sparse,
        # and 3 runs × 9 systems of gigabyte writes would otherwise fill it.
        if os.path.ismount(self.tools["scratch"]):
            sh(f"fstrim {self.tools['scratch']}", check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for d in (self.upper, self.work, self.mnt):
            os.makedirs(d)
        s, lw = self.system, ":".join(lowers(self.fx))
        o = f"lowerdir={lw},upperdir={self.upper},workdir={self.work}"
        if s == "ext4":
            # A hard-link farm of the merged copy: fresh names per run, shared data.
            os.rmdir(self.mnt)
            sh(f"cp -al {self.tools['ext4-scratch']} {self.mnt}")
            return self
        cmd = {
            "kernel": f"mount -t overlay overlay -o {o} {self.mnt}",
            "fo1": f"fuse-overlayfs -o {o} {self.mnt}",
            "fo2": f"{self.tools['fo2']} -o {o} {self.mnt}",
            "unionfs-fuse": "unionfs-fuse -o cow "
                            + f"{self.upper}=RW:" + ":".join(f"{l}=RO" for l in lowers(self.fx)) + f" {self.mnt}",
            "unionfs": f"{self.tools['unionfs']} -o {o} {self.mnt}",
            "unionfs-nouring": f"{self.tools['unionfs']} -o nouring,{o} {self.mnt}",
            "unionfs-nopt": f"{self.tools['unionfs']} -o nopassthrough,{o} {self.mnt}",
            "unionfs-uring": f"{self.tools['unionfs']} -o uring,{o} {self.mnt}",
            "unionfs-noprefetch": f"{self.tools['unionfs']} -o noprefetch,{o} {self.mnt}",
            "unionfs-volatile": f"{self.tools['unionfs']} -o volatile,{o} {self.mnt}",
            "unionfs-base": f"{self.tools['base']} -o {o} {self.mnt}",
            "unionfs-base-nopt": f"{self.tools['base']} -o nopassthrough,{o} {self.mnt}",
            "unionfs-watch": f"{self.tools['unionfs']} -o watch,{o} {self.mnt}",
            "kernel-mc": f"mount -t overlay overlay -o {o},redirect_dir=on,metacopy=on {self.mnt}",
            # (unionfs's own form: the fuse-overlayfs form ignores the engines' metacopy=on)
            "unionfs-mc": f"{self.tools['unionfs']} mount -o metacopy=on --lower {lw} --upper {self.upper} "
                          f"--work {self.work} {self.mnt}",
        }[s]
        sh(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            if os.path.ismount(self.mnt):
                break
            time.sleep(0.02)
        else:
            raise RuntimeError(f"{s}: mount did not appear")
        self.pid = self.find_daemon()
        return self

    def find_daemon(self):
        name = DAEMONS.get(self.system)
        if not name:
            return None
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    args = f.read().split(b"\0")
            except OSError:
                continue
            if args and os.path.basename(args[0]).decode(errors="replace") == name \
                    and self.mnt.encode() in args:
                return int(p)
        return None

    def rss_kib(self):
        if not self.pid:
            return None
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def __exit__(self, *exc):
        if self.system == "ext4":
            # Undo the one in-place change (the append shares data with the pristine copy).
            big = os.path.join(self.tools["ext4-scratch"], "data", "big256m")
            if os.path.getsize(big) != MID:
                os.truncate(big, MID)
            shutil.rmtree(self.mnt, ignore_errors=True)
            return False
        for _ in range(50):
            if sh(f"umount {self.mnt}", check=False, stderr=subprocess.DEVNULL).returncode == 0:
                break
            time.sleep(0.1)
        else:
            sh(f"umount -l {self.mnt}", check=False)
        if self.pid:
            for _ in range(100):
                if not os.path.exists(f"/proc/{self.pid}"):
                    break
                time.sleep(0.05)
        return False


# ---------------------------------------------------------------- workloads

def lookups_beside_copy_up(m, fx, n=200):
    """The time `n` lookups of names no one looked up yet take while a 1 GiB copy-up runs
    (the copy-up is started first and waited for after, untimed): whether a slow request
    holds up quick ones (tests/copy_up.rs shows that it does not, at a gate; this measures
    how long they take)."""
    writer = subprocess.Popen(["sh", "-c", f"printf x >> {m}/data/big1g"])
    time.sleep(0.05)
    names = sorted(os.listdir(os.path.join(m, "src")))
    t = time.perf_counter()
    done = 0
    for d in names:
        for e in os.scandir(os.path.join(m, "src", d)):
            os.lstat(e.path)
            done += 1
            if done >= n:
                break
        if done >= n:
            break
    took = (time.perf_counter() - t) * 1000
    writer.wait()
    return took


def watch_latency(m, fx, tries=20):
    """With live layers (`-o watch`): the median time from a file's creation in the top lower
    layer's directory to its name in the mount, of `tries` files, each looked up (and found
    missing) just before it is made."""
    top = lowers(fx)[0]
    seen = []
    for i in range(tries):
        name = f"watch-probe-{os.getpid()}-{i}"
        # Looked up first: the kernel caches the name's absence, which only the watch undoes.
        if os.path.exists(os.path.join(m, "src", name)):
            raise RuntimeError(f"{name} exists before it is made")
        t = time.perf_counter()
        with open(os.path.join(top, "src", name), "w") as f:
            f.write("x")
        deadline = t + 5
        while not os.path.exists(os.path.join(m, "src", name)):
            if time.perf_counter() > deadline:
                os.unlink(os.path.join(top, "src", name))
                raise RuntimeError("a file made in a lower layer did not show in 5 s")
            time.sleep(0.0002)
        seen.append((time.perf_counter() - t) * 1000)
        os.unlink(os.path.join(top, "src", name))
    return statistics.median(seen)


def create_files(m, n):
    d = os.path.join(m, "created")
    os.mkdir(d)
    for i in range(n):
        with open(os.path.join(d, f"f{i:05}"), "wb") as f:
            f.write(b"x" * 100)


# name -> (kind, command or callable); kind "cold": fresh mount + dropped caches each run,
# "warm": one mount, one priming run, then the timed runs; "write": fresh mount each run.
WORKLOADS = [
    ("find cold", "cold", "find {m} >/dev/null"),
    ("find warm", "warm", "find {m} >/dev/null"),
    ("ls -lR cold", "cold", "ls -lR {m} >/dev/null"),
    ("ls -lR warm", "warm", "ls -lR {m} >/dev/null"),
    ("read tree", "cold", "find {m}/src -type f -print0 | xargs -0 cat >/dev/null"),
    # The same on one mount that read it before: what a second start of a container pays
    # (without passthrough the data can stay in the mount's page cache, needing no READ).
    ("read tree warm", "warm", "find {m}/src -type f -print0 | xargs -0 cat >/dev/null"),
    ("read 1G cold", "cold", "dd if={m}/data/big1g of=/dev/null bs=1M status=none"),
    ("read 1G warm", "warm", "dd if={m}/data/big1g of=/dev/null bs=1M status=none"),
    ("write 1G+fsync", "write", "dd if=/dev/zero of={m}/out bs=1M count=1024 conv=fsync status=none"),
    ("copy-up 256M", "cold", "printf x >> {m}/data/big256m"),
    ("create 5k", "write", lambda m: create_files(m, 5000)),
    ("untar", "write", "mkdir {m}/untar && tar -C {m}/untar -xf {fx}/untar.tar"),
    ("rm -rf subtree", "write", "rm -rf {m}/src/m05"),
    ("fio 4k randread", "cold",
     "fio --name=rr --filename={m}/data/big256m --readonly --rw=randread --bs=4k --io_size=32m "
     "--ioengine=psync --invalidate=1 --randrepeat=1 --output=/dev/null"),
    ("parallel ls+read", "cold",
     "ls -lR {m} >/dev/null & dd if={m}/data/big1g of=/dev/null bs=1M status=none & wait"),
    # 1.25 GiB in two files plus the tree's metadata-only changes: full copy-ups everywhere
    # but with metadata-only copy-up (kernel and unionfs with metacopy=on).
    ("chown -R data", "write", "chown -R 1234:1234 {m}/data"),
    # Latencies (the callable returns its own measure, in ms).
    ("200 lookups beside a 1G copy-up", "cold", lookups_beside_copy_up),
    ("watch: lower change shown", "cold", watch_latency),
]
# Workloads only some systems can run: live layers are unionfs's `-o watch`.
ONLY_ON = {"watch: lower change shown": {"unionfs-watch"}}


def timed(cmd, m, fx):
    t = time.perf_counter()
    if callable(cmd):
        took = cmd(m, fx) if cmd in (lookups_beside_copy_up, watch_latency) else cmd(m)
        if took is not None:
            return took
    else:
        sh(cmd.format(m=m, fx=fx), stdout=subprocess.DEVNULL)
    return (time.perf_counter() - t) * 1000


def measure(systems, base, fx, tools, reps, only):
    """Every workload on every system, the systems interleaved run by run (so a slow spell
    of the machine hits them alike); returns the median per system and workload."""
    res = {sy: {} for sy in systems}
    for name, kind, cmd in WORKLOADS:
        if only and name not in only:
            continue
        on = [sy for sy in systems if sy in ONLY_ON.get(name, systems)]
        if not on:
            continue
        systems_all, systems = systems, on
        runs = {sy: [] for sy in systems}
        failed = set()
        mounts = {}
        try:
            if kind == "warm":
                for sy in systems:
                    try:
                        mounts[sy] = Mount(sy, base, fx, tools[sy]).__enter__()
                        timed(cmd, mounts[sy].mnt, fx)
                    except (subprocess.CalledProcessError, OSError, RuntimeError) as e:
                        log(f"  {sy:13} {name:18} failed: {e}")
                        failed.add(sy)
            for _ in range(reps):
                for sy in systems:
                    if sy in failed:
                        continue
                    try:
                        if kind == "warm":
                            runs[sy].append(timed(cmd, mounts[sy].mnt, fx))
                        else:
                            with Mount(sy, base, fx, tools[sy]) as mt:
                                cold_start(fx)
                                runs[sy].append(timed(cmd, mt.mnt, fx))
                    except (subprocess.CalledProcessError, OSError, RuntimeError) as e:
                        log(f"  {sy:13} {name:18} failed: {e}")
                        failed.add(sy)
        finally:
            for mt in mounts.values():
                mt.__exit__(None, None, None)
        for sy in systems:
            if sy in failed or not runs[sy]:
                continue
            res[sy][name] = statistics.median(runs[sy])
            log(f"  {sy:13} {name:18} {res[sy][name]:9.1f} ms  (runs {', '.join(f'{r:.1f}' for r in runs[sy])})")
        systems = systems_all
    return res


def memory(system, base, fx, tools):
    """Daemon RSS after all the read and write workloads on one mount."""
    if system not in DAEMONS:
        return None
    with Mount(system, base, fx, tools) as mt:
        for name, _kind, cmd in WORKLOADS:
            if name.startswith("parallel") or system not in ONLY_ON.get(name, {system}):
                continue
            timed(cmd, mt.mnt, fx)
        return mt.rss_kib()


# ---------------------------------------------------------------- report

def fmt_ms(v):
    return "—" if v is None else (f"{v:.0f}" if v >= 10 else f"{v:.1f}")


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def fmt_r(r):
    return "—" if r is None else f"{r:.2f}×"


def report(results, rss, systems, meta):
    names = [w[0] for w in WORKLOADS if any(w[0] in results.get(s, {}) for s in systems)]
    head = "| workload | " + " | ".join(LABEL[s] for s in systems)
    cols = []
    if "unionfs" in systems:
        for ref in ("kernel", "fo1", "fo2"):
            if ref in systems:
                cols.append(ref)
                head += f" | unionfs / {LABEL[ref]}"
    lines = [f"Run {meta['date']} on {meta['machine']}; median of {meta['reps']} runs, times in ms.", "",
             head + " |", "|" + "---|" * (1 + len(systems) + len(cols))]
    for n in names:
        row = [n] + [fmt_ms(results.get(s, {}).get(n)) for s in systems]
        u = results.get("unionfs", {}).get(n)
        row += [fmt_r(ratio(u, results.get(r, {}).get(n))) for r in cols]
        lines.append("| " + " | ".join(row) + " |")
    if any(v is not None for v in rss.values()):
        row = ["daemon RSS after all workloads (MiB)"] + [
            "—" if rss.get(s) is None else f"{rss[s] / 1024:.1f}" for s in systems] + ["" for _ in cols]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def chart(results, systems, path):
    """Grouped horizontal bars: each system's time over kernel overlayfs, log scale."""
    import math
    names = [w[0] for w in WORKLOADS if w[0] in results.get("kernel", {})]
    shown = [s for s in systems if s != "kernel" and s in results]
    colors = {"ext4": "#999999", "fo1": "#e8a33d", "fo2": "#c75d2c", "unionfs-fuse": "#8e6bb8",
              "unionfs": "#2a7ab9", "unionfs-nouring": "#41b6c4", "unionfs-nopt": "#7fb3db", "kernel-mc": "#555555", "unionfs-mc": "#1d4f7a", "unionfs-uring": "#9ecae1",
              "unionfs-noprefetch": "#6baed6", "unionfs-volatile": "#3f007d",
              "unionfs-base": "#bbbbbb", "unionfs-base-nopt": "#dddddd"}
    bar, gap, left, width = 9, 10, 150, 560
    lo, hi = math.log10(0.25), math.log10(40)
    x = lambda r: left + (math.log10(min(max(r, 0.25), 40)) - lo) / (hi - lo) * width
    height = 60 + len(names) * (len(shown) * bar + gap) + 20 * len(shown)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 40}" height="{height}" '
           'font-family="sans-serif" font-size="11">',
           f'<text x="{left}" y="16" font-size="13">Time relative to kernel overlayfs (log scale; lower is better)</text>']
    for t in (0.25, 0.5, 1, 2, 4, 10, 20, 40):
        out.append(f'<line x1="{x(t):.1f}" y1="28" x2="{x(t):.1f}" y2="{height - 20 * len(shown) - 10}" '
                   f'stroke="{"#000" if t == 1 else "#ddd"}"/>')
        out.append(f'<text x="{x(t):.1f}" y="26" text-anchor="middle">{t:g}×</text>')
    y = 36
    for n in names:
        out.append(f'<text x="{left - 6}" y="{y + len(shown) * bar / 2 + 4:.1f}" text-anchor="end">{n}</text>')
        k = results["kernel"][n]
        for s in shown:
            v = results[s].get(n)
            if v is not None and k:
                r = v / k
                x0, x1 = sorted((x(1), x(r)))
                out.append(f'<rect x="{x0:.1f}" y="{y}" width="{max(x1 - x0, 1):.1f}" height="{bar - 1}" '
                           f'fill="{colors.get(s, "#333")}"><title>{LABEL[s]}: {r:.2f}×</title></rect>')
            y += bar
        y += gap
    y += 10
    for s in shown:
        out.append(f'<rect x="{left}" y="{y - 9}" width="10" height="10" fill="{colors.get(s, "#333")}"/>')
        out.append(f'<text x="{left + 16}" y="{y}">{LABEL[s]}</text>')
        y += 20
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def containers(unionfs, n):
    """The many-containers row: scripts/bench-containers.sh's table (markdown), or a line
    saying it failed."""
    here = os.path.dirname(os.path.abspath(__file__))
    log(f"bench: {n} containers of one image (scripts/bench-containers.sh)")
    env = dict(os.environ, N=str(n), MIB="200", UNIONFS=unionfs)
    r = subprocess.run([os.path.join(here, "bench-containers.sh")], env=env, stdout=subprocess.PIPE, text=True)
    if r.returncode != 0:
        log(f"bench: bench-containers.sh failed (exit {r.returncode})")
        return f"The many-containers run failed (exit {r.returncode}).\n"
    return r.stdout.strip() + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default=os.environ.get("UNIONFS_BENCH_DIR", "/var/tmp/unionfs-bench"))
    ap.add_argument("--systems", default=",".join(s for s in SYSTEMS if s not in EXTRA))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated workload names")
    ap.add_argument("--unionfs", required=True)
    ap.add_argument("--fo2", default="")
    ap.add_argument("--base", default="", help="another unionfs binary, measured as unionfs-base")
    ap.add_argument("--out", default="", help="also copy results.md and bench.svg here")
    ap.add_argument("--containers", type=int, default=20,
                    help="also run scripts/bench-containers.sh with this many containers "
                         "(each reading 200 MiB; 0: not; not with --only)")
    ap.add_argument("--layer-cache", choices=["cold", "warm"], default="cold",
                    help="cold runs: drop every cache (cold), or keep the layers' warm and only "
                         "the union's cold (warm: a fresh mount per run)")
    a = ap.parse_args()
    global LAYER_CACHE
    LAYER_CACHE = a.layer_cache
    if os.geteuid() != 0:
        sys.exit("bench: needs root (kernel overlayfs, drop_caches)")
    systems = [s for s in a.systems.split(",") if s]
    bad = [s for s in systems if s not in SYSTEMS]
    if bad:
        sys.exit(f"bench: unknown system {bad[0]} (one of {', '.join(SYSTEMS)})")
    if "fo2" in systems and not a.fo2:
        sys.exit("bench: fuse-overlayfs 2.0 not given (--fo2)")
    os.makedirs(a.dir, exist_ok=True)
    fx = build_fixtures(a.dir)
    if {"unionfs-base", "unionfs-base-nopt"} & set(systems) and not a.base:
        sys.exit("bench: unionfs-base needs --base BINARY")
    tools = {"unionfs": a.unionfs, "fo2": a.fo2, "base": a.base}
    if "ext4" in systems:
        tools["ext4"] = ext4_pristine(a.dir, fx)
    only = [w for w in a.only.split(",") if w]
    rss = {}
    # Each system gets its own fresh ext4 for uppers and writes.
    scratches = {s: Scratch(a.dir, s) for s in systems}
    per = {}
    for s in systems:
        per[s] = dict(tools, scratch=scratches[s].fresh())
        if s == "ext4":
            per[s]["ext4-scratch"] = os.path.join(per[s]["scratch"], "merged")
            sh(f"cp -a {tools['ext4']} {per[s]['ext4-scratch']}")
    results = measure(systems, a.dir, fx, per, a.reps, only)
    if not only:
        for s in systems:
            try:
                rss[s] = memory(s, a.dir, fx, per[s])
            except (subprocess.CalledProcessError, RuntimeError, OSError) as e:
                log(f"  {s}: failed: {e}")
                rss[s] = None
            if rss[s] is not None:
                log(f"  {s:13} RSS after all workloads: {rss[s] / 1024:.1f} MiB")
    for sc in scratches.values():
        sc.close()
    uname = os.uname()
    cpus = os.cpu_count()
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) >> 20
    meta = {"date": time.strftime("%Y-%m-%d"), "reps": a.reps,
            "machine": f"{uname.sysname} {uname.release}, {cpus} CPUs, {mem} GiB RAM; layers on "
                       + subprocess.run(["findmnt", "-no", "FSTYPE", "-T", a.dir], capture_output=True,
                                        text=True).stdout.strip() + ", uppers on a fresh ext4 (loop) per system; "
                       + ("cold runs: every cache dropped" if LAYER_CACHE == "cold"
                          else "cold runs: a fresh mount, the layers' caches kept warm")}
    md = report(results, rss, systems, meta)
    ctrs = None
    if a.containers > 0 and not only:
        ctrs = containers(a.unionfs, a.containers)
        md += "\n" + ctrs
    print(md)
    with open(os.path.join(a.dir, "results.json"), "w") as f:
        json.dump({"meta": meta, "results": results, "rss_kib": rss, "containers_md": ctrs}, f, indent=1)
    with open(os.path.join(a.dir, "results.md"), "w") as f:
        f.write(md)
    if "kernel" in results:
        chart(results, systems, os.path.join(a.dir, "bench.svg"))
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        for n in ("results.md", "bench.svg", "results.json"):
            if os.path.exists(os.path.join(a.dir, n)):
                shutil.copy(os.path.join(a.dir, n), os.path.join(a.out, n))
    log(f"results in {a.dir}/results.md, chart in {a.dir}/bench.svg")


if __name__ == "__main__":
    main()
