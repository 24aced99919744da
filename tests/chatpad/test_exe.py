"""The PyInstaller one-file executable: built windowed (no console on Windows) with an
icon and a version resource, and it runs headless (what CI does).

The tests marked ``exe`` build it and run it: ``make exe-check`` (which ``.ci/run`` calls)
builds it once with ``make exe`` and points them at ``dist/`` through ``CHATPAD_EXE`` and
``CHATPAD_EXE_WORKPATH``; run alone, they build it into a temporary folder. ``make test``
leaves them out, so CI builds it once. The others read the spec and the icon: quick.
"""

from __future__ import annotations

import ast
import os
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

import chatpad

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "chatpad.spec"
ASSETS = ROOT / "chatpad" / "assets"
PYINSTALLER = Path(sys.executable).parent / "pyinstaller"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

F = TypeVar("F", bound=Callable[..., None])


def needs_build(test: F) -> F:
    """Marks a test that runs the executable: ``exe`` (make exe-check runs those)."""
    test = pytest.mark.exe(pytest.mark.timeout(400)(test))
    return pytest.mark.skipif(  # type: ignore[no-any-return]
        not PYINSTALLER.exists() and "CHATPAD_EXE" not in os.environ,
        reason="pyinstaller is not installed (dev extra)")(test)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(the executable, PyInstaller's work folder): given by make exe-check, or built."""
    if "CHATPAD_EXE" in os.environ:
        yield Path(os.environ["CHATPAD_EXE"]), Path(os.environ["CHATPAD_EXE_WORKPATH"])
        return
    tmp = tmp_path_factory.mktemp("exe")
    subprocess.run(
        [str(PYINSTALLER), "--noconfirm", "--distpath", str(tmp / "dist"),
         "--workpath", str(tmp / "build"), str(SPEC)],
        cwd=ROOT, check=True, capture_output=True, timeout=380,
    )
    yield tmp / "dist" / ("chatpad.exe" if os.name == "nt" else "chatpad"), tmp / "build"


def run(exe: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SDL_VIDEODRIVER="dummy", SDL_AUDIODRIVER="dummy",
               CHATPAD_HOME=str(home))
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120,
                          env=env)


@needs_build
def test_version_prints_chatpad_and_its_version(built: tuple[Path, Path],
                                                tmp_path: Path) -> None:
    exe, _ = built
    result = run(exe, tmp_path / "home", "--version", "--report", str(tmp_path / "v.txt"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"chatpad {chatpad.__version__}\n"
    assert (tmp_path / "v.txt").read_text("utf-8") == result.stdout


@needs_build
def test_self_test_passes_and_writes_its_report(built: tuple[Path, Path],
                                                tmp_path: Path) -> None:
    exe, _ = built
    report = tmp_path / "report.txt"
    result = run(exe, tmp_path / "home", "--self-test", "--report", str(report))
    assert result.returncode == 0, result.stderr
    assert "self-test ok" in result.stdout
    assert report.read_text("utf-8") == result.stdout
    first = result.stdout.splitlines()[0]
    assert first.startswith(f"chatpad {chatpad.__version__} self-test ok: sign-in")
    assert "one-file executable" in result.stdout
    log = (tmp_path / "home" / "chatpad.log").read_text("utf-8")
    assert first in log


@needs_build
def test_the_build_was_windowed(built: tuple[Path, Path]) -> None:
    """console=False reached PyInstaller: its record of the EXE step says so."""
    from PyInstaller.building.api import EXE
    from PyInstaller.utils.misc import load_py_data_struct

    _, workpath = built
    record = load_py_data_struct(str(workpath / "chatpad" / "EXE-00.toc"))
    fields = [name for name, _ in EXE._GUTS]
    assert record[fields.index("console")] is False
    if sys.platform == "win32":
        assert record[fields.index("icon")] and record[fields.index("versrsrc")]


def _spec_tree() -> ast.Module:
    return ast.parse(SPEC.read_text("utf-8"))


def test_spec_is_windowed_with_an_icon_and_a_version_resource() -> None:
    tree = _spec_tree()
    constants = {node.targets[0].id: node.value for node in tree.body
                 if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)}
    assert ast.literal_eval(constants["CONSOLE"]) is False
    exe = next(node.value for node in tree.body if isinstance(node, ast.Assign)
               and isinstance(node.value, ast.Call) and ast.unparse(node.value.func) == "EXE")
    keywords = {kw.arg: ast.unparse(kw.value) for kw in exe.keywords}
    assert keywords["console"] == "CONSOLE"
    assert "chatpad.ico" in keywords["icon"]
    assert keywords["version"].startswith("version_resource(VERSION)")
    shipped = ast.unparse(constants["datas"])
    assert "chatpad/assets/chatpad.png" in shipped and "chatpad/theme.json" in shipped


def test_version_resource_is_built_from_chatpad_version(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The spec's version resource, built here as on Windows. PyInstaller's module for it
    imports pefile (PyInstaller's dependency on Windows; the dev extra adds it elsewhere)
    and ``PyInstaller.compat.win32api``, which is only defined on Windows: building the
    resource does not use it, so None stands in for it elsewhere."""
    pytest.importorskip("pefile")
    from PyInstaller import compat

    if not hasattr(compat, "win32api"):
        monkeypatch.setattr(compat, "win32api", None, raising=False)
    functions = [node for node in _spec_tree().body if isinstance(node, ast.FunctionDef)
                 or (isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "COMPANY")]
    namespace: dict[str, object] = {"SPECPATH": str(ROOT), "ROOT": str(ROOT), "os": os,
                                    "ast": ast}
    exec(compile(ast.Module(body=functions, type_ignores=[]), str(SPEC), "exec"), namespace)
    version = namespace["read_version"]()  # type: ignore[operator]
    assert version == chatpad.__version__
    resource = namespace["version_resource"](version)  # type: ignore[operator]
    raw = resource.toRaw()
    numbers = [int(part) for part in version.split(".")] + [0]
    assert resource.ffi.fileVersionMS == (numbers[0] << 16) | numbers[1]
    assert resource.ffi.fileVersionLS == (numbers[2] << 16) | numbers[3]
    assert resource.ffi.productVersionMS == resource.ffi.fileVersionMS
    for text in ("chatpad", version, "chatpad.exe", "chatpad chat client", "Copyright"):
        assert text.encode("utf-16-le") in raw


def test_icon_ico_holds_the_png_at_every_windows_size() -> None:
    ico = (ASSETS / "chatpad.ico").read_bytes()
    reserved, kind, count = struct.unpack_from("<HHH", ico)
    assert (reserved, kind) == (0, 1)
    sizes = []
    for index in range(count):
        width, height, _, _, planes, bits, length, offset = struct.unpack_from(
            "<BBBBHHII", ico, 6 + 16 * index)
        data = ico[offset:offset + length]
        assert data.startswith(PNG_SIGNATURE) and len(data) == length
        assert width == height and (planes, bits) == (1, 32)
        side = struct.unpack(">I", data[16:20])[0]  # the PNG's own IHDR width
        assert side == (width or 256)
        sizes.append(side)
        if side == 256:
            assert data == (ASSETS / "chatpad.png").read_bytes()
    assert {16, 32, 48, 256} <= set(sizes)
