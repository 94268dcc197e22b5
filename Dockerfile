# tessera on NVIDIA GPUs: `docker build -t tessera:cuda .`
#
# The build stage compiles the binary with the CUDA backend (cudarc loads the
# driver and NVRTC at run time, so no CUDA toolkit is needed to build). The
# runtime stage is NVIDIA's CUDA runtime image, which carries libnvrtc (the
# kernels are compiled by it at start); the driver comes from the host through
# the NVIDIA container toolkit. The model is never baked in: mount it and set
# TESSERA_MODEL, or set TESSERA_MODEL_ID to download it into HF_HOME (a volume).
# Every option is a TESSERA_* variable (`tessera serve --help`).

FROM rust:1.90-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tessera-cli --features cuda \
    && install -D -m 0755 target/release/tessera /out/tessera

FROM nvidia/cuda:12.8.1-runtime-ubuntu24.04
# A fixed, unprivileged user; /models holds mounted or downloaded models.
RUN useradd --system --uid 10001 --create-home --home-dir /home/tessera tessera \
    && mkdir -p /models/hf \
    && chown -R 10001:10001 /models
COPY --from=build /out/tessera /usr/local/bin/tessera
USER 10001
ENV TESSERA_HOST=0.0.0.0 \
    TESSERA_PORT=8080 \
    TESSERA_BACKEND=cuda \
    TESSERA_LOG_FORMAT=json \
    HF_HOME=/models/hf
EXPOSE 8080
VOLUME ["/models"]
# /health is 200 once the model is loaded and warmed up (a long download or
# load counts as starting, not unhealthy: see --start-period).
HEALTHCHECK --interval=15s --timeout=5s --start-period=600s --retries=3 \
    CMD ["tessera", "health"]
ENTRYPOINT ["tessera", "serve"]
