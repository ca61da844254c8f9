# The MRdIB pipeline in a container. CPU by default; for CUDA, a CUDA base that has (or can apt-get)
# python3.11 and PyTorch's default (CUDA) wheel:
#   docker build -t mrdib .
#   docker build -t mrdib:cuda --build-arg BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04 --build-arg TORCH_INDEX= .
#   docker run --rm mrdib                         # `dvc repro` on the synthetic default, then Table 1
#   docker run --rm -p 8080:8080 -e AIRFLOW__API__HOST=0.0.0.0 mrdib airflow standalone   # the DAG
# Installs exactly as the README does (./setup.sh: torch==2.13.0 first, then requirements.txt),
# before the code is copied, so a code change does not reinstall the stack.
ARG BASE=python:3.11-slim
FROM ${BASE}

# PyTorch's CPU wheels; empty: PyPI's torch (the CUDA build)
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1

# git: DVC works in a git repository; python3.11 only where the base lacks it (CUDA images)
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git ca-certificates \
    && if ! command -v python3.11 >/dev/null; then \
         apt-get install -y --no-install-recommends python3.11 python3.11-venv; fi \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 --user-group mrdib

WORKDIR /app
RUN chown mrdib:mrdib /app
USER 1000:1000
COPY --chown=1000:1000 setup.sh requirements.txt ./
RUN PIP_EXTRA_INDEX_URL="${TORCH_INDEX}" ./setup.sh

COPY --chown=1000:1000 . .
# The build context leaves .git out: the image's code is one commit of a fresh repository.
RUN git init -q \
    && git add -A \
    && git -c user.name=mrdib -c user.email=mrdib@localhost commit -qm "MRdIB image"

ENV PATH=/app/.venv/bin:$PATH \
    AIRFLOW_HOME=/home/mrdib/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/app/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    MRDIB_WORKSPACE=/app
CMD ["sh", "-c", "dvc repro && cat reports/table1.md"]
