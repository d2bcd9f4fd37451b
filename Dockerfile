# syntax=docker/dockerfile:1

# The tb command: a static binary on a distroless base, run as a non-root user.
#
#   docker build -t tb .
#   docker run --rm tb --help

# Build stage.
FROM golang:1.26 AS build
WORKDIR /src
# Modules first: this layer is reused until a go.mod, go.sum or the workspace
# change. The library (the root module) and the command (./cmd) build together
# through go.work, as in a clone of the repository.
COPY go.mod go.sum go.work go.work.sum ./
COPY cmd/go.mod cmd/go.sum ./cmd/
RUN go mod download
COPY . .
RUN --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -o /tb ./cmd/tb

# Final stage: CA certificates and the binary (time zones are compiled in).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /tb /tb
USER nonroot:nonroot
WORKDIR /home/nonroot
ENTRYPOINT ["/tb"]
