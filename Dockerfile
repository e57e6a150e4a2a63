# The opsuite image: one static binary, no shell, non-root. Build the binary
# on the host first (`make image` does both), so no base image or toolchain
# has to be pulled: the context holds bin/opsuite-linux-amd64 only.
FROM scratch
COPY bin/opsuite-linux-amd64 /opsuite
COPY --chown=65532:65532 deployments/docker/rootfs/ /
USER 65532:65532
WORKDIR /data
VOLUME ["/data"]
EXPOSE 7070 8080 4222
ENTRYPOINT ["/opsuite"]
CMD ["up", "--data-dir=/data", "--grpc-addr=0.0.0.0:7070", "--http-addr=0.0.0.0:8080", "--nats-listen=0.0.0.0:4222"]
