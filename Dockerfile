# The telltale binary on Debian slim. librdkafka is compiled from source by rdkafka-sys (gcc,
# make and perl come with the rust image), so the runtime image needs no Kafka packages.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p telltale && cp target/release/telltale /telltale

FROM debian:bookworm-slim
COPY --from=build /telltale /usr/local/bin/telltale
COPY configs /etc/telltale
USER nobody
ENTRYPOINT ["telltale"]
CMD ["--help"]
