# syntax=docker/dockerfile:1
#
# tcpdispatch images. Stages:
#   build    compiles static binaries (CGO_ENABLED=0) with the pinned Go
#   ops      busybox + etcdctl + etcdutl: backups, registration one-shots
#            (docker-compose's "register" service), debugging
#   runtime  (default) distroless static, non-root: dispatcher, tcpserver,
#            tcpclient, healthcheck; ENTRYPOINT is the dispatcher
#
#   docker build -t tcpdispatch:dev .
#   docker build -t tcpdispatch-ops:dev --target ops .

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false
RUN go build -trimpath -ldflags="-s -w" -o /out/dispatcher ./cmd/dispatcher \
 && go build -trimpath -ldflags="-s -w" -o /out/tcpserver ./cmd/tcpserver \
 && go build -trimpath -ldflags="-s -w" -o /out/tcpclient ./cmd/tcpclient \
 && go build -trimpath -ldflags="-s -w" -o /out/healthcheck ./cmd/healthcheck \
 && go build -trimpath -ldflags="-s -w" -o /out/etcdctl go.etcd.io/etcd/etcdctl/v3 \
 && go build -trimpath -ldflags="-s -w" -o /out/etcdutl go.etcd.io/etcd/etcdutl/v3
# The data directory must exist and belong to the runtime user: the
# distroless stage has no shell to create it.
RUN mkdir -p /out/data && chown 65532:65532 /out/data && chmod 0700 /out/data

FROM busybox:1.37 AS ops
COPY --from=build /out/etcdctl /out/etcdutl /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/etcdctl"]

FROM gcr.io/distroless/static-debian12:nonroot AS runtime
COPY --from=build /out/dispatcher /out/tcpserver /out/tcpclient /out/healthcheck /
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
WORKDIR /data
# 8080 HTTP API, 2379 embedded etcd clients, 2380 embedded etcd peers.
EXPOSE 8080 2379 2380
# No curl in a distroless image: cmd/healthcheck GETs the URL and exits 0 on 2xx.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/healthcheck", "--timeout", "2s", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["/dispatcher"]
CMD ["--listen-http", "0.0.0.0:8080", "--data-dir", "/data/member"]
