"""bench/gpu_kit.py: the kits for a GPU node without internet. Its parts arrive in separate
calls and are installed only once all of them are there, checked by sha256; Ray's wheel loses
the files the harness never starts; versions come from constraints.txt. (The build itself
downloads from the package index; it was run by hand, see docs/speed.md.)"""
import io
import zipfile

import pytest

from bench.gpu_kit import CALL_BYTES, SLACK, collect, largest_part, pinned, plan_calls, split, travelling_bytes, without


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


MIB = 2**20


def test_the_calls_carry_each_part_and_the_step_kit_last_each_within_a_call():
    tree = int(13.4 * MIB)
    size = largest_part(tree)
    kit = int(130 * MIB)                                   # the evaluate tar: two whole parts and the rest
    parts = {"part-01": size, "part-02": size, "part-03": kit - 2 * size}
    calls = plan_calls(tree, parts, step=int(11 * MIB))
    assert [c["carry"] for c in calls] == [
        [".whl/evaluate/part-01", ".whl/evaluate/manifest.json"],
        [".whl/evaluate/part-02", ".whl/evaluate/manifest.json"],
        [".whl/evaluate/part-03", ".whl/evaluate/manifest.json", ".whl/step"]]
    assert all(c["bytes"] + SLACK <= CALL_BYTES for c in calls)
    assert calls[0]["bytes"] + SLACK == CALL_BYTES        # a whole part fills its call, the slack kept
    assert [c["command"] for c in calls[:2]] == ["python bench/gpu_kit.py install"] * 2
    assert calls[-1]["command"] == "OUT_DIR=$OUT bash bench/gpu_all.sh" and calls[-1]["timeout_s"] == 600


def test_a_step_kit_that_fits_no_part_s_call_gets_a_call_of_its_own_and_goes_last():
    tree = int(20 * MIB)
    size = largest_part(tree)
    calls = plan_calls(tree, {"part-01": size, "part-02": size - MIB}, step=int(11 * MIB))
    assert [c["carry"][0] for c in calls] == [".whl/evaluate/part-01", ".whl/evaluate/part-02", ".whl/step"]
    assert calls[-1]["command"].endswith("bash bench/gpu_all.sh")


def test_a_tree_or_a_part_too_large_for_a_call_is_refused_before_any_call():
    with pytest.raises(SystemExit, match="working tree that travels with every call is 60.0 MiB"):
        largest_part(60 * MIB)
    with pytest.raises(SystemExit, match="part-01.*over the 64 MiB a call carries; build with a smaller --part-mib"):
        plan_calls(int(13 * MIB), {"part-01": 60 * MIB}, step=MIB)


def test_what_travels_is_the_tracked_files_and_the_untracked_ones_git_does_not_ignore(tmp_path):
    import subprocess

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("ignored/\n")            # 9 bytes
    (tmp_path / "tracked.txt").write_bytes(b"x" * 100)
    subprocess.run(["git", "add", "."], cwd=tmp_path, check=True)
    (tmp_path / "untracked.txt").write_bytes(b"y" * 30)
    (tmp_path / "ignored").mkdir()
    (tmp_path / "ignored" / "kit").write_bytes(b"z" * 1000)
    assert travelling_bytes(tmp_path) == 9 + 100 + 30
