# swarmq image: the swarmq and word-count binaries, the shared libraries they
# link, the word-count texts and config/docker.toml, on an empty base. No
# shell, no package manager, no build tools; runs as uid 10001.
#
# The root filesystem is assembled from locally built artifacts first (no base
# image is pulled):
#
#   tests/docker/build-image.sh          # builds target/docker/rootfs, then this image
#
# Every role runs from this image: `swarmq serve` (broker), `word-count worker`,
# `word-count count` (producer).
FROM scratch
COPY --chown=10001:10001 target/docker/rootfs/ /
USER 10001:10001
ENV SWARMQ_LOG=info
# 8883 serves MQTT over TLS once a certificate is configured (docs/OPERATIONS.md).
EXPOSE 1883 8883 8080
VOLUME ["/data"]
ENTRYPOINT []
CMD ["swarmq", "serve", "--config", "/etc/swarmq/docker.toml"]
