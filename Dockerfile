# jira-auth-proxy: a small runtime image (distroless, non-root), built in two stages.
#   docker build -t jira-auth-proxy .
#   docker run -e JAP_UPSTREAM_SECRET=... -v $PWD/config.toml:/etc/jira-auth-proxy/config.toml \
#     -p 8443:8443 jira-auth-proxy
FROM rust:1.95-bookworm AS build
WORKDIR /src
# The manifest names the benches, so they come along; nothing else of the checkout but
# the build settings is needed.
COPY Cargo.toml Cargo.lock ./
# Build settings: aws-lc without its CPU-jitter entropy source (a faster start).
COPY .cargo ./.cargo
COPY src ./src
COPY benches ./benches
# The build fails if aws-lc still has its CPU-jitter entropy source (SECURITY.md, "Randomness").
RUN cargo build --release --locked --bin jira-auth-proxy \
 && grep -qa RAND_bytes target/release/jira-auth-proxy \
 && ! grep -qa jent_read_entropy target/release/jira-auth-proxy \
 && strip target/release/jira-auth-proxy

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/jira-auth-proxy /usr/local/bin/jira-auth-proxy
# The sidecar config (deploy/config.toml); mount your own over it (config/example.toml
# documents every option).
COPY deploy/config.toml /etc/jira-auth-proxy/config.toml
USER nonroot:nonroot
# The proxy port and the admin port (/healthz, /readyz, /metrics) of deploy/config.toml.
EXPOSE 8443 9090
# No shell or curl in the image: the binary probes its own admin port.
HEALTHCHECK --interval=15s --timeout=5s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/jira-auth-proxy", "probe", "http://127.0.0.1:9090/readyz"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/jira-auth-proxy"]
CMD ["serve", "--config", "/etc/jira-auth-proxy/config.toml"]
