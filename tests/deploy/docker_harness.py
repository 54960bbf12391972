"""The Docker side of the deployment tests: find a working engine (or say why there is none), get
the image's base (`python:3.11-slim`, or a stand-in built with `debootstrap` where no registry is
reachable), build the project's image from a copy of the checkout, and turn a `compose.yaml`
service into the `docker run` arguments Compose would use (this machine has no Compose)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BASE = "python:3.11-slim"                               # the Dockerfile's default BASE_IMAGE
STANDIN = "stockstock-standin:bookworm-python3.11"      # same Debian release and Python minor
ROOTFS = "stockstock-standin-rootfs:bookworm"
# the stand-in's root file system is kept between CI runs, inside the checkout only (git-ignored)
CACHE = Path(os.environ.get("STOCKSTOCK_DEPLOY_CACHE", REPO / ".ci/cache"))
ROOTFS_TAR = CACHE / "bookworm-python3.11-rootfs.tar"
# Debian's python3.11 with the venv module (python3.11-venv needs the distutils that
# python3-distutils provides; debootstrap does not resolve that virtual package by itself)
STANDIN_PACKAGES = "python3.11,python3.11-venv,python3-distutils,ca-certificates"


class Timings(dict):
    "Seconds per step, in the order the steps ran."
    def step(self, name: str, started: float) -> None: self[name] = time.monotonic() - started
    def lines(self, title: str) -> list[str]:
        return [f"{title}: " + ", ".join(f"{k} {v:.0f} s" for k, v in self.items())]


def docker(*args: str, timeout: float = 120, check: bool = True,
           **kw) -> subprocess.CompletedProcess:
    "Run the docker CLI (DOCKER_HOST decides which engine); a failure names the command."
    r = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} ... exited {r.returncode}:\n"
                             f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def engine_problem() -> str | None:
    "Why no Docker engine can be used here (one line), or None when one answers."
    if shutil.which("docker") is None: return "no docker command (apt-get install docker.io)"
    try:
        r = docker("version", "--format", "{{.Server.Version}}", check=False, timeout=20)
    except subprocess.TimeoutExpired:
        return "the Docker engine did not answer within 20 s"
    if r.returncode != 0 or not r.stdout.strip():
        lines = [x for x in (r.stderr or r.stdout).splitlines() if x.strip()]
        where = os.environ.get("DOCKER_HOST", "the default socket")
        return f"no Docker engine answers at {where}: {lines[-1] if lines else 'no answer'}"
    return None


def image_exists(tag: str) -> bool:
    return docker("image", "inspect", tag, check=False).returncode == 0


def base_image(timings: Timings) -> tuple[str | None, str]:
    "`(image, how)`: python:3.11-slim if present or pullable, else the stand-in (None: why not)."
    if os.environ.get("STOCKSTOCK_BASE_IMAGE"):
        return os.environ["STOCKSTOCK_BASE_IMAGE"], "STOCKSTOCK_BASE_IMAGE"
    if image_exists(BASE): return BASE, "present"
    started = time.monotonic()
    pull = docker("pull", "-q", BASE, check=False, timeout=300)
    timings.step("pull", started)
    if pull.returncode == 0: return BASE, "pulled"
    why = (pull.stderr.strip().splitlines() or ["no answer"])[-1]
    image, problem = standin_image(timings)
    return image, problem or f"stand-in ({BASE} cannot be pulled: {why[:120]})"


def standin_image(timings: Timings) -> tuple[str | None, str | None]:
    """Debian bookworm with Debian's python3.11 (python:3.11-slim is bookworm with 3.11), plus
    what this host needs to reach the package index: its CA bundle (a TLS-intercepting proxy),
    its pip and apt network settings. Only the stand-in carries them, never the project's image."""
    if not image_exists(ROOTFS):
        tar, problem = rootfs_tar(timings)
        if tar is None: return None, problem
        started = time.monotonic()
        docker("import", "--change", "ENV LANG=C.UTF-8", str(tar), ROOTFS, timeout=300)
        timings.step("import", started)
    started = time.monotonic()
    context = CACHE / "standin-context"
    shutil.rmtree(context, ignore_errors=True)
    for src, dst in _host_network_files():
        (context / dst.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, context / dst.lstrip("/"))
    (context / "Dockerfile").write_text(f'FROM {ROOTFS}\nCOPY etc/ /etc/\nCOPY usr/ /usr/\n'
                                        'CMD ["python3.11"]\n')
    docker("build", "-q", "-t", STANDIN, str(context), timeout=300)
    shutil.rmtree(context, ignore_errors=True)
    timings.step("stand-in layer", started)
    return STANDIN, None


def rootfs_tar(timings: Timings) -> tuple[Path | None, str | None]:
    "The stand-in's root file system (cached), built by debootstrap if missing; or why not."
    if not ROOTFS_TAR.exists():
        if os.geteuid() != 0: return None, "the stand-in base needs root (debootstrap)"
        if shutil.which("debootstrap") is None:
            return None, "the stand-in base needs debootstrap (apt-get install debootstrap)"
        started = time.monotonic()
        _debootstrap(ROOTFS_TAR)
        timings.step("debootstrap", started)
    return ROOTFS_TAR, None


