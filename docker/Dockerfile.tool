# The offline tool (PyTorch on CPU): analysis, repair, export. By default it fills the model
# repository volume with the demo models, the job compose's `builder` runs once.
# Build from the repository root: docker build -f docker/Dockerfile.tool -t sinder-tool .
FROM python:3.12-slim

ARG TORCH_VERSION=2.13.0
# The CPU build by default; on a GPU host: --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128
# (docker/README.md), then run the container with --gpus all.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# The CPU build of torch first, from PyTorch's CPU index: the default index serves a multi-GB CUDA build.
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
COPY pyproject.toml README.md constraints.txt ./
COPY contract ./contract
COPY sinder ./sinder
COPY service ./service
RUN pip install -c constraints.txt ".[tool]"

RUN groupadd --gid 10001 app && useradd --uid 10001 --gid app --create-home --shell /usr/sbin/nologin app \
    && mkdir -p /models && chown app:app /models
USER app

ENTRYPOINT ["sinder"]
CMD ["build", "--demo", "--model-repo", "/models"]
