"""Structure of the images and the compose file: there is no Docker engine here, so the
tests read the files and check what a build or `docker compose up` would trip over."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

from .dockerfiles import (
    copy_sources,
    dockerignore_patterns,
    final_user,
    is_copy_from_stage,
    is_ignored,
    parse_dockerfile,
    pip_install_args,
)

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
SERVICE_IMAGES = ["Dockerfile.gpu", "Dockerfile.cpu"]
ALL_IMAGES = SERVICE_IMAGES + ["Dockerfile.tool"]


def _req_name(req: str) -> str:
    return re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].strip().lower().replace("_", "-")


@pytest.fixture(scope="module")
def extras() -> dict[str, list[str]]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {k: [_req_name(r) for r in v] for k, v in meta.get("optional-dependencies", {}).items()} | {
        "": [_req_name(r) for r in meta.get("dependencies", [])]
    }


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def _installed_requirements(dockerfile: str, extras: dict[str, list[str]]) -> set[str]:
    """Every distribution a Dockerfile's pip installs name, with the project's extras expanded."""
    names: set[str] = set()
    for args in pip_install_args(parse_dockerfile(DOCKER / dockerfile)):
        for arg in args:
            m = re.fullmatch(r"\.(?:\[([^\]]*)\])?", arg.strip("'\""))
            if m:
                names.update(extras[""])
                for extra in filter(None, (m.group(1) or "").split(",")):
                    assert extra.strip() in extras, f"{dockerfile} installs unknown extra [{extra}]"
                    names.update(extras[extra.strip()])
            else:
                names.add(_req_name(arg.strip("'\"")))
    return names


@pytest.mark.parametrize("name", ALL_IMAGES)
def test_every_copy_source_exists_and_is_in_the_context(name):
    instrs = parse_dockerfile(DOCKER / name)
    ignore = dockerignore_patterns(ROOT / ".dockerignore")
    copies = [i for i in instrs if i.keyword in ("COPY", "ADD") and not is_copy_from_stage(i)]
    assert copies, f"{name} copies nothing"
    for ins in copies:
        for src in copy_sources(ins):
            assert (ROOT / src).exists(), f"{name}:{ins.line}: COPY source {src!r} does not exist"
            assert not is_ignored(src, ignore), f"{name}:{ins.line}: {src!r} is excluded by .dockerignore"


@pytest.mark.parametrize("name", ALL_IMAGES)
def test_runs_as_a_non_root_user(name):
    user = final_user(parse_dockerfile(DOCKER / name))
    assert user not in (None, "root", "0"), f"{name} runs as root"


@pytest.mark.parametrize("name", SERVICE_IMAGES)
def test_service_images_check_readiness(name):
    checks = [i for i in parse_dockerfile(DOCKER / name) if i.keyword == "HEALTHCHECK"]
    assert checks, f"{name} has no HEALTHCHECK"
    cmd = checks[-1].args
    assert "NONE" not in cmd.split()
    script = re.search(r"(/\S*healthcheck\.py)", cmd)
    if script:  # the probe is a script copied into the image: it must ask for readiness
        assert "/health/ready" in (DOCKER / "healthcheck.py").read_text()
    else:
        assert "/health/ready" in cmd


@pytest.mark.parametrize("name", SERVICE_IMAGES)
def test_service_images_never_install_torch(name, extras):
    reqs = _installed_requirements(name, extras)
    assert "onnxruntime" in reqs or "onnxruntime-gpu" in reqs, f"{name} installs no onnxruntime"
    assert not {"torch", "torchvision", "onnx", "onnxscript"} & reqs, f"{name} installs the tool's stack: {reqs}"


def test_gpu_image_installs_only_the_gpu_runtime(extras):
    reqs = _installed_requirements("Dockerfile.gpu", extras)
    # both wheels write the same `onnxruntime` package: the CPU one would shadow CUDA
    assert "onnxruntime-gpu" in reqs and "onnxruntime" not in reqs


# The CUDA major each onnxruntime-gpu release on PyPI is built for, read from each wheel's `cuda`
# extra (nvidia-cuda-runtime-cu12~=12.0 up to 1.26, nvidia-cuda-runtime~=13.0 from 1.27). A
# release missing here is unknown: the pins must not admit it until it is added.
ORT_GPU_CUDA = {
    **{v: 12 for v in ("1.19.0", "1.19.2", "1.20.0", "1.20.2", "1.21.0", "1.21.1", "1.22.0", "1.23.0", "1.23.2",
                       "1.24.1", "1.24.4", "1.25.0", "1.25.1", "1.26.0")},
    **{v: 13 for v in ("1.27.0", "1.28.0", "1.29.0", "1.30.0", "1.31.0", "1.31.1")},
}


def _gpu_image_cuda_major() -> int:
    base = [i.args for i in parse_dockerfile(DOCKER / "Dockerfile.gpu") if i.keyword == "FROM"][-1]
    m = re.fullmatch(r"nvidia/cuda:(\d+)\.\d+(?:\.\d+)?-cudnn-runtime-ubuntu\d+\.\d+(?: AS \w+)?", base, re.I)
    assert m, f"GPU base image {base!r} is not an nvidia/cuda cudnn-runtime tag"
    return int(m.group(1))


def test_gpu_image_pins_an_onnxruntime_gpu_built_for_its_cuda():
    pin = [i.args for i in parse_dockerfile(DOCKER / "Dockerfile.gpu") if i.keyword == "ARG" and i.args.startswith("ORT_GPU_VERSION=")]
    assert pin, "onnxruntime-gpu is not pinned (ARG ORT_GPU_VERSION)"
    version = pin[0].split("=", 1)[1]
    assert version in ORT_GPU_CUDA, f"onnxruntime-gpu {version}: CUDA major unknown, add it to ORT_GPU_CUDA"
    assert ORT_GPU_CUDA[version] == _gpu_image_cuda_major()


def test_pyproject_onnxruntime_gpu_range_admits_only_builds_for_the_image_cuda():
    from packaging.requirements import Requirement

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (req,) = [Requirement(r) for r in meta["optional-dependencies"]["service-gpu"] if r.startswith("onnxruntime-gpu")]
    admitted = [v for v in ORT_GPU_CUDA if v in req.specifier]
    assert admitted, f"{req} admits no known release"
    cuda = _gpu_image_cuda_major()
    wrong = [v for v in admitted if ORT_GPU_CUDA[v] != cuda]
    assert not wrong, f"{req} admits {wrong}, built for another CUDA major than the image's {cuda}"
    newest = max(ORT_GPU_CUDA, key=lambda v: tuple(map(int, v.split("."))))
    major, minor = map(int, newest.split(".")[:2])
    assert f"{major}.{minor + 1}.0" not in req.specifier and "2.0.0" not in req.specifier, (
        f"{req} admits releases whose CUDA major is not known yet: give it an upper bound")
    docker_pin = [i.args for i in parse_dockerfile(DOCKER / "Dockerfile.gpu") if i.keyword == "ARG"
                  and i.args.startswith("ORT_GPU_VERSION=")][0].split("=", 1)[1]
    assert docker_pin in req.specifier, f"the GPU image's onnxruntime-gpu {docker_pin} is outside {req}"


def test_tool_image_builds_the_demo_into_the_volume(extras):
    instrs = parse_dockerfile(DOCKER / "Dockerfile.tool")
    reqs = _installed_requirements("Dockerfile.tool", extras)
    assert "torch" in reqs
    torch_installs = [a for a in pip_install_args(instrs) if any(_req_name(x) == "torch" for x in a)]
    text = (DOCKER / "Dockerfile.tool").read_text()
    assert torch_installs and "download.pytorch.org/whl/cpu" in text, "torch must come from the CPU index"
    entry = " ".join(i.args for i in instrs if i.keyword in ("ENTRYPOINT", "CMD"))
    assert "sinder" in entry and "build" in entry and "/models" in entry


def test_compose_has_the_three_services(compose):
    assert {"builder", "service", "prometheus"} <= set(compose["services"])


def test_compose_builds_from_existing_dockerfiles(compose):
    for name in ("builder", "service"):
        build = compose["services"][name]["build"]
        context = (DOCKER / build["context"]).resolve()
        dockerfile = re.sub(r"\$\{[^:}]+:-([^}]+)\}", r"\1", build["dockerfile"])  # ${VAR:-default}
        assert (context / dockerfile).is_file(), f"{name}: {dockerfile} not found in {context}"


def test_service_reserves_an_nvidia_gpu(compose):
    devices = compose["services"]["service"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)


def test_service_waits_for_the_builder_to_succeed(compose):
    dep = compose["services"]["service"]["depends_on"]
    assert dep["builder"]["condition"] == "service_completed_successfully"
    assert compose["services"]["builder"].get("restart", "no") == "no"


def test_service_healthcheck_probes_readiness(compose):
    hc = compose["services"]["service"]["healthcheck"]
    test = hc["test"] if isinstance(hc["test"], str) else " ".join(hc["test"])
    assert "/health/ready" in test or ("healthcheck.py" in test and "/health/ready" in (DOCKER / "healthcheck.py").read_text())
    assert "start_period" in hc and "retries" in hc


def _mounts(service: dict) -> dict[str, str]:
    """target → 'source[:mode]' for the short volume syntax."""
    out = {}
    for v in service.get("volumes", []):
        parts = v.split(":")
        out[parts[1]] = ":".join([parts[0]] + parts[2:])
    return out


def test_model_volume_is_shared_and_read_only_for_the_service(compose):
    builder = _mounts(compose["services"]["builder"])
    service = _mounts(compose["services"]["service"])
    assert builder["/models"].split(":")[0] == service["/models"].split(":")[0]
    volume = service["/models"].split(":")[0]
    assert volume in (compose.get("volumes") or {}), f"named volume {volume} is not declared"
    assert service["/models"].endswith(":ro")
    assert not builder["/models"].endswith(":ro")
    cmd = " ".join(compose["services"]["service"]["command"])
    assert "--model-repo /models" in cmd


def test_ports_and_prometheus_scrape_the_service(compose):
    assert any(str(p).endswith(":8000") for p in compose["services"]["service"]["ports"])
    prom = compose["services"]["prometheus"]
    cfg_mount = [v for v in prom["volumes"] if v.split(":")[1] == "/etc/prometheus/prometheus.yml"]
    assert cfg_mount
    cfg = yaml.safe_load((DOCKER / cfg_mount[0].split(":")[0]).read_text())
    jobs = cfg["scrape_configs"]
    targets = [t for j in jobs if j.get("metrics_path", "/metrics") == "/metrics"
               for sc in j["static_configs"] for t in sc["targets"]]
    assert "service:8000" in targets


def test_dockerignore_keeps_local_state_out():
    patterns = dockerignore_patterns(ROOT / ".dockerignore")
    for path in (".git", ".venv", "model_repo", "service/__pycache__", "weights.pth"):
        assert is_ignored(path, patterns), f".dockerignore lets {path} into the build context"
    for path in ("service", "sinder", "pyproject.toml", "docker/healthcheck.py"):
        assert not is_ignored(path, patterns)


def test_compose_settings_are_real_service_settings(compose):
    """A misspelt SINDER_ variable would be ignored silently (extra="ignore"): check every one."""
    from service.config import Settings

    env = compose["services"]["service"]["environment"]
    names = env if isinstance(env, list) else list(env)
    names = [n.split("=", 1)[0] for n in names]
    fields = set(Settings.model_fields)
    unknown = [n for n in names if n.startswith("SINDER_") and n.removeprefix("SINDER_").lower() not in fields]
    assert not unknown, f"compose sets unknown service settings {unknown}"
    assert "SINDER_REQUIRE_GPU" in names  # onnxruntime-gpu falls back to CPU silently otherwise