def _debootstrap(tar: Path) -> None:
    "Build the bookworm root file system into `tar` (Debian's default mirror, apt's own setup)."
    root = CACHE / "bookworm-rootfs"
    shutil.rmtree(root, ignore_errors=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["debootstrap", "--variant=minbase", f"--include={STANDIN_PACKAGES}",
                        "bookworm", str(root)], capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        log = root / "debootstrap/debootstrap.log"
        detail = log.read_text()[-2000:] if log.exists() else r.stderr[-2000:]
        raise AssertionError(f"debootstrap failed ({r.returncode}):\n{detail}")
    (root / "etc/apt/sources.list").unlink(missing_ok=True)    # the host's sources come instead
    for junk in ("var/lib/apt/lists", "var/cache/apt/archives"):
        for p in (root / junk).glob("*"):
            if p.is_file(): p.unlink()
    subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-cf", f"{tar}.part", "."],
                   check=True, timeout=300)
    os.replace(f"{tar}.part", tar)
    shutil.rmtree(root)


def _host_network_files() -> list[tuple[Path, str]]:
    "(host file, path in the stand-in): CA bundle, pip's and apt's network settings, apt sources."
    files = []
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if bundle.exists():   # kept by update-ca-certificates if the Dockerfile's apt step runs it
        files += [(bundle, str(bundle)),
                  (bundle, "/usr/local/share/ca-certificates/host-ca-bundle.crt")]
    if Path("/etc/pip.conf").exists(): files.append((Path("/etc/pip.conf"), "/etc/pip.conf"))
    sources = [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*.sources"),
               *Path("/etc/apt/sources.list.d").glob("*.list")]
    files += [(p, str(p)) for p in sources if p.exists() and p.read_text().strip()]
    files += [(p, str(p)) for p in sorted(Path("/etc/apt/apt.conf.d").glob("*"))
              if p.is_file() and "Acquire::" in p.read_text(errors="replace")]
    return files


def build_context(dest: Path, plant: Mapping[str, str] = {}) -> Path:
    """A copy of the checkout as a user has it: the files git tracks or would track (what
    `git clone` plus your edits give), plus `plant` (path -> text: a `.env`, a database...)."""
    listed = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if not src.is_file(): continue                      # deleted in the work tree
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
    for rel, text in plant.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_text(text)
    return dest


def image_uid() -> int:
    "The UID build argument: yours, as the README says, or 1000 when you are root (CI)."
    return os.getuid() or 1000


# ---- compose.yaml -> docker run ------------------------------------------------------------
_VAR = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def dotenv(path: Path) -> dict[str, str]:
    "KEY=VALUE lines of an env file (comments and blank lines skipped), as Compose reads it."
    values = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#") and "=" in line:
                key, value = line.split("=", 1)
                values[key.strip()] = value.strip()
    return values


def interpolate(value, env: Mapping[str, str]):
    "Compose's `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`."
    if isinstance(value, dict): return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list): return [interpolate(v, env) for v in value]
    if not isinstance(value, str): return value
    def one(m: re.Match) -> str:
        name, op, arg = m["name"], m["op"], m["arg"]
        val = env.get(name)
        unset = val is None or (op is not None and op.startswith(":") and val == "")
        if op and op.endswith("?") and unset:
            raise ValueError(f"required variable {name} is missing a value: {arg}")
        if op and op.endswith("-") and unset: return arg
        return val or ""
    return _VAR.sub(one, value)


def compose_service(project: Path, name: str) -> dict:
    "Service `name` of the project's compose.yaml, interpolated from its .env and the environment."
    import yaml
    spec = yaml.safe_load((project / "compose.yaml").read_text())   # merges `<<: *image`
    return interpolate(spec["services"][name], {**dotenv(project / ".env"), **os.environ})


def run_args(service: dict, project: Path, image: str, *, detach: bool, name: str | None = None,
             command: list[str] | None = None, host_network: bool = False,
             host_ports: Mapping[int, int] = {}, env: Mapping[str, str] = {}) -> list[str]:
    """`docker run` arguments for a compose service, as `docker compose up -d` (`detach`) or
    `docker compose run --rm` would start it. Test-only changes are explicit arguments:
    `host_network` (to reach the loopback fake Bot API), `host_ports` (container port -> free host
    port instead of the published one), `env` (extra variables)."""
    args = ["run", "-d" if detach else "--rm"]
    if name: args += ["--name", name]
    if "env_file" in service: args += ["--env-file", str(project / service["env_file"])]
    for key, value in {**service.get("environment", {}), **env}.items():
        args += ["-e", f"{key}={value}"]
    for volume in service.get("volumes", []):
        src, dst, *mode = volume.split(":")
        src = str((project / src).resolve()) if src.startswith(".") else src
        args += ["-v", ":".join([src, dst, *mode])]
    if host_network: args += ["--network", "host"]
    elif detach:                                  # `compose run` publishes no ports either
        for port in service.get("ports", []):
            ip, host, container = port.split(":")
            args += ["-p", f"{ip}:{host_ports.get(int(container), host)}:{container}"]
    if detach and "restart" in service: args += ["--restart", service["restart"]]
    if "stop_grace_period" in service:
        args += ["--stop-timeout", str(_seconds(service["stop_grace_period"]))]
    return [*args, image, *(command if command is not None else service.get("command", []))]


def _seconds(duration: str) -> int:
    "Compose durations such as `16m`, `90s`, `1m30s`."
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+)([hms])", duration)
    assert parts and "".join(a + b for a, b in parts) == duration, duration
    return sum(int(n) * units[u] for n, u in parts)


if __name__ == "__main__":      # `.ci/run` builds the cached root file system ahead, meanwhile
    timings = Timings()         # installing the project (the image test then only imports it)
    tar, problem = rootfs_tar(timings)
    print(f"stand-in root file system: {problem or tar}; " + ", ".join(
        f"{k} {v:.0f} s" for k, v in timings.items()))
