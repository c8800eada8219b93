# syntax=docker/dockerfile:1
# The spectacles binary in a minimal image: a static build (no cgo), run as
# a non-root user on distroless/static, which carries CA certificates and
# time zones and nothing else (no shell).
#
#   docker build -t spectacles .
#   docker run --rm -e DISCORD_TOKEN -e REDIS_URL=redis://redis:6379 spectacles
#
# The default command is the gateway; any other command works too
# (docker run --rm -it -e REDIS_URL=... spectacles shards).

FROM golang:1.26-alpine AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/spectacles .

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/spectacles /usr/local/bin/spectacles
# 65532, distroless's nonroot user.
USER nonroot:nonroot
# Prometheus metrics (/metrics), /healthz and /readyz.
ENV PROMETHEUS_ADDRESS=:8080
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=6s --start-period=60s CMD ["/usr/local/bin/spectacles", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/spectacles"]
CMD ["gateway"]
