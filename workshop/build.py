"""Build the offline workshop kit: dist/labkit-workshop/ (issue 18).

    python workshop/build.py [--platforms linux,macos,windows] [--pythons 3.11,3.12] [--out DIR]

The kit holds wheels/ (the lab as a wheel and every wheel it needs, per platform and Python),
the notebooks, data/, JupyterLab's offline settings, install/start scripts and a README.txt.
data/ is a copy of labkit.zoo.data_dir() (the checkout's data/, or $LABKIT_DATA's); the lab's
wheel holds none: the kit's scripts set LABKIT_DATA to the kit's data/ folder.
Wheels come from pip's configured sources (`pip download`, through workshop/pipfor.py so that
environment markers are the target's, not this machine's): on Linux the CPU torch pinned as in
the Makefile (torch==2.13.0+cpu, on disk), on macOS and Windows the registry's torch (their
registry builds are the CPU ones). A platform whose wheels cannot be had is reported in the
summary, in the kit's PLATFORMS.txt, and by a non-zero exit status; the rest of the kit is built.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parents[1]))  # labkit, if not installed here
from pipfor import PLATFORM_TAGS  # noqa: E402

from labkit.errors import LabkitError  # noqa: E402
from labkit.zoo import data_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
LABELS = {"linux": "Linux x86_64", "macos": "macOS arm64", "windows": "Windows x86_64"}
# torch per platform: Linux takes the CPU build on disk (the registry's Linux torch is the CUDA
# build, gigabytes of it); macOS and Windows take the registry's newest torch the lab accepts.
TORCH = {"linux": "torch==2.13.0+cpu", "macos": None, "windows": None}


def log(msg: str) -> None:
    print(f"workshop: {msg}", flush=True)


def build_lab_wheel(tmp: Path) -> Path:
    """The lab as a wheel: the labkit package alone. The demo world and key layouts travel once,
    as the kit's data/ folder, which the kit's scripts name in LABKIT_DATA (labkit.zoo.data_dir).
    """
    out = tmp / "lab"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "-w", str(out), str(ROOT)], check=True)
    (wheel,) = out.glob("labkit-*.whl")
    return wheel


def constraints_for(platform: str, tmp: Path) -> Path:
    """constraints.txt with torch pinned for this platform (or left to the registry)."""
    lines = [ln for ln in (ROOT / "constraints.txt").read_text().splitlines()
             if not ln.strip().startswith("torch==")]
    if TORCH[platform]:
        lines.insert(0, TORCH[platform])
    path = tmp / f"constraints-{platform}.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def download(platform: str, python: str, lab_wheel: Path, wheels: Path, tmp: Path) -> tuple[bool, str]:
    """pip download the lab's wheels for one platform and Python into wheels/."""
    cmd = [sys.executable, str(HERE / "pipfor.py"), platform, python, "download",
           "--dest", str(wheels), "--find-links", str(lab_wheel.parent),
           "-c", str(constraints_for(platform, tmp)), str(lab_wheel)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode == 0:
        return True, ""
    why = pip_error(proc.stdout)
    if TORCH[platform] and "torch" in why:
        why += (f" (this platform takes {TORCH[platform]}, the CPU build: pip's find-links or"
                f" indexes must hold one for Python {python})")
    return False, why


def pip_error(stderr: str) -> str:
    """pip's reason in a line: its first ERROR and what it says caused the conflict."""
    lines = [ln.strip() for ln in stderr.splitlines()]
    err = [ln for ln in lines if ln.startswith("ERROR")][:1]
    if "The conflict is caused by:" in lines:
        i = lines.index("The conflict is caused by:")
        err += [ln for ln in lines[i + 1:i + 4] if ln][:2]
    if "some packages in these conflicts have no matching distributions available for your environment:" in " ".join(lines):
        i = next(i for i, ln in enumerate(lines) if ln.endswith("for your environment:"))
        err.append("no wheel of: " + ", ".join(ln for ln in lines[i + 1:i + 4] if ln and not ln.startswith(("To fix", "1."))))
    return " / ".join(err) or stderr.strip()[-300:]


def resolves(platform: str, python: str, lab_wheel: Path, wheels: Path) -> tuple[bool, str]:
    """Does the lab resolve from the kit's wheels alone for this platform and Python?"""
    cmd = [sys.executable, str(HERE / "pipfor.py"), platform, python, "install", "--dry-run",
           "--quiet", "--isolated", "--no-index", "--ignore-installed", "--find-links", str(wheels),
           "--target", str(wheels.parent / ".dry"), str(lab_wheel)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc.returncode == 0, pip_error(proc.stdout) if proc.returncode else ""


def wheel_matches(name: str, platform: str) -> bool:
    tag = name[:-4].split("-")[-1]
    return tag == "any" or any(t in tag for t in PLATFORM_TAGS[platform]) or (
        platform == "macos" and "macosx" in tag and ("arm64" in tag or "universal2" in tag)) or (
        platform == "linux" and "linux" in tag and "x86_64" in tag)


def size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--platforms", default="linux,macos,windows")
    ap.add_argument("--pythons", default="3.11,3.12")
    ap.add_argument("--out", type=Path, default=ROOT / "dist" / "labkit-workshop")
    ap.add_argument("--limit-gb", type=float, default=3.0)
    args = ap.parse_args(argv)
    platforms = [p.strip() for p in args.platforms.split(",") if p.strip()]
    pythons = [v.strip() for v in args.pythons.split(",") if v.strip()]
    unknown = [p for p in platforms if p not in PLATFORM_TAGS]
    if unknown or not platforms or not pythons:
        ap.error(f"platforms are {', '.join(PLATFORM_TAGS)}; got {args.platforms!r}")
    try:
        data = data_dir()  # the lab's data/: $LABKIT_DATA, else this checkout's
    except LabkitError as e:
        ap.error(str(e))
    start = time.time()
    kit = args.out.resolve()
    wheels = kit / "wheels"
    if kit.exists() and any(kit.iterdir()) and not (kit / "wheels").is_dir():
        ap.error(f"{kit} exists and is not a workshop kit; give --out a new or a kit's folder")
    if kit.exists():
        # A fresh kit each time: no wheels of another platform set or older versions linger
        # (pip's cache makes the downloads of a rebuild quick).
        shutil.rmtree(kit)
    wheels.mkdir(parents=True)

    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        log("building the lab's wheel")
        lab_wheel = build_lab_wheel(tmp)
        results: list[tuple[str, str, bool, str]] = []
        for platform in platforms:
            for python in pythons:
                t0 = time.time()
                log(f"downloading wheels for {LABELS[platform]}, Python {python} ...")
                ok, why = download(platform, python, lab_wheel, wheels, tmp)
                if ok:
                    ok, why = resolves(platform, python, lab_wheel, wheels)
                    why = why and f"downloaded, but does not resolve from wheels/ alone: {why}"
                results.append((platform, python, ok, why))
                log(f"  {'ok' if ok else 'MISSING'} ({time.time() - t0:.0f} s){': ' + why if why else ''}")
        shutil.copy2(lab_wheel, wheels / lab_wheel.name)
    shutil.rmtree(kit / ".dry", ignore_errors=True)

    shutil.copytree(ROOT / "notebooks", kit / "notebooks",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    shutil.copytree(data, kit / "data", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "jupyter", kit / "jupyter")
    for f in (HERE / "kit").iterdir():
        shutil.copy2(f, kit / f.name)
    for script in kit.glob("*.sh"):
        script.chmod(0o755)
    status = ["platform          python  wheels"]
    for platform, python, ok, why in results:
        status.append(f"{LABELS[platform]:<17} {python:<7} {'ready' if ok else 'MISSING: ' + why}")
    (kit / "PLATFORMS.txt").write_text("\n".join(status) + "\n")

    # Sizes: the shared files, then each platform's own wheels (pure-Python wheels are shared).
    names = [f for f in wheels.iterdir() if f.suffix == ".whl"]
    shared = sum(f.stat().st_size for f in names if f.name.endswith("-any.whl"))
    total = size(kit)
    print()
    print(f"Kit: {kit}")
    print(f"  notebooks, data, scripts      {gb(total - size(wheels))}")
    print(f"  wheels shared by all (py3-any) {gb(shared)}")
    for platform in platforms:
        own = sum(f.stat().st_size for f in names
                  if not f.name.endswith("-any.whl") and wheel_matches(f.name, platform))
        print(f"  wheels for {LABELS[platform]:<19} {gb(own)}")
    print(f"  total                         {gb(total)} (limit {args.limit_gb:g} GB)")
    print("\n".join("  " + s for s in status))
    print(f"Built in {time.time() - start:.0f} s.")
    rc = 0
    if total > args.limit_gb * 1e9:
        print(f"workshop: the kit is {gb(total)}, over the {args.limit_gb:g} GB limit", file=sys.stderr)
        rc = 1
    missing = [f"{LABELS[p]} / Python {v}" for p, v, ok, _ in results if not ok]
    if missing:
        print(f"workshop: the kit lacks wheels for: {'; '.join(missing)} (see PLATFORMS.txt); "
              "laptops of those kinds cannot install from it", file=sys.stderr)
        rc = rc or 3
    return rc


if __name__ == "__main__":
    sys.exit(main())
