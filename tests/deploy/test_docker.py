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


VARIANTS = {"service": "gpu", "service-cpu": "cpu"}  # compose service -> the profile that starts it


def test_compose_has_every_service_and_profiles_choose_the_variant(compose):
    services = compose["services"]
    assert {"builder", "service", "service-cpu", "proxy", "prometheus"} <= set(services)
    for name, svc in services.items():
        expected = [VARIANTS[name]] if name in VARIANTS else ["gpu", "cpu"]
        assert sorted(svc.get("profiles", [])) == sorted(expected), f"{name}: profiles {svc.get('profiles')}"


def test_compose_builds_from_existing_dockerfiles(compose):
    for name, dockerfile in (("builder", "Dockerfile.tool"), ("service", "Dockerfile.gpu"), ("service-cpu", "Dockerfile.cpu")):
        build = compose["services"][name]["build"]
        context = (DOCKER / build["context"]).resolve()
        assert (context / build["dockerfile"]).is_file(), f"{name}: {build['dockerfile']} not found in {context}"
        assert Path(build["dockerfile"]).name == dockerfile


def test_gpu_variant_reserves_an_nvidia_gpu_and_the_cpu_variant_none(compose):
    gpu, cpu = compose["services"]["service"], compose["services"]["service-cpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    assert "reservations" not in cpu["deploy"]["resources"]
    assert gpu["environment"]["SINDER_REQUIRE_GPU"] == "true" and gpu["environment"]["SINDER_PROVIDERS"].startswith("cuda")
    assert cpu["environment"]["SINDER_REQUIRE_GPU"] == "false" and cpu["environment"]["SINDER_PROVIDERS"] == "cpu"


def test_every_container_has_cpu_and_memory_limits(compose):
    for name, svc in compose["services"].items():
        limits = svc.get("deploy", {}).get("resources", {}).get("limits", {})
        assert {"cpus", "memory"} <= set(limits), f"{name} has no resource limits"
        assert re.fullmatch(r"\d+[mg]", limits["memory"]) and float(limits["cpus"]) > 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_variants_wait_for_the_builder_and_check_readiness(compose, variant):
    svc = compose["services"][variant]
    assert svc["depends_on"]["builder"]["condition"] == "service_completed_successfully"
    assert compose["services"]["builder"].get("restart", "no") == "no"
    hc = svc["healthcheck"]
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


@pytest.mark.parametrize("variant", VARIANTS)
def test_model_volume_is_shared_and_read_only_for_the_service(compose, variant):
    builder = _mounts(compose["services"]["builder"])
    service = _mounts(compose["services"][variant])
    assert builder["/models"].split(":")[0] == service["/models"].split(":")[0]
    volume = service["/models"].split(":")[0]
    assert volume in (compose.get("volumes") or {}), f"named volume {volume} is not declared"
    assert service["/models"].endswith(":ro")
    assert not builder["/models"].endswith(":ro")
    cmd = " ".join(compose["services"][variant]["command"])
    assert "--model-repo /models" in cmd


def _service_port(svc: dict) -> int:
    cmd = svc["command"]
    return int(cmd[cmd.index("--port") + 1])


@pytest.mark.parametrize("variant", VARIANTS)
def test_replicas_publish_no_port_so_they_scale(compose, variant):
    """`--scale service=N` fails on a fixed host port: only the proxy publishes one."""
    svc = compose["services"][variant]
    assert "ports" not in svc
    assert [str(p) for p in svc["expose"]] == [str(_service_port(svc))]
    assert "sinder" in svc["networks"]["default"]["aliases"]
    assert "container_name" not in svc  # a fixed name would clash too


def _nginx(text: str, directive: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(rf"^\s*{directive}\s+([^;]+);", text, re.M)]


def test_the_proxy_spreads_requests_over_every_replica(compose):
    from service.config import Settings

    proxy = compose["services"]["proxy"]
    conf_mount = [v for v in proxy["volumes"] if v.split(":")[1] == "/etc/nginx/conf.d/default.conf"]
    assert conf_mount and conf_mount[0].endswith(":ro")
    conf = (DOCKER / conf_mount[0].split(":")[0]).read_text()
    (published,) = proxy["ports"]
    assert re.fullmatch(r"\$\{PROXY_PORT:-8000\}:(\d+)", published)
    assert _nginx(conf, "listen") == [published.rsplit(":", 1)[1]]
    # a variable upstream is resolved again at run time (new replicas); a literal one only at start
    (upstream,) = _nginx(conf, "set \\$sinder")
    host, port = re.fullmatch(r"http://([\w.-]+):(\d+)", upstream).groups()
    for variant in VARIANTS:  # either profile's replicas answer at the proxy's upstream name and port
        svc = compose["services"][variant]
        assert host in svc["networks"]["default"]["aliases"], (variant, host)
        assert int(port) == _service_port(svc), (variant, port)
    assert _nginx(conf, "proxy_pass") == ["$sinder"]
    assert _nginx(conf, "resolver")[0].startswith("127.0.0.11 valid=")  # Docker's embedded DNS
    size = _nginx(conf, "client_max_body_size")[0]
    assert int(size.rstrip("m")) * 2**20 >= Settings.model_fields["max_body_bytes"].default
    timeout = _nginx(conf, "proxy_read_timeout")[0]
    assert float(timeout.rstrip("s")) > Settings.model_fields["request_timeout_s"].default
    assert "depends_on" not in proxy  # it starts before any replica, whichever variant runs


def test_prometheus_scrapes_every_replica(compose):
    prom = compose["services"]["prometheus"]
    cfg_mount = [v for v in prom["volumes"] if v.split(":")[1] == "/etc/prometheus/prometheus.yml"]
    assert cfg_mount
    cfg = yaml.safe_load((DOCKER / cfg_mount[0].split(":")[0]).read_text())
    (job,) = cfg["scrape_configs"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["sinder"] and sd["type"] == "A"
    assert sd["port"] == _service_port(compose["services"]["service"]) == _service_port(compose["services"]["service-cpu"])


def test_dockerignore_keeps_local_state_out():
    patterns = dockerignore_patterns(ROOT / ".dockerignore")
    for path in (".git", ".venv", "model_repo", "service/__pycache__", "weights.pth"):
        assert is_ignored(path, patterns), f".dockerignore lets {path} into the build context"
    for path in ("service", "sinder", "pyproject.toml", "docker/healthcheck.py"):
        assert not is_ignored(path, patterns)


@pytest.mark.parametrize("variant", VARIANTS)
def test_compose_settings_are_real_service_settings(compose, variant):
    """A misspelt SINDER_ variable would be ignored silently: check every one."""
    from service.config import Settings

    env = compose["services"][variant]["environment"]
    names = env if isinstance(env, list) else list(env)
    names = [n.split("=", 1)[0] for n in names]
    fields = set(Settings.model_fields)
    unknown = [n for n in names if n.startswith("SINDER_") and n.removeprefix("SINDER_").lower() not in fields]
    assert not unknown, f"compose sets unknown service settings {unknown}"
    assert "SINDER_REQUIRE_GPU" in names  # onnxruntime-gpu falls back to CPU silently otherwise
