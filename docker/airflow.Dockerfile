# Airflow image for visionops: the official Airflow image plus the project's pinned requirements
# and the visionops package, so that DAG tasks can import `visionops` on every worker.
# Build context: the repository root (docker compose builds it for every airflow-* service).
#   docker build -f docker/airflow.Dockerfile -t visionops-airflow .
#
# Keep the build context small with a .dockerignore at the repository root (at least .venv/,
# data/, mlruns/, .git/): the context is sent whole to the builder.
FROM apache/airflow:3.3.2-python3.11

# Files the image creates outside the airflow user's home need root; the official image runs as
# `airflow` (uid 50000, gid 0) and expects group 0 to have the owner's rights, so that a
# different AIRFLOW_UID with gid 0 still can write.
USER root
RUN mkdir -p /opt/visionops/data \
    && chown -R airflow:0 /opt/visionops \
    && chmod -R g+rwX /opt/visionops
USER airflow

# Dependencies first, in their own layer, so that code changes do not reinstall torch.
# apache-airflow is named with the image's own version (as the official image's docs advise)
# so that pip fails instead of replacing Airflow if requirements.txt ever disagrees.
# torch from PyPI on Linux ships with its CUDA libraries, which the gpu-queue worker uses.
COPY --chown=airflow:0 requirements.txt /opt/visionops/requirements.txt
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /opt/visionops/requirements.txt

# The project itself, without dependencies (they are pinned above). README.m[d] is a pattern so
# that the COPY does not fail where the readme is absent; pyproject.toml names it as the readme.
COPY --chown=airflow:0 pyproject.toml README.m[d] /opt/visionops/
COPY --chown=airflow:0 src/ /opt/visionops/src/
COPY --chown=airflow:0 conf/ /opt/visionops/conf/
RUN pip install --no-cache-dir --no-deps /opt/visionops

ENV VISIONOPS_DATA_ROOT=/opt/visionops/data
