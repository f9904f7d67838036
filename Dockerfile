# syntax=docker/dockerfile:1
#
# ringhook in a container: `docker build -t ringhook .`, then
#   docker run -d -p 8080:8080 -v ringhook-data:/data -e RINGHOOK_VERIFICATION_TOKEN=... ringhook
# See docs/deploy.md.

# ---- build: compile ringhook into one self-contained executable ---------------------------------
# Pinned to the Deno the project is developed and tested with (pin a digest for byte-for-byte
# reproducible builds).
FROM denoland/deno:2.9.6 AS build
WORKDIR /app

# Dependencies first, so this layer stays cached until deno.json or deno.lock changes.
COPY deno.json deno.lock ./
RUN deno install --frozen

# Then the sources. The compile task embeds the journal worker (--include src/journal/worker.ts)
# and exactly the permission flags of `deno task start`.
COPY main.ts ./
COPY src/ ./src/
RUN deno task compile \
  && install -D -m 0755 dist/ringhook /out/bin/ringhook \
  && install -d -m 0700 -o 65532 -g 65532 /out/data

# ---- run: glibc and nothing else (no shell, no package manager, no curl) -------------------------
FROM gcr.io/distroless/cc-debian12:nonroot

# The binary stays owned by root: the service user cannot replace it.
COPY --from=build /out/bin/ringhook /usr/local/bin/ringhook
# /data is created here owned by the non-root user (65532, "nonroot"), so a named volume mounted
# there starts with that owner and ringhook can create its database in it.
COPY --from=build --chown=65532:65532 /out/data /data

ENV RINGHOOK_DATA_DIR=/data \
    RINGHOOK_PORT=8080 \
    RINGHOOK_HOSTNAME=0.0.0.0 \
    NO_PROXY=127.0.0.1,localhost,::1

# Numeric, so runtimes that enforce "run as non-root" (Kubernetes runAsNonRoot) can check it.
USER 65532:65532
VOLUME /data
EXPOSE 8080

# The image has no curl: ringhook probes its own /readyz (exit 0 ready, 1 not).
HEALTHCHECK --interval=30s --timeout=10s --start-period=15s --retries=3 \
  CMD ["/usr/local/bin/ringhook", "healthcheck"]

# SIGTERM drains in-flight requests (at most 10 s) and closes the journal cleanly; give
# `docker stop` more than that: docker stop -t 30.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/ringhook"]
CMD ["serve"]
