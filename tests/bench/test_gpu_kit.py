"""bench/gpu_kit.py: the kits for a GPU node without internet. Its parts arrive in separate
calls and are installed only once all of them are there, checked by sha256; Ray's wheel loses
the files the harness never starts; versions come from constraints.txt. (The build itself
downloads from the package index; it was run by hand, see docs/speed.md.)"""
import io
import zipfile

import pytest

from bench.gpu_kit import collect, pinned, split, without


def test_parts_collected_over_calls_give_back_the_archive(tmp_path):
    archive = tmp_path / "evaluate.tar"
    archive.write_bytes(bytes(range(256)) * 40 + b"tail")         # 10,244 bytes
    manifest = split(archive, tmp_path / "kit", part_bytes=4096)
    assert manifest["parts"] == ["part-01", "part-02", "part-03"]
    store = tmp_path / "store"
    for names, complete in ((["part-02"], False), (["part-01", "part-03"], True)):    # two calls
        carried = tmp_path / "carried"
        carried.mkdir()
        for name in names + ["manifest.json"]:
            (carried / name).write_bytes((tmp_path / "kit" / name).read_bytes())
        result = collect(carried, store)
        assert (result is not None) == complete
        for name in names + ["manifest.json"]:
            (carried / name).unlink()
        carried.rmdir()
    assert result.read_bytes() == archive.read_bytes()


def test_a_part_from_another_build_is_refused(tmp_path):
    archive = tmp_path / "evaluate.tar"
    archive.write_bytes(b"x" * 5000)
    split(archive, tmp_path / "kit", part_bytes=4096)
    (tmp_path / "kit" / "part-02").write_bytes(b"y" * 904)
    with pytest.raises(SystemExit, match="do not add up to its sha256"):
        collect(tmp_path / "kit", tmp_path / "store")
    assert not (tmp_path / "store" / "evaluate.tar").exists()


def test_ray_wheel_without_its_unused_parts(tmp_path):
    wheel = tmp_path / "ray-1.0-py3-none-any.whl"
    record = "ray/__init__.py,sha256=a,1\nray/jars/ray_dist.jar,sha256=b,2\nray/dashboard/client/build/x.js,sha256=c,3\n"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("ray/__init__.py", "")
        z.writestr("ray/jars/ray_dist.jar", b"\0" * 100)
        z.writestr("ray/dashboard/client/build/x.js", "")
        z.writestr("ray/dashboard/modules.py", "")
        z.writestr("ray-1.0.dist-info/RECORD", record)
    without(wheel, ("ray/jars/", "ray/dashboard/client/build/"))
    with zipfile.ZipFile(wheel) as z:
        assert sorted(z.namelist()) == ["ray-1.0.dist-info/RECORD", "ray/__init__.py", "ray/dashboard/modules.py"]
        assert io.TextIOWrapper(z.open("ray-1.0.dist-info/RECORD")).read() == "ray/__init__.py,sha256=a,1\n"


def test_versions_come_from_the_constraints(tmp_path):
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("# tested set\nPyDantic_Core==2.50.5\nray==2.60.0 ; python_version >= '3.10'\n")
    assert pinned(("pydantic-core", "ray"), constraints) == ["pydantic-core==2.50.5", "ray==2.60.0"]
    with pytest.raises(SystemExit, match="constraints.txt: no pinned version of lpips"):
        pinned(("ray", "lpips"), constraints)
