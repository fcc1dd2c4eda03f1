# The clot-hpo worker image: `docker compose up --scale worker=N` runs N of these against one
# study (docs/scale-out.md). CPU TensorFlow by default; the compose `gpu` profile builds with
# --build-arg TENSORFLOW_PACKAGE='tensorflow[and-cuda]==2.21.0'.
FROM python:3.11-slim

ARG TENSORFLOW_PACKAGE=tensorflow-cpu==2.21.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true \
    TF_CPP_MIN_LOG_LEVEL=2

WORKDIR /opt/clot-hpo

# Dependencies first, so editing the code does not reinstall TensorFlow. requirements.txt
# holds the runtime pins only (test and lint tools are in requirements-dev.txt).
COPY requirements.txt ./
RUN sed -i "s/^tensorflow-cpu==.*/${TENSORFLOW_PACKAGE}/" requirements.txt \
    && pip install -r requirements.txt

COPY pyproject.toml README.md ./
COPY clot_hpo ./clot_hpo
RUN pip install --no-deps . && rm -rf build clot_hpo.egg-info

# Non-root. /work is the writable working directory (configs are read relative to it);
# the dataset is mounted read-only at /data by docker-compose.yml.
RUN useradd --create-home --uid 10001 clot \
    && mkdir -p /work /data \
    && chown clot:clot /work
COPY --chown=clot:clot experiments /work/experiments
# search_spaces/ is a link to the package's bundled files: copy the files, not the link.
COPY --chown=clot:clot clot_hpo/search_space/bundled /work/search_spaces
USER clot
WORKDIR /work

ENTRYPOINT ["clot-hpo"]
CMD ["--help"]
