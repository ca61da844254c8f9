# syntax=docker/dockerfile:1
# The MRdIB pipeline in a container: README "## Docker" has the build and run lines (with the volumes
# that keep what the pipeline writes). BuildKit (Docker 23+: the default builder) for the cache mount.
#
# CPU by default: PyTorch's CPU wheel. GPU (--build-arg TORCH_INDEX=): the same python base and
# PyPI's torch==2.13.0, the CUDA build, which brings its own CUDA runtime, cuDNN, cuBLAS... as pip
# wheels (nvidia-*). That is the image's one CUDA: a CUDA base image (nvidia/cuda:*) under it would
# add a second, unused copy of the same libraries (gigabytes). The host's driver (libcuda) is not in
# the image: the NVIDIA Container Toolkit mounts it (`docker run --gpus all`).
#
# Installs exactly as the README does (./setup.sh: torch==2.13.0 first, then requirements.txt),
# before the code is copied, so a code change does not reinstall the stack; pip's downloads stay in
# a BuildKit cache mount (not in the image), so a changed requirements.txt does not fetch them again.
ARG BASE=python:3.11-slim
FROM ${BASE}

# PyTorch's CPU wheels; empty: PyPI's torch (the CUDA build)
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# NVIDIA_DRIVER_CAPABILITIES: the driver's compute libraries under --gpus (the toolkit's default
# without it can be `utility` alone); no effect without a GPU.
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# git: DVC works in a git repository; tini: PID 1 (ENTRYPOINT below)
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 --user-group mrdib

WORKDIR /app
RUN chown mrdib:mrdib /app
USER 1000:1000
COPY --chown=1000:1000 setup.sh requirements.txt ./
RUN --mount=type=cache,target=/home/mrdib/.cache/pip,uid=1000,gid=1000 \
    PIP_EXTRA_INDEX_URL="${TORCH_INDEX}" ./setup.sh

ENV PATH=/app/.venv/bin:$PATH \
    AIRFLOW_HOME=/home/mrdib/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/app/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    MRDIB_WORKSPACE=/app
COPY --chown=1000:1000 . .

# The commit the image is built from (--build-arg GIT_COMMIT=$(git rev-parse HEAD)). The build
# context leaves .git out: the image's code is one commit of a fresh repository (DVC needs one; its
# status shows what changed in the container), whose hash names nothing upstream. MLflow's
# git_commit tag reads MRDIB_GIT_COMMIT instead (pipeline/tracking.py); "unknown" when not given
# or empty (a build outside a git checkout).
# Declared after the install: a new commit does not reinstall the stack.
ARG GIT_COMMIT=unknown
LABEL org.opencontainers.image.revision="${GIT_COMMIT:-unknown}"
ENV MRDIB_GIT_COMMIT="${GIT_COMMIT:-unknown}"
# - the mount points of README's volumes (every output folder of dvc.yaml, MLflow's mlruns/,
#   checkpoints/, DVC's cache), made by mrdib: a new named volume takes their owner, not root;
# - the cluster policy (routes a DAG run's graphs/tune/train tasks to train_queue/train_pool), where
#   Airflow reads it: $AIRFLOW_HOME/config/airflow_local_settings.py.
RUN mkdir -p data runs references ablations checkpoints tuned reports mlruns .dvc/cache \
        "${AIRFLOW_HOME}/config" \
    && cp dags/policy/airflow_local_settings.py "${AIRFLOW_HOME}/config/" \
    && git init -q \
    && git add -A \
    && git -c user.name=mrdib -c user.email=mrdib@localhost commit -qm "MRdIB image of ${GIT_COMMIT}"

# tini as PID 1 forwards `docker stop`'s SIGTERM to the whole process group (-g): the shell, dvc and
# the stage it runs stop at once (a stopped train stage resumes from checkpoints/ on the next run)
# and tini reaps them. A shell as PID 1 ignored SIGTERM: docker killed everything 10 s later.
# A command given to `docker run` replaces CMD and runs under tini too.
ENTRYPOINT ["/usr/bin/tini", "-g", "--"]
CMD ["sh", "-c", "dvc repro && cat reports/table1.md"]
